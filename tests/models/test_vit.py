"""TinyViT shapes and per-layer outputs, MAE masking and pretraining, downstream fine-tuning."""

import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.data.base import Dataset
from robustlab.models.vit import (
    MaskedAutoencoder,
    TinyViT,
    ViTClassifier,
    finetune,
    pretrain_mae,
    random_masking,
    sincos_pos_embed,
)


def _vit(**kw) -> TinyViT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TinyViT(**kw).eval()


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", split="train", n=96, seed=0)


@pytest.mark.parametrize("in_shape,patch,tokens", [((1, 8, 8), 2, 16), ((3, 16, 16), 4, 16), ((1, 8, 12), 4, 6)])
@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_and_per_layer_outputs(in_shape, patch, tokens, batch):
    vit = _vit(in_shape=in_shape, patch=patch, dim=32, depth=3)
    x = torch.rand(batch, *in_shape)
    hs = vit.hidden_states(x)
    assert vit.num_layers == 3 and len(hs) == 3
    assert all(h.shape == (batch, 1 + tokens, 32) for h in hs)
    assert vit.features(x).shape == (batch, 32) and vit(x).shape == (batch, 32)
    # running fewer blocks gives the same early layers
    assert torch.allclose(vit.hidden_states(x, upto=2)[1], hs[1])
    assert len(vit.hidden_states(x, upto=1)) == 1
    assert not torch.allclose(hs[0], hs[1])  # each block changes the tokens
    # the final feature is the final LayerNorm's patch tokens, averaged
    assert torch.allclose(vit.features(x), vit.norm(hs[-1])[:, 1:].mean(1), atol=1e-6)


def test_patchify_roundtrip_and_order():
    vit = _vit(in_shape=(2, 4, 6), patch=2, dim=8, depth=1, heads=2)
    x = torch.rand(3, 2, 4, 6)
    p = vit.patchify(x)
    assert p.shape == (3, 6, 8)
    assert torch.equal(vit.unpatchify(p), x)
    assert torch.equal(p[0, 1].view(2, 2, 2), x[0, :, 0:2, 2:4])  # row-major grid, channel first


def test_bad_config_and_inputs_raise():
    with pytest.raises(ConfigError, match="do not fit"):
        TinyViT(in_shape=(1, 8, 8), patch=3)
    with pytest.raises(ConfigError, match="per channel"):
        TinyViT(in_shape=(3, 8, 8), mean=[0.1, 0.2])
    vit = _vit()
    with pytest.raises(ConfigError, match="expects"):
        vit.features(torch.rand(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="upto"):
        vit.hidden_states(torch.rand(1, 1, 8, 8), upto=5)
    with pytest.raises(ConfigError):
        sincos_pos_embed(30, 2, 2)


def test_input_normalization_happens_inside():
    a = _vit(mean=0.5, std=0.25)
    b = _vit()
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(a.embed(x), b.embed((x - 0.5) / 0.25), atol=1e-6)


def test_random_masking_ratio_and_consistency():
    g = torch_generator(0)
    ids_keep, mask, ids_restore = random_masking(5, 16, 0.75, g)
    assert ids_keep.shape == (5, 4) and mask.shape == (5, 16)
    assert torch.equal(mask.sum(1), torch.full((5,), 12.0))
    assert bool((mask.gather(1, ids_keep) == 0).all())  # kept tokens are exactly the unmasked ones
    assert not torch.equal(mask[0], mask[1])  # per-sample masks
    again = random_masking(5, 16, 0.75, torch_generator(0))
    assert torch.equal(again[1], mask)
    assert torch.equal(torch.arange(16).expand(5, -1).gather(1, ids_restore).sort(1).values,
                       torch.arange(16).expand(5, -1))
    with pytest.raises(ConfigError):
        random_masking(2, 16, 1.0, g)


def test_mae_loss_is_on_masked_patches_only():
    vit = _vit()
    mae = MaskedAutoencoder(vit, mask_ratio=0.75)
    x = torch.rand(4, 1, 8, 8)
    loss, pred, mask = mae(x, torch_generator(1))
    assert pred.shape == (4, 16, 4) and mask.shape == (4, 16)
    err = ((pred - vit.patchify(x)) ** 2).mean(-1)
    assert torch.allclose(loss, (err * mask).sum() / mask.sum())


def test_mae_pretraining_reduces_loss_and_is_seeded(digits):
    a, b = TinyViT(), TinyViT()
    ha = pretrain_mae(a, digits, epochs=8, batch_size=32, lr=3e-3, seed=0, progress=False)
    hb = pretrain_mae(b, digits, epochs=8, batch_size=32, lr=3e-3, seed=0, progress=False)
    assert len(ha["loss"]) == 8
    assert ha["loss"][-1] < 0.7 * ha["loss"][0]
    assert ha["loss"] == hb["loss"]
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(DataError):
        pretrain_mae(TinyViT(), Dataset(torch.rand(4, 64), torch.zeros(4, dtype=torch.long)), progress=False)


def test_linear_probe_freezes_a_copy_and_full_finetune_trains_it(digits):
    enc = _vit()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    lin = finetune(enc, digits, mode="linear", epochs=3, batch_size=32, seed=0, progress=False)
    full = finetune(enc, digits, mode="full", epochs=2, batch_size=32, seed=0, progress=False)
    assert isinstance(lin, ViTClassifier) and lin(digits.x[:5]).shape == (5, 10)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in lin.encoder.state_dict().items())  # frozen
    assert any(not torch.equal(before[k], v) for k, v in full.encoder.state_dict().items())
    with pytest.raises(ConfigError):
        ViTClassifier(enc, 3, mode="adapter")
