"""A tiny Vision Transformer with per-layer token outputs, masked-autoencoder pretraining and fine-tuning.

The encoder follows "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021): patch embedding, a
class token, fixed 2-D sine-cosine positions, pre-norm blocks, a final LayerNorm. Pretraining follows
"Masked Autoencoders Are Scalable Vision Learners" (He et al., 2022): drop a random 75 % of the patch
tokens per image, encode only the visible ones, let a light decoder fill in mask tokens and predict the
pixels, and score the reconstruction on the masked patches only. Downstream classifiers are built by
linear probing (frozen encoder, BatchNorm without affine + linear head, as MAE's linear probe) or by
full fine-tuning (global average pool of patch tokens + linear head), trained with robustlab's
seeded :func:`~robustlab.models.training.train_classifier`.

Sized for CPU: e.g. 8x8 digits with 2x2 patches give 16 patch tokens (+1 class token) of width 32.
Differences from MAE: no per-patch pixel normalization of the target (``norm_pix_loss=False``), no
layer-wise learning-rate decay or LARS, no data augmentation.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.base import Dataset
from robustlab.models.training import _progress_bar, train_classifier

__all__ = ["MaskedAutoencoder", "TinyViT", "ViTClassifier", "finetune", "pretrain_mae", "random_masking",
           "sincos_pos_embed"]


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``(grid_h * grid_w, dim)`` (MAE's; ``dim % 4 == 0``)."""
    if dim % 4:
        raise ConfigError(f"sincos_pos_embed: dim must be a multiple of 4, got {dim}", fix="use e.g. dim=32")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    gy, gx = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                            torch.arange(grid_w, dtype=torch.float64), indexing="ij")

    def one(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one(gy), one(gx)], dim=1).float()


class _Attention(nn.Module):
    """Multi-head self-attention (B, T, d) -> (B, T, d)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` (GELU MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _xavier_init(module: nn.Module) -> None:
    """MAE's initialization: xavier-uniform linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TinyViT(nn.Module):
    """A small ViT encoder whose every block output (the token features ``h_l``) can be read.

    Args:
        in_shape: input ``(C, H, W)``, raw pixels in [0, 1]; ``H`` and ``W`` divisible by ``patch``.
        patch: patch side in pixels (2 on 8x8 digits -> 16 patch tokens).
        dim: token width (a multiple of 4 and of ``heads``).
        depth: number of transformer blocks (layers ``0 .. depth-1``).
        heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        mean, std: per-channel input normalization applied inside (as MAE normalizes its inputs), so
            the encoder takes raw [0, 1] pixels; ``None`` -> none.

    Shapes: ``hidden_states(x)`` -> ``depth`` tensors ``(B, 1 + N, dim)`` (class token first);
    ``features(x)`` / ``forward(x)`` -> ``(B, dim)``, the final-LayerNorm patch tokens averaged.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 8, 8), patch: int = 2, dim: int = 32, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0, mean: Sequence[float] | float | None = None,
                 std: Sequence[float] | float | None = None):
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        if h % patch or w % patch or dim % heads or dim % 4 or depth < 1:
            raise ConfigError(f"TinyViT: in_shape={tuple(in_shape)}, patch={patch}, dim={dim}, heads={heads}, "
                              f"depth={depth} do not fit",
                              fix="H and W divisible by patch, dim divisible by heads and by 4, depth >= 1")
        self.in_shape, self.patch, self.dim, self.depth = (c, h, w), int(patch), int(dim), int(depth)
        self.grid = (h // patch, w // patch)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_dim = c * patch * patch
        norm_mean = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float32).reshape(-1, 1, 1)
        norm_std = torch.as_tensor(1.0 if std is None else std, dtype=torch.float32).reshape(-1, 1, 1)
        if norm_mean.numel() not in (1, c) or norm_std.numel() not in (1, c) or bool((norm_std <= 0).any()):
            raise ConfigError(f"TinyViT: mean/std must be one value or one per channel (std > 0), got {mean}, {std}",
                              fix=f"pass {c} per-channel values or one scalar")
        self.register_buffer("in_mean", norm_mean, persistent=False)
        self.register_buffer("in_std", norm_std, persistent=False)
        self.patch_embed = nn.Linear(self.patch_dim, dim)  # = a stride-``patch`` conv on flattened patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = torch.cat([torch.zeros(1, dim), sincos_pos_embed(dim, *self.grid)])[None]
        self.register_buffer("pos_embed", pos, persistent=False)  # fixed, as in MAE
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self._init_weights()

    @property
    def num_layers(self) -> int:
        return self.depth

    def _init_weights(self) -> None:
        _xavier_init(self)
        nn.init.normal_(self.cls_token, std=0.02)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ConfigError(f"TinyViT expects (B, {', '.join(map(str, self.in_shape))}) images, "
                              f"got {tuple(x.shape)}", fix="resize the inputs or build TinyViT(in_shape=...)")

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, N, C * p * p)`` patches in row-major grid order."""
        self._check(x)
        b, c, p = x.shape[0], self.in_shape[0], self.patch
        gh, gw = self.grid
        return x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * p * p)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`: ``(B, N, C * p * p)`` -> ``(B, C, H, W)``."""
        b, (c, h, w), p = patches.shape[0], self.in_shape, self.patch
        gh, gw = self.grid
        return patches.reshape(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of raw ``x`` (normalized first) with positions, no class token: ``(B, N, dim)``."""
        self._check(x)
        return self.patch_embed(self.patchify((x - self.in_mean) / self.in_std)) + self.pos_embed[:, 1:]

    def with_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the class token (with its zero position): ``(B, T, dim)`` -> ``(B, 1 + T, dim)``."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def hidden_states(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of blocks ``0 .. upto-1`` (all when ``None``), each ``(B, 1 + N, dim)``, before the final norm.

        Only the blocks asked for are run, so shallow layers are cheap to attack.
        """
        n = self.depth if upto is None else int(upto)
        if not 1 <= n <= self.depth:
            raise ConfigError(f"TinyViT.hidden_states: upto={upto} outside 1..{self.depth}",
                              fix=f"ask for 1 to {self.depth} layers")
        h = self.with_cls(self.embed(x))
        out = []
        for blk in self.blocks[:n]:
            h = blk(h)
            out.append(h)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output a downstream head reads: final-LayerNorm patch tokens, averaged ``(B, dim)``."""
        return self.norm(self.hidden_states(x)[-1])[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def random_masking(batch: int, num_tokens: int, ratio: float, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking by argsort of uniform noise.

    Returns ``ids_keep (B, K)`` (visible tokens, ``K = round(N * (1 - ratio))``, at least 1),
    ``mask (B, N)`` float (1 = masked) in the original order, and ``ids_restore (B, N)``.
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"mask ratio must be in [0, 1), got {ratio}", fix="use e.g. mask_ratio=0.75 (MAE)")
    keep = max(1, int(round(num_tokens * (1.0 - ratio))))
    noise = torch.rand(batch, num_tokens, generator=generator, device=generator.device).to(device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(batch, num_tokens, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], mask.gather(1, ids_restore), ids_restore


class MaskedAutoencoder(nn.Module):
    """A :class:`TinyViT` encoder plus MAE's light decoder (He et al., 2022).

    Args:
        encoder: the encoder to pretrain (trained in place).
        decoder_dim, decoder_depth, decoder_heads: the decoder's width, blocks and heads.
        mask_ratio: share of patch tokens hidden from the encoder (0.75 in MAE).

    ``forward(x, generator)`` returns ``(loss, pred (B, N, patch_dim), mask (B, N))``; the loss is the
    mean squared pixel error over masked patches only.
    """

    def __init__(self, encoder: TinyViT, decoder_dim: int = 32, decoder_depth: int = 1, decoder_heads: int = 4,
                 mask_ratio: float = 0.75):
        super().__init__()
        self.encoder, self.mask_ratio = encoder, float(mask_ratio)
        self.decoder_embed = nn.Linear(encoder.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        pos = torch.cat([torch.zeros(1, decoder_dim), sincos_pos_embed(decoder_dim, *encoder.grid)])[None]
        self.register_buffer("decoder_pos", pos, persistent=False)
        self.decoder_blocks = nn.ModuleList(_Block(decoder_dim, decoder_heads, 2.0) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, encoder.patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        _xavier_init(self)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.encoder.cls_token, std=0.02)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = self.encoder
        tokens = enc.embed(x)
        b, n, d = tokens.shape
        ids_keep, mask, ids_restore = random_masking(b, n, self.mask_ratio, generator, x.device)
        h = enc.with_cls(tokens.gather(1, ids_keep[..., None].expand(-1, -1, d)))
        for blk in enc.blocks:
            h = blk(h)
        h = self.decoder_embed(enc.norm(h))
        filler = self.mask_token.expand(b, n - ids_keep.shape[1], -1)
        body = torch.cat([h[:, 1:], filler], dim=1)
        body = body.gather(1, ids_restore[..., None].expand(-1, -1, h.shape[-1]))
        h = torch.cat([h[:, :1], body], dim=1) + self.decoder_pos
        for blk in self.decoder_blocks:
            h = blk(h)
        pred = self.decoder_pred(self.decoder_norm(h))[:, 1:]
        err = ((pred - enc.patchify(x)) ** 2).mean(dim=-1)
        loss = (err * mask).sum() / mask.sum().clamp_min(1.0)
        return loss, pred, mask


def pretrain_mae(encoder: TinyViT, data: Dataset, *, epochs: int = 100, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 0.05, mask_ratio: float = 0.75, decoder_dim: int = 32,
                 decoder_depth: int = 1, warmup: float = 0.05, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Pretrain ``encoder`` in place as a masked autoencoder; returns ``{"loss": [...] per epoch, "seconds"}``.

    AdamW with betas (0.9, 0.95), no weight decay on biases / norms / tokens, linear warmup then cosine
    decay (MAE's recipe, scaled down). Initialization, shuffling and masks are drawn from ``seed``.

    Args:
        encoder: the :class:`TinyViT` to train.
        data: images ``(N, C, H, W)`` in [0, 1] (labels are ignored).
        epochs, batch_size, lr, weight_decay: optimization (``lr`` is the peak rate).
        mask_ratio: share of patches masked per image (0.75 in MAE).
        decoder_dim, decoder_depth: size of the light decoder (discarded after pretraining).
        warmup: share of the steps spent warming up.
    """
    if not isinstance(data.x, torch.Tensor) or data.x.dim() != 4:
        raise DataError(f"pretrain_mae needs image tensors (N, C, H, W), got dataset {data.name!r}",
                        fix="pass an image Dataset such as load_dataset('digits')")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(f"pretrain_mae: epochs={epochs}, batch_size={batch_size}, lr={lr} must be > 0",
                          fix="pass positive epochs, batch_size and lr")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "mae-init"))
        mae = MaskedAutoencoder(encoder, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                                mask_ratio=mask_ratio)
    named = list(mae.named_parameters())
    skip = [p.dim() < 2 or name.endswith(("cls_token", "mask_token")) for name, p in named]
    decay = [p for (_, p), s in zip(named, skip) if not s]
    no_decay = [p for (_, p), s in zip(named, skip) if s]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    shuffle = torch_generator(derive_seed(seed, "mae-shuffle"))
    masks = torch_generator(derive_seed(seed, "mae-mask"))
    n = len(data)
    per_epoch = max(n // batch_size, 1)
    total, warm = per_epoch * epochs, max(1, round(warmup * per_epoch * epochs))
    history: dict[str, Any] = {"loss": [], "seconds": 0.0}
    start, step = time.perf_counter(), 0
    mae.train()
    with _progress_bar(progress, "MAE pretraining") as bar:
        task = bar.add_task("MAE pretraining", total=total, status="")
        for epoch in range(epochs):
            order = torch.randperm(n, generator=shuffle)
            run = 0.0
            for i in range(per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size] if per_epoch > 1 else order
                factor = (step + 1) / warm if step < warm else \
                    0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
                for group in opt.param_groups:
                    group["lr"] = lr * factor
                loss, _, _ = mae(data.x[idx], masks)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                run += float(loss.detach())
                step += 1
                bar.update(task, advance=1)
            history["loss"].append(run / per_epoch)
            bar.update(task, status=f"epoch {epoch + 1}/{epochs} loss {history['loss'][-1]:.4f}")
    encoder.eval()
    history["seconds"] = time.perf_counter() - start
    return history


class ViTClassifier(nn.Module):
    """A downstream classifier on a :class:`TinyViT`: ``head(encoder.features(x))``.

    Args:
        encoder: the (copied) pre-trained encoder.
        num_classes: outputs of the linear head.
        mode: ``"linear"`` (linear probing: encoder frozen, a BatchNorm without affine before the head,
            as MAE's linear probe) or ``"full"`` (full fine-tuning: every weight trains).

    Shapes: ``(B, C, H, W) -> (B, num_classes)`` logits.
    """

    def __init__(self, encoder: TinyViT, num_classes: int, mode: str = "linear"):
        super().__init__()
        if mode not in ("linear", "full"):
            raise ConfigError(f"unknown fine-tuning mode {mode!r}", fix="use mode='linear' or 'full'")
        self.encoder, self.mode, self.num_classes = encoder, mode, int(num_classes)
        self.bn = nn.BatchNorm1d(encoder.dim, affine=False) if mode == "linear" else nn.Identity()
        self.head = nn.Linear(encoder.dim, num_classes)
        if mode == "linear":
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ViTClassifier:
        super().train(mode)
        if self.mode == "linear":
            self.encoder.eval()  # a frozen encoder stays in eval mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.encoder.features(x)))


def finetune(encoder: TinyViT, train: Dataset, *, mode: str = "linear", epochs: int = 30, batch_size: int = 64,
             lr: float | None = None, weight_decay: float | None = None, seed: int = 0,
             progress: bool = True) -> ViTClassifier:
    """A downstream classifier from a copy of ``encoder`` (left untouched), trained on ``train``.

    Uses :func:`~robustlab.models.training.train_classifier` with AdamW and a onecycle schedule, without
    re-initializing the encoder; the head is initialized from ``seed``. Defaults: linear probing
    lr 1e-2, no weight decay; full fine-tuning lr 1e-3, weight decay 0.05.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "head-init", mode))
        model = ViTClassifier(copy.deepcopy(encoder), train.num_classes, mode)
        nn.init.normal_(model.head.weight, std=0.01)
        nn.init.zeros_(model.head.bias)
    lin = mode == "linear"
    train_classifier(model, train, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress,
                     lr=lr if lr is not None else (1e-2 if lin else 1e-3),
                     weight_decay=weight_decay if weight_decay is not None else (0.0 if lin else 0.05),
                     optimizer="adamw", schedule="onecycle", init=False,
                     description=f"{'linear probe' if lin else 'fine-tune'} seed {seed}")
    return model.eval()
