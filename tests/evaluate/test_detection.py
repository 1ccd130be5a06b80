"""COCO-style mAP (robustlab.evaluate.detection): closed-form cases and a loop-based reference."""

import math

import numpy as np
import pytest
import torch

from robustlab.core.errors import DataError
from robustlab.evaluate.detection import COCO_IOU_THRESHOLDS, box_iou, evaluate_detections


def _gt(seed=0, n=12, k=3):
    g = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(n):
        m = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 40
        wh = 8 + torch.rand(m, 2, generator=g) * 16
        boxes.append(torch.cat([xy, xy + wh], 1))
        labels.append(torch.randint(0, k, (m,), generator=g))
    return boxes, labels


def _perfect(boxes, labels):
    return [(b.clone(), torch.linspace(0.9, 0.5, len(b)), lab.clone()) for b, lab in zip(boxes, labels)]


def test_box_iou_closed_form():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5.0, 0, 15, 10], [20.0, 20, 30, 30], [0.0, 0, 5, 5]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1.0, 50 / 150, 0.0, 0.25]]))


def test_perfect_detections_score_one():
    boxes, labels = _gt()
    m = evaluate_detections(_perfect(boxes, labels), boxes, labels, num_classes=3)
    assert m.map == pytest.approx(1.0) and m.map50 == pytest.approx(1.0) and m.map75 == pytest.approx(1.0)
    assert np.allclose(m.recall, 1.0)


def test_shifted_boxes_lower_map_monotonically_with_iou():
    boxes, labels = _gt(1)
    maps, maps50 = [], []
    for shift in (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0):
        pred = [(b + shift, s, lab) for b, s, lab in _perfect(boxes, labels)]
        m = evaluate_detections(pred, boxes, labels, num_classes=3)
        maps.append(m.map)
        maps50.append(m.map50)
    assert maps[0] == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(maps, maps[1:]))
    assert maps[-1] < 0.2 and 0.5 < maps[1] < 1.0 and maps[3] < maps[1]
    assert maps50[1] == pytest.approx(1.0)  # half a pixel keeps IoU > .5 for 8..24 px boxes


def test_duplicate_detections_are_false_positives_closed_form():
    boxes = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 20, 30, 30]])]
    labels = [torch.tensor([0]), torch.tensor([0])]
    pred = [(torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 0])),
            (torch.tensor([[20.0, 20, 30, 30]]), torch.tensor([0.7]), torch.tensor([0]))]
    m = evaluate_detections(pred, boxes, labels, num_classes=1)
    # TP, FP, TP: precision envelope 1 up to recall .5 (51 points), 2/3 above (50 points)
    assert m.map50 == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert m.map == pytest.approx(m.map50)
    lower = [(b, torch.tensor([0.9, 0.1])[: len(s)] if len(s) == 2 else s, lab) for b, s, lab in pred]
    assert evaluate_detections(lower, boxes, labels, num_classes=1).map50 == pytest.approx(1.0)


def test_classes_without_ground_truth_are_left_out_and_missed_classes_score_zero():
    boxes = [torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]])]
    labels = [torch.tensor([0, 1])]
    pred = [(torch.tensor([[0.0, 0, 10, 10], [40.0, 40, 50, 50]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 2]))]
    m = evaluate_detections(pred, boxes, labels, num_classes=3, class_names=["a", "b", "c"])
    assert m.ap[0, 0] == pytest.approx(1.0) and m.ap[0, 1] == 0.0 and math.isnan(m.ap[0, 2])
    assert m.map == pytest.approx(0.5)
    assert m.per_class()["a"] == pytest.approx(1.0) and math.isnan(m.per_class()["c"])


def _reference(pred, gt_boxes, gt_labels, k, thrs, max_dets=100):
    """pycocotools' evaluateImg + accumulate, literally, with Python loops (no crowd, no area ranges)."""
    aps = np.full((len(thrs), k), np.nan)
    for c in range(k):
        npig = sum(int((lab == c).sum()) for lab in gt_labels)
        if npig == 0:
            continue
        for ti, t in enumerate(thrs):
            scores, tps = [], []
            for (b, s, lab), gb, gl in zip(pred, gt_boxes, gt_labels):
                d = [i for i in np.argsort(-s.numpy(), kind="mergesort") if int(lab[i]) == c][:max_dets]
                g = [j for j in range(len(gl)) if int(gl[j]) == c]
                used = set()
                for i in d:
                    best, m = min(t, 1 - 1e-10), -1
                    for j in g:
                        if j in used:
                            continue
                        iou = float(box_iou(b[i:i + 1].double(), gb[j:j + 1].double()))
                        if iou < best:
                            continue
                        best, m = iou, j
                    if m >= 0:
                        used.add(m)
                    scores.append(float(s[i]))
                    tps.append(m >= 0)
            order = np.argsort(-np.array(scores), kind="mergesort")
            tp = np.cumsum(np.array(tps, dtype=float)[order]) if scores else np.zeros(0)
            fp = np.cumsum(1 - np.array(tps, dtype=float)[order]) if scores else np.zeros(0)
            rc, pr = tp / npig, tp / np.maximum(tp + fp, np.spacing(1))
            pr = pr.tolist()
            for i in range(len(pr) - 1, 0, -1):
                pr[i - 1] = max(pr[i - 1], pr[i])
            q = np.zeros(101)
            for ri, pi in enumerate(np.searchsorted(rc, np.linspace(0, 1, 101), side="left")):
                if pi < len(pr):
                    q[ri] = pr[pi]
            aps[ti, c] = q.mean()
    return aps


def test_matches_a_loop_based_coco_reference_on_random_detections():
    boxes, labels = _gt(2, n=10, k=3)
    g = torch.Generator().manual_seed(5)
    pred = []
    for b, lab in zip(boxes, labels):
        jitter = b + torch.randn(b.shape, generator=g) * 2.5
        extra = torch.rand(3, 2, generator=g) * 40
        fake = torch.cat([extra, extra + 10], 1)
        pb = torch.cat([jitter, jitter + 1.0, fake])
        pl = torch.cat([lab, lab, torch.randint(0, 3, (3,), generator=g)])
        pred.append((pb, torch.rand(len(pb), generator=g), pl))
    m = evaluate_detections(pred, boxes, labels, num_classes=3)
    ref = _reference(pred, boxes, labels, 3, COCO_IOU_THRESHOLDS)
    assert np.allclose(m.ap, ref, equal_nan=True)
    capped = evaluate_detections(pred, boxes, labels, num_classes=3, max_dets=1)
    assert np.allclose(capped.ap, _reference(pred, boxes, labels, 3, COCO_IOU_THRESHOLDS, max_dets=1), equal_nan=True)


def test_bad_inputs_raise_clear_errors():
    boxes, labels = _gt()
    with pytest.raises(DataError, match="one prediction"):
        evaluate_detections(_perfect(boxes, labels)[:-1], boxes, labels)
    with pytest.raises(DataError, match="labels outside"):
        evaluate_detections(_perfect(boxes, labels), boxes, labels, num_classes=2)
    with pytest.raises(DataError, match="iou_thresholds"):
        evaluate_detections(_perfect(boxes, labels), boxes, labels, iou_thresholds=[1.5])
    bad = [(b, s * float("nan"), lab) for b, s, lab in _perfect(boxes, labels)]
    with pytest.raises(DataError, match="NaN"):
        evaluate_detections(bad, boxes, labels, num_classes=3)


def test_empty_predictions_score_zero():
    boxes, labels = _gt()
    empty = [(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)) for _ in boxes]
    m = evaluate_detections(empty, boxes, labels, num_classes=3)
    assert m.map == 0.0 and m.num_dets == 0
