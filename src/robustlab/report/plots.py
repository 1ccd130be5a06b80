"""Report figures as self-contained ``data:image/png;base64,...`` URIs (no files, no URLs).

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``: no global figure state, no GUI backend, nothing changed for a user's notebook session, and
it works headless and from worker threads. The security curve (robust accuracy against eps) follows
Carlini et al., "On Evaluating Adversarial Robustness" (2019) and ART's ``SecurityCurve``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["corruption_plot", "example_grid", "fig_to_data_uri", "new_figure", "security_curve_plot"]

_MARKERS = "osD^vP*Xhp<>"
_NORM_LABEL = {"inf": "L∞", "2": "L2", "1": "L1", None: "norm unknown"}


def new_figure(width: float, height: float, layout: str | None = "constrained"):
    """A pyplot-free Agg figure of ``width`` x ``height`` inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def fig_to_data_uri(fig, dpi: int = 110) -> str:
    """Render ``fig`` to PNG and return it as a ``data:`` URI for an ``<img src>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax, ylabel: str, xlabel: str) -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.grid(True, color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def corruption_plot(table, clean_accuracy: float | None = None, xlabel: str = "severity") -> str | None:
    """Accuracy against severity, one line per transform, clean accuracy dashed.

    Args:
        table: :func:`robustlab.evaluate.metrics.metrics_table` output.
        clean_accuracy: drawn as a dashed horizontal line when given.
    Returns:
        a PNG data URI, or None when the table has no transform rows.
    """
    rows = table[table["kind"] == "transform"]
    if rows.empty:
        return None
    probes = sorted(rows["probe"].unique())
    many = len(probes) > 8
    fig = new_figure(8.0 if many else 6.8, 3.8)
    ax = fig.add_subplot()
    for i, (probe, color) in enumerate(zip(probes, _colors(len(probes)))):
        r = rows[rows["probe"] == probe].sort_values("param")
        ax.plot(r["param"], r["accuracy"], marker=_MARKERS[i % len(_MARKERS)], markersize=4, color=color,
                linewidth=1.6, label=probe)
    if clean_accuracy is not None and np.isfinite(clean_accuracy):
        ax.axhline(clean_accuracy, color="#333", linestyle="--", linewidth=1.2, label="clean")
    _style(ax, "accuracy", xlabel)
    params = np.sort(rows["param"].dropna().unique())
    if len(params) and np.allclose(params, np.round(params)):
        ax.set_xticks(params)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8,
              ncol=2 if len(probes) > 14 else 1)
    return fig_to_data_uri(fig)


def security_curve_plot(table, clean_accuracy: float | None = None,
                        probe_info: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """Robust accuracy against eps per attack (security curves), one panel per Lp norm.

    Each curve starts at eps = 0 with the clean accuracy when it is given. Norms come from
    ``probe_info[probe]["norm"]`` or the probe name (see :func:`robustlab.evaluate.checks.probe_norm`);
    eps of different norms are never drawn on one axis.

    Returns:
        a PNG data URI, or None when the table has no attack rows.
    """
    from robustlab.evaluate.checks import probe_norm

    rows = table[table["kind"] == "attack"]
    if rows.empty:
        return None
    info = probe_info or {}
    probes = sorted(rows["probe"].unique())
    norms = {p: probe_norm(p, info.get(p)) for p in probes}
    groups = sorted(set(norms.values()), key=lambda n: (n is None, str(n)))
    colors = dict(zip(probes, _colors(len(probes))))
    fig = new_figure(min(4.2 * len(groups) + 1.6, 12.0), 3.8)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, norm in zip(axes, groups):
        for i, probe in enumerate(p for p in probes if norms[p] == norm):
            r = rows[rows["probe"] == probe].sort_values("param")
            x, y = r["param"].to_numpy(float), r["accuracy"].to_numpy(float)
            if clean_accuracy is not None and np.isfinite(clean_accuracy) and (len(x) == 0 or x[0] > 0):
                x, y = np.r_[0.0, x], np.r_[clean_accuracy, y]
            ax.plot(x, y, marker=_MARKERS[i % len(_MARKERS)], markersize=4, linewidth=1.6,
                    color=colors[probe], label=probe)
        if clean_accuracy is not None and np.isfinite(clean_accuracy):
            ax.axhline(clean_accuracy, color="#333", linestyle="--", linewidth=1.2, label="clean")
        _style(ax, "robust accuracy", f"eps ({_NORM_LABEL.get(norm, 'L' + str(norm))})")
        ax.set_xlim(left=0)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8)
    return fig_to_data_uri(fig)


def style_plot(table, clean_accuracy: float | None = None, predicted: Mapping[str, float] | None = None,
               matched: Mapping[str, float] | None = None) -> str | None:
    """Accuracy under each natural-shift style (mean over its severities) as bars, clean accuracy dashed,
    in the spirit of COCO-O's per-domain bars.

    Args:
        predicted: style probe -> accuracy the baseline family's line predicts at the model's clean
            accuracy (effective robustness, Taori et al. 2020), drawn as a black tick on the bar.
        matched: style probe -> the model's accuracy on just the settings the baseline covers (when they
            are not all of the style's settings), drawn as a hollow circle next to the tick.
    Returns:
        a PNG data URI, or None when the table has no rows.
    """
    rows = table[table["kind"] == "transform"]
    if rows.empty:
        return None
    means = rows.groupby("probe", sort=True)["accuracy"].mean()
    fig = new_figure(max(4.0, 0.8 * len(means) + 2.0), 3.4)
    ax = fig.add_subplot()
    xs = np.arange(len(means))
    ax.bar(xs, means.to_numpy(float), color=_colors(len(means)), width=0.7)
    for x, v in zip(xs, means.to_numpy(float)):
        ax.text(x, v + 0.02, f"{v:.0%}", ha="center", fontsize=8)
    legend = False
    predicted, matched = dict(predicted or {}), dict(matched or {})
    pts = [(x, float(predicted[p])) for x, p in zip(xs, means.index) if p in predicted]
    if pts:
        ax.scatter([x for x, _ in pts], [v for _, v in pts], marker="_", s=900, linewidths=2.5, color="black",
                   zorder=3, label="baseline line's prediction")
        legend = True
    pts = [(x, float(matched[p])) for x, p in zip(xs, means.index) if p in matched]
    if pts:
        ax.scatter([x for x, _ in pts], [v for _, v in pts], marker="o", s=40, facecolors="none",
                   edgecolors="black", zorder=4, label="accuracy on the baseline's settings")
        legend = True
    if clean_accuracy is not None and np.isfinite(clean_accuracy):
        ax.axhline(clean_accuracy, color="#333", linestyle="--", linewidth=1.2, label="clean")
        legend = True
    if legend:
        ax.legend(loc="upper right", frameon=False, fontsize=8)
    _style(ax, "accuracy", "")
    ax.set_xticks(xs, [p.removeprefix("style_") for p in means.index], rotation=20)
    return fig_to_data_uri(fig)


def certified_plot(table, probe_info: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """Certified accuracy against the radius per certifier (solid), beside the robust accuracy of the
    attacks in the same norm (dashed): the true robust accuracy lies between the two curves.

    Returns:
        a PNG data URI, or None when the table has no certifier rows.
    """
    from robustlab.evaluate.checks import probe_norm

    certs = table[table["kind"] == "certifier"]
    if certs.empty:
        return None
    info = probe_info or {}
    attacks = table[table["kind"] == "attack"]
    cprobes = sorted(certs["probe"].unique())
    norms = {p: probe_norm(p, info.get(p)) for p in cprobes}
    groups = sorted(set(norms.values()), key=lambda n: (n is None, str(n)))
    aprobes = sorted(p for p in attacks["probe"].unique() if probe_norm(p, info.get(p)) in groups)
    colors = dict(zip(cprobes + aprobes, _colors(len(cprobes) + len(aprobes))))
    fig = new_figure(min(4.2 * len(groups) + 1.8, 12.0), 3.8)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, norm in zip(axes, groups):
        for i, probe in enumerate(p for p in cprobes if norms[p] == norm):
            r = certs[certs["probe"] == probe].sort_values("param")
            ax.plot(r["param"].to_numpy(float), r["certified_accuracy"].to_numpy(float), drawstyle="steps-post",
                    marker=_MARKERS[i % len(_MARKERS)], markersize=4, linewidth=1.8, color=colors[probe],
                    label=f"{probe} (certified)")
        for probe in (p for p in aprobes if probe_norm(p, info.get(p)) == norm):
            r = attacks[attacks["probe"] == probe].sort_values("param")
            ax.plot(r["param"].to_numpy(float), r["accuracy"].to_numpy(float), linestyle="--", marker=".",
                    linewidth=1.2, color=colors[probe], label=f"{probe} (attacked)")
        _style(ax, "accuracy", f"radius ({_NORM_LABEL.get(norm, 'L' + str(norm))})")
        ax.set_xlim(left=0)
        ax.legend(loc="upper right", frameon=False, fontsize=7)
    return fig_to_data_uri(fig)


def _to_rgb(x: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) RGB: grey repeated for 1 channel, channel mean for 2."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    if x.shape[0] >= 3:
        return np.transpose(x[:3], (1, 2, 0))
    return np.repeat(x.mean(axis=0)[..., None], 3, axis=2)


def example_grid(examples: Mapping[str, np.ndarray], class_names: Sequence[str] | None = None,
                 max_examples: int = 8) -> str | None:
    """Clean and probed images side by side, with their difference, labels and predictions.

    The images are tiled into one mosaic (nearest-neighbour upscaled, so 8x8 digits stay sharp) and
    drawn on a single axes: one draw call instead of one axes per image.

    Args:
        examples: arrays ``x_clean`` and ``x_probed`` ``(k, C, H, W)`` float in [0, 1] and int
            ``label``, ``clean_pred``, ``pred`` ``(k,)`` (the run directory's ``examples/*.npz``).
        class_names: names for the integer labels (indices are shown otherwise).
        max_examples: at most this many columns.
    Returns:
        a PNG data URI (rows: clean, probed, difference), or None when the inputs are not images.
    """
    from matplotlib import colormaps

    xc, xp = np.asarray(examples["x_clean"]), np.asarray(examples["x_probed"])
    if xc.ndim != 4 or xc.shape != xp.shape or len(xc) == 0:
        return None
    k, (h, w) = min(len(xc), max_examples), xc.shape[2:]
    names = list(class_names or [])

    def name(i: int) -> str:
        return names[int(i)] if 0 <= int(i) < len(names) else str(int(i))

    label, cpred, pred = (np.asarray(examples[key]).reshape(-1) for key in ("label", "clean_pred", "pred"))
    delta = (xp[:k].astype(np.float32) - xc[:k].astype(np.float32)).mean(axis=1)
    span = float(np.abs(delta).max()) or 1.0
    diff_rgb = colormaps["RdBu_r"](np.clip(delta / span, -1, 1) * 0.5 + 0.5)[..., :3]
    f = max(1, -(-48 // max(h, w)))  # integer upscaling to >= 48 px tiles
    th, tw = h * f, w * f
    gap, band = max(tw // 8, 2), max(int(th * 0.3), 8)
    rows_y = [band, 2 * band + th, 3 * band + 2 * th]  # top of each image row
    mosaic = np.ones((3 * th + 3 * band, k * tw + (k - 1) * gap, 3), dtype=np.float32)
    for j in range(k):
        x0 = j * (tw + gap)
        for r, img in enumerate((_to_rgb(xc[j]), _to_rgb(xp[j]), diff_rgb[j])):
            tile = np.repeat(np.repeat(img, f, axis=0), f, axis=1)
            mosaic[rows_y[r]:rows_y[r] + th, x0:x0 + tw] = tile
    inch = 1.15 / tw  # inches per mosaic pixel: 1.15 in per tile
    left, right, top, bottom = 0.45, 0.12, 0.04, 0.1
    aw, ah = mosaic.shape[1] * inch, mosaic.shape[0] * inch
    fig = new_figure(aw + left + right, ah + top + bottom, layout=None)
    ax = fig.add_axes((left / (aw + left + right), bottom / (ah + top + bottom),
                       aw / (aw + left + right), ah / (ah + top + bottom)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    green, red = "#1a7f37", "#c62828"
    for j in range(k):
        cx = j * (tw + gap) + tw / 2
        ax.text(cx, band * 0.55, f"y={name(label[j])}", ha="center", va="center", fontsize=8)
        for r, p in ((0, cpred[j]), (1, pred[j])):
            ax.text(cx, rows_y[r] + th + band * 0.45, f"pred {name(p)}", ha="center", va="center", fontsize=8,
                    color=green if p == label[j] else red)
    for r, text in enumerate(("clean", "probed", f"difference\n(±{span:.3g})")):
        ax.text(-gap, rows_y[r] + th / 2, text, ha="right", va="center", fontsize=8, rotation=90,
                clip_on=False, multialignment="center")
    return fig_to_data_uri(fig)
