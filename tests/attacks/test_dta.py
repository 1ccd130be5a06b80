"""DTA: threat and box, determinism, the layer loss going down, layer exploration, ensembles, API."""

import pytest
import torch

from robustlab.attacks.dta import DTA, dta_perturb, explore_layers, final_cosine, token_cosine
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall
from robustlab.models.vit import TinyViT, ViTClassifier


def _vit(seed: int = 0, depth: int = 3) -> TinyViT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyViT(in_shape=(1, 8, 8), patch=2, dim=16, depth=depth, heads=2).eval()


def _images(n: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch_generator(seed))


def test_token_cosine_is_one_on_identical_features():
    h = torch.randn(3, 5, 7)
    assert torch.allclose(token_cosine(h, h), torch.ones(3))
    assert torch.allclose(token_cosine(h, -h), -torch.ones(3))


@pytest.mark.parametrize("eps", [0.03, 0.1])
def test_output_inside_threat_and_box_and_deterministic(eps):
    x = _images()
    x[:3] = 0.0  # at the box edge
    x[3:6] = 1.0
    attack = DTA(_vit(), eps=eps, steps=5, layer=1)
    a, _ = attack.craft(x, generator=torch_generator(7))
    b, _ = attack.craft(x, generator=torch_generator(7))
    c, _ = attack.craft(x, generator=torch_generator(8))
    assert bool(LpBall("inf", eps).contains(x, a, atol=1e-6).all())
    assert float((a - x).abs().max()) <= eps + 1e-6 and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float((a - x).abs().max()) > 0.5 * eps  # it really moved


def test_layer_cosine_decreases_over_steps():
    enc, x = _vit(), _images(16)
    for layer in (0, 2):
        _, trace = DTA(enc, eps=0.1, steps=10, layer=layer).craft(x, generator=torch_generator(0), history=True)
        assert len(trace) == 11
        assert trace[-1] < trace[0] - 1e-3
        assert trace[-1] < 1.0


def test_attack_lowers_the_attacked_layer_more_than_noise_does():
    enc, x = _vit(), _images(16)
    threat = LpBall("inf", 0.1)
    xa, _ = dta_perturb([enc], [2], x, threat=threat, steps=10, alpha=0.025, generator=torch_generator(0))
    noise = threat.sample(x, torch_generator(1))
    with torch.no_grad():
        clean = enc.hidden_states(x)[2]
        adv = token_cosine(enc.hidden_states(xa)[2], clean).mean()
        rnd = token_cosine(enc.hidden_states(noise)[2], clean).mean()
    assert adv < rnd
    assert torch.allclose(final_cosine(enc, xa, x), token_cosine(enc.hidden_states(xa)[-1], enc.hidden_states(x)[-1]))


def test_exploration_scores_every_layer_and_picks_the_argmin():
    enc, probe = _vit(depth=4), _images(10)
    ex = explore_layers(enc, probe, threat=LpBall("inf", 0.1), steps=4, alpha=0.025, generator=torch_generator(0))
    assert ex.scores.shape == (4,)
    assert ex.best == int(ex.scores.argmin())
    assert bool((ex.scores <= 1.0 + 1e-6).all())
    attack = DTA(enc, eps=0.1, steps=4, probe=probe)
    out = attack.explore(probe, generator=torch_generator(0))
    assert torch.equal(out[0].scores, ex.scores)  # same seed, same exploration
    assert attack.layers_ == [ex.best]
    assert attack.at(0.05).layers_ is None  # a new radius needs a new exploration
    assert attack.layers_ == [ex.best]


def test_call_explores_then_attacks_without_querying_the_model():
    enc, x = _vit(), _images(8)
    downstream = TorchModel(ViTClassifier(_vit(seed=3), 4, mode="full").eval(), num_classes=4)
    y = downstream.predict(x)
    attack = DTA(enc, eps=0.1, steps=3, probe_size=4)
    res = attack(downstream, x, y, generator=torch_generator(0))
    assert res.x_adv.shape == x.shape and torch.equal(res.queries, torch.zeros(8, dtype=torch.long))
    assert attack.layers_ is not None and res.extras["layers"] == attack.layers_
    out = attack.evaluate(downstream, x, y, 0.1, clean_pred=y, generator=torch_generator(1))  # checks the threat
    assert bool(out.attempted.all()) and float(out.distance.max()) <= 0.1 + 1e-6


def test_ensemble_sums_losses_and_takes_one_layer_per_encoder():
    encs, x = [_vit(0), _vit(1)], _images(8)
    attack = DTA(encs, eps=0.1, steps=6, layer=[0, -1])
    assert attack.layers_ == [0, 2]
    xa, trace = attack.craft(x, generator=torch_generator(0), history=True)
    assert trace[-1] < trace[0]
    assert bool(LpBall("inf", 0.1).contains(x, xa).all())
    auto = DTA(encs, eps=0.1, steps=2)
    assert len(auto.explore(x[:4], generator=torch_generator(0))) == 2 and len(auto.layers_) == 2


def test_bad_arguments_raise_with_a_fix():
    enc = _vit()
    with pytest.raises(ConfigError, match="layer"):
        DTA(enc, layer=3)
    with pytest.raises(ConfigError, match="one layer per encoder"):
        DTA([enc, enc], layer=[0])
    with pytest.raises(ConfigError):
        DTA(enc, steps=0)
    with pytest.raises(ConfigError, match="no layer"):
        DTA(enc).craft(_images(2), generator=torch_generator(0))
    with pytest.raises(UnsupportedModelError, match="hidden_states"):
        DTA(torch.nn.Linear(3, 3))


def test_registered_as_an_attack():
    from robustlab.core import registry

    attack = registry.create("dta", encoder=_vit(), eps=0.05, steps=2, layer=0)
    assert isinstance(attack, DTA) and attack.eps == 0.05 and attack.alpha == pytest.approx(0.0125)
    assert "DTA(" in repr(attack)
