"""prototype_margin: closed-form certificates of CBC / RBF / GLVQ, soundness against attacks, probe interface."""

import math

import pytest
import torch

from robustlab.attacks.cw import CWL2
from robustlab.attacks.fab import FAB
from robustlab.attacks.pgd import PGD
from robustlab.certify.prototypes import PrototypeMargin, certified_radius
from robustlab.core.errors import UnsupportedModelError
from robustlab.core.model import CallableModel, TorchModel
from robustlab.core.registry import get
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.models.architectures import DigitsMLP
from robustlab.models.prototypes import GLVQ, RBFNetwork, RobustCBC, train_prototype_model

W2 = torch.tensor([[0.0, 0.0], [4.0, 2.0]], dtype=torch.float64)


def _two_prototype_models():
    """One prototype / component per class in 2-D: every model decides by the nearer of w0, w1."""
    cbc = RobustCBC(2, 2, num_components=2, concepts_per_class=1, sigma=0.7, components=W2).double()
    with torch.no_grad():  # concept c reasons positively on component c only (other entries: probability 0)
        cbc.reasoning_logits.copy_(torch.tensor([[0.0, -1e4], [-1e4, 0.0], [-1e4, -1e4], [-1e4, -1e4]]))
    rbf = RBFNetwork(2, 2, num_components=2, sigma=0.7, components=W2).double()
    with torch.no_grad():
        rbf.weights.copy_(torch.eye(2))
    glvq = GLVQ(2, 2, 1, prototypes=W2).double()
    return cbc, rbf, glvq


@pytest.mark.parametrize("which", [0, 1, 2])
def test_closed_form_two_prototypes_in_2d(which):
    model = _two_prototype_models()[which]
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64).view(-1, 1)
    x = t * W2[1]  # on the segment w0 -> w1: the certificate is the exact distance to the bisector
    y = (t.squeeze(1) > 0.5).long()
    rho = model.certified_radius(x, y, exact=True)
    exact = (t.squeeze(1) - 0.5).abs() * W2[1].norm()
    assert torch.allclose(rho, exact, atol=1e-9)
    # off the segment it stays a lower bound of the distance to the boundary (the bisector)
    gx = torch.rand(200, 2, generator=torch_generator(0), dtype=torch.float64) * 8 - 2
    d0, d1 = (gx - W2[0]).norm(dim=1), (gx - W2[1]).norm(dim=1)
    gy = (d1 < d0).long()
    mid, normal = W2.mean(0), (W2[1] - W2[0]) / (W2[1] - W2[0]).norm()
    boundary = ((gx - mid) @ normal).abs()
    r = model.certified_radius(gx, gy, exact=True)
    assert bool((r <= boundary + 1e-9).all()) and bool((r >= 0).all())
    assert torch.allclose(r, (torch.maximum(d0, d1) - torch.minimum(d0, d1)) / 2, atol=1e-9)


def test_closed_form_root_of_the_margin_bound():
    # a random CBC: at u* the margin lower bound P/u - N u + B is zero for the (i, j) pair that decides
    net = RobustCBC(3, 2, num_components=4, concepts_per_class=1, sigma=0.8,
                    generator=torch_generator(7)).double()
    x = torch.rand(10, 3, generator=torch_generator(8), dtype=torch.float64)
    y = net(x).argmax(1)
    rho = net.certified_radius(x, y, exact=True)
    d = net.detections(x, exact=True)
    rp, rn = net.reasoning()
    i, j = y, 1 - y
    P = (d * rp.T[i]).sum(1) + (d * rn.T[j]).sum(1)
    N = (d * rn.T[i]).sum(1) + (d * rp.T[j]).sum(1)
    B = rn.sum(0)[i] - rn.sum(0)[j]
    u = torch.exp(rho / net.sigma.min())
    assert torch.allclose(P / u - N * u + B, torch.zeros(10, dtype=torch.float64), atol=1e-9)
    assert bool((rho > 0).all())


@pytest.fixture(scope="module")
def trained():
    train = load_dataset("digits", split="train", n=400, seed=0)
    test = load_dataset("digits", split="test", n=60, seed=1)
    net, _ = train_prototype_model(train.x, train.y, model="cbc", loss="robust", epochs=20, seed=0)
    return TorchModel(net, num_classes=10), test


def test_certifier_statuses_and_registry(trained):
    model, test = trained
    cert = get("prototype_margin", "certifier")()
    assert isinstance(cert, PrototypeMargin)
    pred = model.predict(test.x)
    out = cert.evaluate(model, test.x, test.y, 0.05, clean_pred=pred, generator=torch_generator(0))
    rho = certified_radius(model, test.x, test.y)
    right = (pred == test.y).tolist()
    assert out.status == ["certified" if (r and float(p) > 0.05) else ("abstained" if r else "skipped")
                          for r, p in zip(right, rho)]
    assert torch.allclose(out.score.double(), rho.float().double())
    assert bool((rho[~torch.tensor(right)] <= 0).all())  # rho <= 0 where misclassified
    assert "certified" in out.status and "abstained" in out.status
    # a larger eps never certifies more
    out2 = cert.evaluate(model, test.x, test.y, 0.1, clean_pred=pred, generator=torch_generator(0))
    assert out2.status.count("certified") <= out.status.count("certified")


def test_other_norms_and_normalization(trained):
    model, test = trained
    r2 = certified_radius(model, test.x, test.y, "2")
    assert torch.allclose(certified_radius(model, test.x, test.y, "inf"), r2 / 8.0)  # sqrt(64)
    assert torch.allclose(certified_radius(model, test.x, test.y, 1), r2)
    # normalization inside the TorchModel: (x - m) / s with scalar s is the same network with
    # components w * s + m and sigma * s on raw inputs, hence the same raw radius
    net = model.module
    m, s = 0.3, 2.0
    raw = RobustCBC((1, 8, 8), 10, sigma=(net.sigma.detach() * s).tolist(),
                    components=net.components.detach() * s + m)
    raw.reasoning_logits.data.copy_(net.reasoning_logits.data)
    ra = certified_radius(TorchModel(net, mean=m, std=s), test.x * s + m, test.y)
    assert torch.allclose(ra, certified_radius(raw, test.x * s + m, test.y), rtol=1e-4, atol=1e-6)


def test_unsupported_models_raise():
    cert = PrototypeMargin()
    with pytest.raises(UnsupportedModelError, match="prototype"):
        cert.check_model(TorchModel(DigitsMLP(in_shape=(1, 8, 8), num_classes=10)))
    with pytest.raises(UnsupportedModelError):
        cert.evaluate(CallableModel(lambda x: torch.zeros(len(x), 10), num_classes=10), torch.rand(2, 1, 8, 8),
                      torch.tensor([0, 1]), 0.5, clean_pred=torch.tensor([0, 0]), generator=torch_generator(0))


def _sphere_points(x, rho, per, g):
    """``per`` points on the L2 sphere of radius ``rho`` around each row of ``x`` (not clipped: the
    certificate holds in all of R^D)."""
    b = x.shape[0]
    v = torch.randn(per, *x.shape, generator=g, dtype=x.dtype)
    v = v / v.flatten(2).norm(dim=2).view(per, b, *([1] * (x.dim() - 1)))
    return (x.unsqueeze(0) + v * rho.view(1, b, *([1] * (x.dim() - 1))).to(x.dtype)).reshape(per * b, *x.shape[1:])


def test_soundness_against_random_points_and_attacks(trained):
    model, test = trained
    x, y = test.x, test.y
    rho = certified_radius(model, x, y)
    ok = rho > 0
    assert int(ok.sum()) >= 20
    xs, ys, rs = x[ok], y[ok], rho[ok]
    # 3000 random points on the sphere of radius 0.999 rho (the inside of the certified ball)
    pts = _sphere_points(xs, (rs * 0.999).float(), 3000 // len(xs) + 1, torch_generator(1))
    assert bool((model(pts).argmax(1) == ys.repeat(3000 // len(xs) + 1)).all())
    # PGD-L2 (100 steps, 3 restarts) at several eps: no certified example is broken
    g = torch_generator(2)
    for eps in (0.03, 0.06, 0.1):
        cert = rs > eps
        if not bool(cert.any()):
            continue
        res = PGD(norm=2, eps=eps, steps=100, restarts=3, loss="margin")(model, xs[cert], ys[cert], generator=g)
        assert bool((model(res.x_adv).argmax(1) == ys[cert]).all()), eps
    # minimum-norm attacks: every adversarial they find lies beyond the certified radius
    fab = FAB(norm=2, eps=1.0, n_iter=100).minimize(model, xs, ys, generator=g).extras["norm"]
    assert bool((fab.double() >= rs * (1 - 1e-6)).all())
    assert bool(torch.isfinite(fab).any())  # FAB did find adversarials (the check is not vacuous)
    cw = CWL2(eps=10.0, steps=200, binary_search_steps=5, initial_const=1.0)(model, xs, ys, generator=g)
    assert bool((cw.extras["distance"].double() >= rs * (1 - 1e-6)).all())


@pytest.mark.parametrize("kind", ["rbf", "glvq"])
def test_soundness_rbf_and_glvq(kind):
    train = load_dataset("digits", split="train", n=300, seed=0)
    test = load_dataset("digits", split="test", n=40, seed=1)
    net, _ = train_prototype_model(train.x, train.y, model=kind, epochs=15, seed=0)
    model = TorchModel(net, num_classes=10)
    rho = certified_radius(model, test.x, test.y)
    wrong = model.predict(test.x) != test.y
    assert bool((rho[wrong] <= 0).all())
    ok = rho > 0
    xs, ys, rs = test.x[ok], test.y[ok], rho[ok]
    pts = _sphere_points(xs, (rs * 0.999).float(), 40, torch_generator(3))
    assert bool((model(pts).argmax(1) == ys.repeat(40)).all())
    fab = FAB(norm=2, eps=1.0, n_iter=60).minimize(model, xs, ys, generator=torch_generator(4)).extras["norm"]
    assert bool((fab.double() >= rs * (1 - 1e-6)).all())
    assert math.isfinite(float(fab.min()))
