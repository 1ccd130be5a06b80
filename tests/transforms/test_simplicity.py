"""S- / S^c-randomized evaluation transforms (Shah et al. 2020): block permutation, swap, registry, errors."""

import pytest
import torch

from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.data.simplicity import blocks, load_digit_dominoes, load_lms
from robustlab.transforms.simplicity import (
    RandomizeBlock,
    RandomizeComplex,
    RandomizeSimple,
    randomize_block,
    swap_block,
)


def _rows_are_a_permutation(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(torch.sort(a, dim=0).values, torch.sort(b, dim=0).values)


def test_randomizing_s_leaves_s_complement_untouched_and_vice_versa():
    ds = load_lms("test", n=400, seed=0)
    s, sc = blocks(ds)
    xs = randomize_block(ds.x, s, generator=torch_generator(0))
    assert torch.equal(xs[:, sc], ds.x[:, sc]) and not torch.equal(xs[:, s], ds.x[:, s])
    assert _rows_are_a_permutation(xs[:, s], ds.x[:, s])
    xc = randomize_block(ds.x, sc, generator=torch_generator(0))
    assert torch.equal(xc[:, s], ds.x[:, s]) and not torch.equal(xc[:, sc], ds.x[:, sc])
    # the block moves jointly: one permutation for all its columns (rows of the block stay intact)
    rows = {tuple(r) for r in ds.x[:, sc].tolist()}
    assert all(tuple(r) in rows for r in xc[:, sc].tolist())
    # the S-randomized linear coordinate no longer predicts the label: about half agree
    assert 0.4 < float(((xs[:, 0] > 0.5) == (ds.y == 1)).float().mean()) < 0.6
    assert torch.equal(xs, randomize_block(ds.x, s, generator=torch_generator(0)))  # seeded


def test_image_blocks_are_flat_pixel_indices():
    ds = load_digit_dominoes("test", n=50, noise=0.0)
    s, _ = blocks(ds)
    xs = randomize_block(ds.x, s, generator=torch_generator(1))
    assert xs.shape == ds.x.shape
    assert torch.equal(xs[:, :, 8:], ds.x[:, :, 8:]) and not torch.equal(xs[:, :, :8], ds.x[:, :, :8])


def test_swap_takes_the_block_from_another_class():
    g = torch_generator(2)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    x = torch.stack([y.float() * 10 + torch.arange(9).float(), -y.float()], 1)  # column 1 encodes the class
    out = swap_block(x, y, [1], generator=g)
    assert torch.equal(out[:, 0], x[:, 0])
    assert bool((out[:, 1] != x[:, 1]).all())  # every row got a value of another class
    many = torch.stack([swap_block(x, y, [1], generator=g)[:, 1] for _ in range(200)])
    assert set((-many[:, 0]).unique().tolist()) == {1.0, 2.0}  # class 0 draws from both other classes
    with pytest.raises(DataError, match="single class"):
        swap_block(x, torch.zeros(9, dtype=torch.long), [1], generator=g)


def test_registered_transforms_read_blocks_from_attrs_and_score_models():
    ds = load_lms("test", n=64)
    rs, rc = registry.create("randomize_simple"), registry.create("randomize_complex")
    assert isinstance(rs, RandomizeSimple) and isinstance(rc, RandomizeComplex) and rs.needs_attrs
    g = torch_generator(3)
    xs = rs(ds.x, severity=1, generator=g, attrs=ds.attrs)
    assert torch.equal(xs[:, 1:], ds.x[:, 1:])
    assert torch.equal(rc(ds.x, severity=0, generator=g, attrs=ds.attrs), ds.x)
    explicit = RandomizeBlock(coords=(0, 3))(ds.x, severity=1, generator=torch_generator(4))
    assert torch.equal(explicit[:, [1, 2]], ds.x[:, [1, 2]])
    model = TorchModel(torch.nn.Linear(20, 2), modality="tabular", num_classes=2)
    out = rs.evaluate(model, ds.x, ds.y, 1, clean_pred=ds.y, generator=torch_generator(5), attrs=ds.attrs)
    assert out.scores.shape == (64, 2) and bool(out.attempted.all())


@pytest.mark.parametrize("call, match", [
    (lambda x, a: RandomizeBlock(block="medium"), "medium"),
    (lambda x, a: RandomizeSimple()(x, severity=1, generator=torch_generator(0)), "attrs"),
    (lambda x, a: RandomizeSimple()(x, severity=0.5, generator=torch_generator(0), attrs=a), "severity"),
    (lambda x, a: RandomizeSimple()(x, severity=1, generator=None, attrs=a), "Generator"),
    (lambda x, a: randomize_block(x, [20], generator=torch_generator(0)), r"\[0, 20\)"),
    (lambda x, a: randomize_block(x, [], generator=torch_generator(0)), "empty"),
    (lambda x, a: randomize_block(x, [1, 1], generator=torch_generator(0)), "twice"),
    (lambda x, a: randomize_block(["a", "b"], [0], generator=torch_generator(0)), "tensor"),
    (lambda x, a: swap_block(x, torch.zeros(3), [0], generator=torch_generator(0)), "labels"),
])
def test_bad_input_raises_clear_errors(call, match):
    ds = load_lms("test", n=10)
    with pytest.raises((ConfigError, DataError), match=match):
        call(ds.x, ds.attrs)
