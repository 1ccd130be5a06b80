"""Tests of the oracle-constrained latent search and FMR (Zhang et al., ICLR 2024)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from robustlab.attacks.oracle import OracleLatentProbe, encode_latent, fmr, oracle_latent_search
from robustlab.core.errors import ConfigError, DataError, ModelError
from robustlab.core.model import SklearnModel, TorchModel
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.models.generative import train_generator
from robustlab.models.training import train_classifier


def _mlp(seed: int, train) -> TorchModel:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    train_classifier(net, train, epochs=15, batch_size=64, lr=5e-3, optimizer="adamw", seed=seed, progress=False)
    return TorchModel(net.eval(), num_classes=10)


@pytest.fixture(scope="module")
def setup():
    from sklearn.neighbors import KNeighborsClassifier

    train = load_dataset("digits", split="train", n=400, seed=0)
    test = load_dataset("digits", split="test", n=48, seed=0)
    gen = train_generator(train, kind="pca-gaussian", latent_dim=20)
    knn = SklearnModel(KNeighborsClassifier(3).fit(train.x.flatten(1).numpy(), train.y.numpy()), modality="image")
    oracle_mlp = _mlp(1, train)
    f = _mlp(2, train)
    return {"gen": gen, "oracles": [knn, oracle_mlp], "oracle_mlp": oracle_mlp, "f": f, "x": test.x, "y": test.y,
            "train": train}


def test_encode_pca_is_the_whitened_projection(setup):
    gen, x, y = setup["gen"], setup["x"], setup["y"]
    z0 = encode_latent(gen, x, y)
    assert z0.shape == (len(x), 20)
    proj = (x.flatten(1) - gen.mean) @ gen.components.T @ gen.components + gen.mean
    assert torch.allclose(gen.decode(z0, y).flatten(1), proj.clamp(0, 1), atol=1e-4)


def test_encode_cvae_is_the_posterior_mean(setup):
    vae = train_generator(setup["train"], kind="cvae", latent_dim=4, epochs=1, hidden=[16], seed=0)
    x, y = setup["x"][:5], setup["y"][:5]
    assert torch.equal(encode_latent(vae, x, y), vae.encode(x, y)[0])
    res = oracle_latent_search(setup["f"], setup["oracles"], vae, x, y, steps=3)
    assert res.x_gen.shape == x.shape and res.z.shape == (5, 4)


def test_encode_needs_an_encoder():
    with pytest.raises(ConfigError, match="encode"):
        encode_latent(object(), torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long))


def test_search_mechanics_and_latent_bound(setup):
    gen, x, y = setup["gen"], setup["x"], setup["y"]
    res = oracle_latent_search(setup["f"], setup["oracles"], gen, x, y, lam=0.5, steps=30, radius=1.5)
    assert res.x_gen.shape == x.shape and float(res.x_gen.min()) >= 0 and float(res.x_gen.max()) <= 1
    assert res.z.shape == res.z0.shape == (len(x), 20)
    assert bool(((res.z - res.z0).norm(dim=1) <= 1.5 + 1e-4).all())
    assert res.oracle_pred.shape == (2, len(x)) and res.retained.dtype == torch.bool
    assert torch.equal(res.retained, (res.oracle_pred == y).all(0))
    assert torch.allclose(res.distance, (res.x_gen - x).flatten(1).norm(dim=1), atol=1e-5)
    assert float(res.distance.mean()) > 0.05  # it moved
    assert res.extras["differentiable_oracles"] == 1


def test_retained_satisfy_every_oracle(setup):
    x, y = setup["x"], setup["y"]
    res = oracle_latent_search(setup["f"], setup["oracles"], setup["gen"], x, y, lam=0.1, steps=30, radius=3.0)
    keep = res.retained
    assert 0 < int(keep.sum())
    for o in setup["oracles"]:
        assert torch.equal(o.predict(res.x_gen[keep]).cpu(), y[keep])
    # and the dropped ones really fail some oracle
    if bool((~keep).any()):
        wrong = torch.stack([o.predict(res.x_gen[~keep]).cpu() != y[~keep] for o in setup["oracles"]]).any(0)
        assert bool(wrong.all())


def test_search_increases_the_model_loss(setup):
    f, x, y = setup["f"], setup["x"], setup["y"]
    res = oracle_latent_search(f, setup["oracles"], setup["gen"], x, y, lam=0.0, steps=30, radius=3.0)
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(ce(f(res.x_gen), y)) > float(ce(f(x), y)) + 0.5


def test_determinism_and_seeded_start(setup):
    args = (setup["f"], setup["oracles"], setup["gen"], setup["x"], setup["y"])
    a = oracle_latent_search(*args, steps=10)
    b = oracle_latent_search(*args, steps=10)
    assert torch.equal(a.x_gen, b.x_gen) and torch.equal(a.retained, b.retained)
    c = oracle_latent_search(*args, steps=10, random_start=0.3, rng=torch_generator(1))
    d = oracle_latent_search(*args, steps=10, random_start=0.3, rng=torch_generator(1))
    e = oracle_latent_search(*args, steps=10, random_start=0.3, rng=torch_generator(2))
    assert torch.equal(c.x_gen, d.x_gen) and not torch.equal(c.x_gen, e.x_gen)


def test_lambda_infinity_limit(setup):
    f, o, gen, x, y = setup["f"], setup["oracles"], setup["gen"], setup["x"], setup["y"]
    inf = oracle_latent_search(f, o, gen, x, y, lam=math.inf)
    assert torch.equal(inf.z, inf.z0) and torch.allclose(inf.x_gen, x, atol=1e-6)
    zero_r = oracle_latent_search(f, o, gen, x, y, radius=0.0)
    assert torch.allclose(zero_r.x_gen, x, atol=1e-6)
    d = [float(oracle_latent_search(f, o, gen, x, y, lam=lam, steps=30, lr=0.02).distance.mean())
         for lam in (0.0, 1e6)]
    assert d[1] < 0.3 * d[0]
    r_inf = fmr(f, o, gen, x, y, lam=math.inf)
    agreed = torch.stack([m.predict(x).cpu() == y for m in o]).all(0)
    assert r_inf.retained_fraction == pytest.approx(float(agreed.float().mean()))
    assert r_inf.fmr == pytest.approx(float((f.predict(x[agreed]).cpu() == y[agreed]).float().mean()))


def test_no_residual_gives_decoder_images(setup):
    gen, x, y = setup["gen"], setup["x"], setup["y"]
    res = oracle_latent_search(setup["f"], setup["oracles"], gen, x, y, lam=math.inf, residual=False)
    assert torch.allclose(res.x_gen, gen.decode(res.z0, y))


def test_fmr_of_an_oracle_copy_is_one(setup):
    copy_model = TorchModel(copy.deepcopy(setup["oracle_mlp"].module), num_classes=10)
    r = fmr(copy_model, setup["oracles"], setup["gen"], setup["x"], setup["y"], lam=0.1, steps=20)
    assert r.n_retained > 0 and r.fmr == 1.0
    d = r.as_dict()
    assert set(d) == {"fmr", "retained_fraction", "n_retained", "clean_accuracy", "mean_distance"}
    assert 0 <= d["retained_fraction"] <= 1


def test_fmr_ce_penalty_and_bounds(setup):
    r = fmr(setup["f"], setup["oracles"], setup["gen"], setup["x"], setup["y"], penalty="ce", steps=10)
    assert 0.0 <= r.fmr <= 1.0 and r.n_retained == int(r.search.retained.sum())


def test_probe_evaluate(setup):
    probe = OracleLatentProbe(oracles=setup["oracles"], generator=setup["gen"], steps=10)
    f, x, y = setup["f"], setup["x"], setup["y"]
    out = probe.evaluate(f, x, y, 1.0, clean_pred=f.predict(x), generator=torch_generator(0))
    assert out.scores.shape == (len(x), 10) and out.attempted.shape == (len(x),)
    assert torch.equal(out.x_probed[~out.attempted], x[~out.attempted])
    assert "OracleLatentProbe(" in repr(probe) and probe.setting_name == "radius"


def test_errors(setup):
    f, o, gen, x, y = setup["f"], setup["oracles"], setup["gen"], setup["x"], setup["y"]
    with pytest.raises(ConfigError, match="at least one oracle"):
        oracle_latent_search(f, [], gen, x, y)
    with pytest.raises(ModelError, match="gradients"):
        oracle_latent_search(o[0], o, gen, x, y)
    with pytest.raises(DataError, match="shape"):
        oracle_latent_search(f, o, gen, x[:, :, :4], y)
    with pytest.raises(DataError, match="labels"):
        oracle_latent_search(f, o, gen, x, y[:3])
    with pytest.raises(ConfigError, match="penalty"):
        oracle_latent_search(f, o, gen, x, y, penalty="l2")
    with pytest.raises(ConfigError, match="lam"):
        oracle_latent_search(f, o, gen, x, y, lam=-1.0)
    with pytest.raises(ConfigError, match="rng"):
        oracle_latent_search(f, o, gen, x, y, random_start=0.1)
    with pytest.raises(ConfigError, match="ConditionalGenerator"):
        oracle_latent_search(f, o, object(), x, y)
