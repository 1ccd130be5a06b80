"""COCO-style detection mAP: per-class AP with 101-point interpolation, mAP@0.5 and mAP@[.5:.95].

The metric of "COCO-O: A Benchmark for Object Detectors under Natural Distribution Shifts" (Mao et al.,
ICCV 2023), which scores every domain with the COCO box mAP ("Microsoft COCO: Common Objects in Context",
Lin et al., 2014; pycocotools' ``COCOeval``). This is the same algorithm without crowd / area ranges:

1. per image and class, detections sorted by score (at most ``max_dets``, COCO's 100) are matched
   greedily: each takes the not-yet-matched ground-truth box of highest IoU if that IoU >= the threshold,
   else it is a false positive (so a duplicate of a matched box is a false positive);
2. per class and IoU threshold, all detections sorted by score give the precision / recall curve;
   precision is made non-increasing from the right and read at the 101 recall points 0, .01, .., 1
   (the first detection reaching each recall; 0 when never reached); AP is their mean;
3. classes with no ground truth are left out (``nan``); mAP is the mean over classes and thresholds
   (``.5:.05:.95``); mAP@0.5 and mAP@0.75 use one threshold.

Vectorised: IoUs for all (image, class) groups at once, the greedy matching loops over the detection
rank only (all groups and thresholds together), the curves loop over classes only. IoUs in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import DataError

__all__ = ["COCO_IOU_THRESHOLDS", "COCO_RECALL_POINTS", "DetectionMetrics", "box_iou", "evaluate_detections"]

COCO_IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)  # as pycocotools' Params.iouThrs
COCO_RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.0, 101)  # as pycocotools' Params.recThrs


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a (..., N, 4)`` and ``b (..., M, 4)`` given as (x1, y1, x2, y2) -> ``(..., N, M)``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-300), torch.zeros_like(inter))


@dataclass
class DetectionMetrics:
    """COCO box metrics of one detector on one dataset.

    Attributes:
        map: mAP@[.5:.95] (COCO's AP), in [0, 1].
        map50, map75: mAP at IoU .5 and .75 (nan when that threshold is not evaluated).
        ap: ``(T, C)`` AP per IoU threshold and class (nan for classes with no ground truth).
        recall: ``(T, C)`` final recall per threshold and class.
        iou_thresholds: the ``T`` thresholds.
        num_gt: ``(C,)`` ground-truth boxes per class; num_dets: detections evaluated.
    """

    map: float
    map50: float
    map75: float
    ap: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    num_gt: np.ndarray
    num_dets: int
    class_names: list[str] = field(default_factory=list)

    def per_class(self) -> dict[str, float]:
        """AP@[.5:.95] per class name (nan for classes without ground truth)."""
        names = self.class_names or [str(i) for i in range(self.ap.shape[1])]
        seen = np.isfinite(self.ap).sum(0)
        vals = np.where(seen > 0, np.nansum(self.ap, 0) / np.maximum(seen, 1), np.nan)
        return {n: float(v) for n, v in zip(names, vals)}


def _flatten(items: Sequence[Any], n_fields: int, what: str) -> list[torch.Tensor]:
    cols: list[list[torch.Tensor]] = [[] for _ in range(n_fields)]
    for i, item in enumerate(items):
        if len(item) != n_fields:
            raise DataError(f"evaluate_detections: {what} {i} has {len(item)} fields, expected {n_fields}",
                            fix="predictions are (boxes, scores, labels) per image; targets (boxes, labels)")
        for j, v in enumerate(item):
            cols[j].append(torch.as_tensor(v).detach().cpu())
    return cols


def evaluate_detections(predictions: Sequence[tuple[Any, Any, Any]], gt_boxes: Sequence[Any],
                        gt_labels: Sequence[Any], *, num_classes: int | None = None,
                        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS, max_dets: int = 100,
                        class_names: Sequence[str] | None = None) -> DetectionMetrics:
    """COCO mAP of ``predictions`` against the ground truth (see the module docstring for the algorithm).

    Args:
        predictions: per image ``(boxes (k, 4), scores (k,), labels (k,))``, boxes as x1, y1, x2, y2.
        gt_boxes, gt_labels: per image ``(m, 4)`` boxes and ``(m,)`` int labels (e.g. a SceneDataset's).
        num_classes: number of classes (default: ``len(class_names)`` or 1 + the largest label seen).
        iou_thresholds: IoU thresholds (COCO's .5:.05:.95 by default).
        max_dets: detections kept per image and class, best score first (COCO's 100).
        class_names: names for :meth:`DetectionMetrics.per_class`.
    """
    if len(predictions) != len(gt_boxes) or len(gt_boxes) != len(gt_labels):
        raise DataError(f"evaluate_detections: {len(predictions)} predictions, {len(gt_boxes)} box sets, "
                        f"{len(gt_labels)} label sets", fix="give one prediction and one ground truth per image")
    thr = torch.as_tensor(np.asarray(iou_thresholds, dtype=np.float64))
    if thr.dim() != 1 or thr.numel() == 0 or bool(((thr < 0) | (thr > 1)).any()):
        raise DataError(f"evaluate_detections: iou_thresholds {list(np.asarray(iou_thresholds))} must lie in [0, 1]",
                        fix="pass thresholds such as numpy.linspace(0.5, 0.95, 10)")
    n = len(predictions)
    pb, ps, pl = _flatten(predictions, 3, "prediction")
    dcount = torch.tensor([len(s.reshape(-1)) for s in ps], dtype=torch.long)
    gcount = torch.tensor([len(torch.as_tensor(lab).reshape(-1)) for lab in gt_labels], dtype=torch.long)
    dbox = torch.cat([b.reshape(-1, 4) for b in pb]).double() if n else torch.zeros(0, 4, dtype=torch.float64)
    dscore = torch.cat([s.reshape(-1) for s in ps]).double() if n else torch.zeros(0, dtype=torch.float64)
    dlab = torch.cat([lab.reshape(-1) for lab in pl]).long() if n else torch.zeros(0, dtype=torch.long)
    gbox = torch.cat([torch.as_tensor(b).reshape(-1, 4) for b in gt_boxes]).double() if n else torch.zeros(0, 4)
    glab = torch.cat([torch.as_tensor(lab).reshape(-1) for lab in gt_labels]).long() if n else torch.zeros(0).long()
    if len(dbox) != len(dscore) or len(dlab) != len(dscore) or len(gbox) != len(glab):
        raise DataError("evaluate_detections: boxes, scores and labels disagree in length in some image",
                        fix="give k boxes, k scores and k labels per image (and m boxes, m labels of ground truth)")
    if not bool(torch.isfinite(dbox).all() & torch.isfinite(dscore).all()):
        raise DataError("evaluate_detections: predictions contain NaN or infinite values",
                        fix="check the detector's outputs before evaluating")
    k = int(num_classes if num_classes is not None else
            (len(class_names) if class_names else 1 + max(int(dlab.max()) if len(dlab) else 0,
                                                          int(glab.max()) if len(glab) else 0)))
    for name, lab in (("predicted", dlab), ("ground-truth", glab)):
        if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= k):
            raise DataError(f"evaluate_detections: {name} labels outside 0..{k - 1}",
                            fix="labels are class indices; pass num_classes to match")
    dimg = torch.repeat_interleave(torch.arange(n), dcount)
    gimg = torch.repeat_interleave(torch.arange(n), gcount)
    tp, dkeep = _match(dimg * k + dlab, dbox, dscore, gimg * k + glab, gbox, thr, int(max_dets))
    dlab, dscore, dimg = dlab[dkeep], dscore[dkeep], dimg[dkeep]
    num_gt = torch.bincount(glab, minlength=k)
    ap = np.full((len(thr), k), np.nan)
    rec = np.full((len(thr), k), np.nan)
    points = torch.as_tensor(COCO_RECALL_POINTS)
    for c in range(k):
        if int(num_gt[c]) == 0:
            continue
        sel = (dlab == c).nonzero().flatten()
        if sel.numel() == 0:
            ap[:, c], rec[:, c] = 0.0, 0.0
            continue
        # pycocotools: detections of all images concatenated in image order, then a stable sort by -score
        order = sel[torch.argsort(-dscore[sel], stable=True)]
        hits = tp[:, order].double()  # (T, n)
        tps, fps = hits.cumsum(1), (1 - hits).cumsum(1)
        recall = tps / int(num_gt[c])
        precision = tps / (tps + fps)
        precision = precision.flip(1).cummax(1).values.flip(1)  # non-increasing envelope
        idx = torch.searchsorted(recall.contiguous(), points.expand(len(thr), -1).contiguous(), side="left")
        q = torch.where(idx < recall.shape[1], precision.gather(1, idx.clamp(max=recall.shape[1] - 1)),
                        torch.zeros((), dtype=torch.float64))
        ap[:, c], rec[:, c] = q.mean(1).numpy(), recall[:, -1].numpy()

    def mean_at(t: float) -> float:
        hit = np.isclose(thr.numpy(), t)
        return float(np.nanmean(ap[hit])) if hit.any() and np.isfinite(ap[hit]).any() else float("nan")

    total = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
    return DetectionMetrics(total, mean_at(0.5), mean_at(0.75), ap, rec, thr.numpy(), num_gt.numpy(),
                            int(dkeep.sum()), list(class_names) if class_names else [])


def _match(dkey: torch.Tensor, dbox: torch.Tensor, dscore: torch.Tensor, gkey: torch.Tensor, gbox: torch.Tensor,
           thr: torch.Tensor, max_dets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy COCO matching per (image, class) group; returns tp ``(T, kept dets)`` and the kept-det mask."""
    t_count, nd = len(thr), len(dkey)
    if nd == 0:
        return torch.zeros(t_count, 0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool)
    # sort by (group, score descending), stable so ties keep the given order
    by_score = torch.argsort(-dscore, stable=True)
    order = by_score[torch.argsort(dkey[by_score], stable=True)]
    groups, ginv, gcounts = torch.unique(dkey[order], return_inverse=True, return_counts=True)
    starts = torch.cumsum(gcounts, 0) - gcounts
    rank = torch.arange(nd) - starts[ginv]
    keep_sorted = rank < max_dets
    d = int(min(int(gcounts.max()), max_dets))
    G = len(groups)
    boxes = torch.zeros(G, d, 4, dtype=torch.float64)
    valid = torch.zeros(G, d, dtype=torch.bool)
    boxes[ginv[keep_sorted], rank[keep_sorted]] = dbox[order][keep_sorted]
    valid[ginv[keep_sorted], rank[keep_sorted]] = True
    # ground truth of the same groups (others can never be matched)
    pos = torch.searchsorted(groups, gkey).clamp(max=G - 1)
    in_group = groups[pos] == gkey if len(gkey) else torch.zeros(0, dtype=torch.bool)
    gg = pos[in_group]
    g_order = torch.argsort(gg, stable=True)
    gg_sorted = gg[g_order]
    m = int(torch.bincount(gg_sorted, minlength=G).max()) if len(gg_sorted) else 0
    g_starts = torch.searchsorted(gg_sorted, torch.arange(G))
    g_rank = torch.arange(len(gg_sorted)) - g_starts[gg_sorted]
    gboxes = torch.zeros(G, max(m, 1), 4, dtype=torch.float64)
    gvalid = torch.zeros(G, max(m, 1), dtype=torch.bool)
    gboxes[gg_sorted, g_rank] = gbox.double()[in_group][g_order]
    gvalid[gg_sorted, g_rank] = True
    iou = box_iou(boxes, gboxes).masked_fill(~gvalid[:, None, :], -1.0)  # (G, d, m)
    matched = torch.zeros(t_count, G, gboxes.shape[1], dtype=torch.bool)
    tp = torch.zeros(t_count, G, d, dtype=torch.bool)
    for r in range(d):
        cand = iou[None, :, r, :].expand(t_count, -1, -1).masked_fill(matched, -1.0)
        best, arg = cand.max(-1)  # (T, G)
        hit = (best >= thr[:, None]) & valid[None, :, r]
        tp[:, :, r] = hit
        matched.scatter_(2, arg[..., None], matched.gather(2, arg[..., None]) | hit[..., None])
    # back to the input order of the detections
    tp_sorted = torch.zeros(t_count, nd, dtype=torch.bool)
    tp_sorted[:, keep_sorted] = tp[:, ginv[keep_sorted], rank[keep_sorted]]
    tp_in = torch.zeros_like(tp_sorted)
    tp_in[:, order] = tp_sorted
    keep = torch.zeros(nd, dtype=torch.bool)
    keep[order] = keep_sorted
    return tp_in[:, keep], keep
