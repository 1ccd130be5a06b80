"""Tests of ``robustlab.core.model``: adapters, normalization, device checks and ``checked_scores``."""

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from torch import nn

from robustlab.core.errors import ConfigError, ModelError, UnsupportedModelError
from robustlab.core.model import CallableModel, Model, SklearnModel, TorchModel, as_model, checked_scores


class Identity(nn.Module):
    def forward(self, x):
        return x


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ TorchModel


@pytest.mark.parametrize("mean,std,channels", [
    ((0.5, 0.4, 0.3), (0.2, 0.25, 0.5), 3),
    ((0.1307,), (0.3081,), 1),
    (0.5, 0.25, 3),
    (0.5, 0.25, 1),
])
def test_torch_model_normalizes_like_manual(mean, std, channels):
    x = _rand(4, channels, 5, 6)
    model = TorchModel(Identity(), mean=mean, std=std)
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1) if not np.isscalar(mean) else mean
    s = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1) if not np.isscalar(std) else std
    torch.testing.assert_close(model(x), (x - m) / s)


def test_torch_model_normalizes_tabular_features_and_mean_only():
    x = _rand(5, 3)
    model = TorchModel(Identity(), mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 4.0], modality="tabular")
    torch.testing.assert_close(model(x), (x - torch.tensor([0.1, 0.2, 0.3])) / torch.tensor([1.0, 2.0, 4.0]))
    torch.testing.assert_close(TorchModel(Identity(), mean=0.5)(x), x - 0.5)
    assert torch.equal(TorchModel(Identity())(x), x)


def test_torch_model_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="std must be > 0"):
        TorchModel(Identity(), mean=0.5, std=(0.2, 0.0, 0.1))
    with pytest.raises(ConfigError, match="nn.Module"):
        TorchModel(lambda x: x)


def test_torch_model_gradients_flow_to_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    model = TorchModel(net, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), num_classes=3)
    assert model.has_gradients
    x = _rand(2, 3, 2, 2).requires_grad_(True)
    model(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert float(x.grad.abs().sum()) > 0
    # d/dx of W((x - m)/s) is W / s
    expected = (net[1].weight[1] / 0.2).reshape(3, 2, 2)
    torch.testing.assert_close(x.grad[0], expected)


def test_torch_model_eval_mode_and_to_cpu():
    net = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    model = TorchModel(net, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))
    assert not net.training  # wrapped in eval mode: dropout off, deterministic
    x = _rand(4, 3)
    torch.testing.assert_close(model(x), model(x))
    assert model.to("cpu") is model
    assert model.device == torch.device("cpu")
    assert next(net.parameters()).device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        TorchModel(Identity(), device="cuda")
    assert "--device cuda" in str(info.value) and "--device cpu" in str(info.value)
    with pytest.raises(ConfigError, match="CUDA"):
        TorchModel(Identity()).to("cuda")
    with pytest.raises(ConfigError, match="CUDA"):  # non-torch models check too
        CallableModel(lambda x: x).to("cuda")


# ---------------------------------------------------------------------------------- SklearnModel


def _tabular(classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(90, 4)).astype(np.float32)
    y = np.digitize(x[:, 0] + 0.3 * x[:, 1], np.linspace(0.2, 1.1, classes + 1)[1:-1])
    return x, y


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("make", [lambda: LogisticRegression(max_iter=500), lambda: LinearSVC()],
                         ids=["logreg", "linearsvc"])
def test_sklearn_model_argmax_equals_predict(make, classes):
    x, y = _tabular(classes)
    est = make().fit(x, y)
    assert len(np.unique(y)) == classes
    model = SklearnModel(est)
    assert model.num_classes == classes and not model.has_gradients
    scores = checked_scores(model, torch.from_numpy(x), batch_size=32)
    assert scores.shape == (len(x), classes) and scores.dtype == torch.float32
    np.testing.assert_array_equal(scores.argmax(1).numpy(), est.predict(x))
    np.testing.assert_array_equal(model.predict(torch.from_numpy(x)).numpy(), est.predict(x))
    np.testing.assert_array_equal(model.predict(x).numpy(), est.predict(x))  # a numpy array works too


def test_sklearn_predict_proba_scores_are_log_probabilities():
    x, y = _tabular(3)
    est = LogisticRegression(max_iter=500).fit(x, y)
    scores = SklearnModel(est)(torch.from_numpy(x))
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(len(x)))
    np.testing.assert_allclose(scores.exp().numpy(), est.predict_proba(x), rtol=1e-5, atol=1e-6)


def test_sklearn_model_flattens_images():
    x, y = _tabular(2)
    est = LogisticRegression().fit(x, y)
    images = torch.from_numpy(x).reshape(-1, 1, 2, 2)
    np.testing.assert_array_equal(SklearnModel(est, modality="image").predict(images).numpy(), est.predict(x))


def test_sklearn_text_pipeline_takes_strings():
    texts = ["good fun great", "bad awful sad", "great good movie", "awful bad plot", "fun great", "sad bad"]
    labels = [1, 0, 1, 0, 1, 0]
    for clf in (LogisticRegression(), LinearSVC()):
        pipe = make_pipeline(TfidfVectorizer(), clf).fit(texts, labels)
        model = as_model(pipe, modality="text")
        assert isinstance(model, SklearnModel) and model.modality == "text"
        test = ["good great", "bad sad", "a great fun movie"]
        np.testing.assert_array_equal(model.predict(test, batch_size=2).numpy(), pipe.predict(test))


def test_sklearn_model_rejects_non_classifier():
    with pytest.raises(ConfigError, match="predict_proba"):
        SklearnModel(object())


# --------------------------------------------------------------------------- Callable and as_model


def test_callable_model_converts_numpy_outputs():
    model = CallableModel(lambda x: np.asarray(x) @ np.array([[1.0, -1.0], [0.0, 2.0]]), num_classes=2,
                          modality="tabular")
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert model.predict(x).tolist() == [0, 1]
    assert not model.has_gradients
    assert CallableModel(lambda x: x, has_gradients=True).has_gradients
    with pytest.raises(ConfigError):
        CallableModel(3)


def test_as_model_dispatch_and_error():
    tm = TorchModel(Identity())
    assert as_model(tm) is tm
    assert isinstance(as_model(nn.Linear(2, 2)), TorchModel)
    assert isinstance(as_model(nn.Linear(2, 2), mean=0.5, num_classes=2), TorchModel)
    x, y = _tabular(2)
    assert isinstance(as_model(LogisticRegression().fit(x, y)), SklearnModel)
    assert isinstance(as_model(lambda x: x), CallableModel)
    with pytest.raises(ConfigError) as info:
        as_model(42)
    assert "int" in str(info.value) and "fix:" in str(info.value)


def test_repr_names_capabilities():
    r = repr(TorchModel(Identity(), num_classes=3))
    assert "TorchModel" in r and "num_classes=3" in r and "has_gradients=True" in r


# -------------------------------------------------------------------------------- checked_scores


def test_checked_scores_wraps_exceptions_with_their_name():
    def broken(x):
        raise KeyError("no such layer")

    with pytest.raises(ModelError) as info:
        checked_scores(CallableModel(broken), torch.zeros(3, 2))
    msg = str(info.value)
    assert "KeyError" in msg and "no such layer" in msg and "fix:" in msg
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_checked_scores_rejects_non_finite(bad):
    def fn(x):
        out = torch.zeros(len(x), 3)
        out[1, 2] = bad
        return out

    with pytest.raises(ModelError, match="NaN or infinite scores for 1 of 4"):
        checked_scores(CallableModel(fn), torch.zeros(4, 2))


@pytest.mark.parametrize("fn", [
    lambda x: torch.zeros(len(x)),  # 1-D
    lambda x: torch.zeros(len(x) + 1, 2),  # wrong batch
    lambda x: torch.zeros(len(x), 2, 2),  # 3-D
], ids=["1d", "batch", "3d"])
def test_checked_scores_rejects_wrong_shapes(fn):
    with pytest.raises(ModelError, match="shape"):
        checked_scores(CallableModel(fn), torch.zeros(5, 2))


def test_checked_scores_rejects_num_classes_mismatch():
    with pytest.raises(ModelError, match="declares 10 classes"):
        checked_scores(CallableModel(lambda x: torch.zeros(len(x), 3), num_classes=10), torch.zeros(2, 2))


def test_checked_scores_batching_equals_one_call_and_has_no_grad():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    model = TorchModel(net, num_classes=4)
    x = _rand(23, 3, 2, 2)
    full = model(x).detach()
    for bs in (1, 5, 23, 100):
        out = checked_scores(model, x, batch_size=bs)
        assert not out.requires_grad
        torch.testing.assert_close(out, full)
    calls = []
    counting = CallableModel(lambda xb: calls.append(len(xb)) or torch.zeros(len(xb), 2))
    checked_scores(counting, torch.zeros(23, 1), batch_size=5)
    assert calls == [5, 5, 5, 5, 3]


def test_checked_scores_empty_input_and_lists():
    out = checked_scores(CallableModel(lambda x: torch.zeros(len(x), 3), num_classes=3), torch.zeros(0, 2))
    assert out.shape == (0, 3)
    model = CallableModel(lambda xs: [[len(s), 0.0] for s in xs], modality="text")
    torch.testing.assert_close(checked_scores(model, ["ab", "", "abc"], batch_size=2),
                               torch.tensor([[2.0, 0.0], [0.0, 0.0], [3.0, 0.0]]))


# ---------------------------------------------------------------------------------------- require


def test_require_raises_unsupported_model_error():
    x, y = _tabular(2)
    sk = SklearnModel(LogisticRegression().fit(x, y))
    with pytest.raises(UnsupportedModelError, match="PGD needs input gradients") as info:
        sk.require(gradients=True, probe="PGD")
    assert isinstance(info.value, ModelError) and "fix:" in str(info.value)
    with pytest.raises(UnsupportedModelError, match="text"):
        sk.require(modality="text", probe="synonym")
    sk.require(gradients=False, modality="tabular")  # fine: no error
    TorchModel(Identity()).require(gradients=True, modality="image")


def test_model_is_abstract():
    with pytest.raises(TypeError):
        Model()
