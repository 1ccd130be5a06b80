"""The small CenterNet-style detector (robustlab.models.detection): NMS, targets, decoding, training."""

import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.data.scenes import SceneWorld
from robustlab.evaluate.detection import evaluate_detections
from robustlab.models.detection import (
    CenterNet,
    batched_nms,
    box_iou,
    centernet_loss,
    decode,
    detection_targets,
    train_detector,
)


@pytest.fixture(scope="module")
def scenes():
    return SceneWorld().generate(48, seed=3)


def _naive_nms(boxes, scores, labels, thr):
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -float(scores[i])):
        if all(not (labels[j] == labels[i] and float(box_iou(boxes[i:i + 1], boxes[j:j + 1])) > thr) for j in keep):
            keep.append(i)
    return sorted(keep)


def test_batched_nms_closed_form_and_classwise():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1.0, 0, 11, 10], [0.0, 0, 10, 10], [30.0, 30, 40, 40]]])
    scores = torch.tensor([[0.5, 0.9, 0.8, 0.1]])
    labels = torch.tensor([[0, 0, 1, 0]])
    keep = batched_nms(boxes, scores, labels, 0.5)
    assert keep.tolist() == [[False, True, True, True]]  # box 0 overlaps the better box 1 of its class
    valid = torch.tensor([[True, False, True, True]])
    assert batched_nms(boxes, scores, labels, 0.5, valid).tolist() == [[True, False, True, True]]


def test_batched_nms_equals_greedy_reference_on_random_batches():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 30, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + 5 + torch.rand(3, 30, 2, generator=g) * 10], -1)
    scores, labels = torch.rand(3, 30, generator=g), torch.randint(0, 2, (3, 30), generator=g)
    keep = batched_nms(boxes, scores, labels, 0.4)
    for b in range(3):
        assert keep[b].nonzero().flatten().tolist() == _naive_nms(boxes[b], scores[b], labels[b], 0.4)
    with pytest.raises(DataError, match="batched_nms"):
        batched_nms(boxes[0], scores[0], labels[0])


def test_targets_peak_at_centres_and_decode_back_to_the_boxes(scenes):
    t = detection_targets(scenes.boxes, scenes.labels, 8, (64, 64))
    assert t["heatmap"].shape == (48, 8, 16, 16) and t["size"].shape == (48, 2, 16, 16)
    assert float(t["heatmap"].max()) == 1.0 and float(t["heatmap"].min()) >= 0
    assert int(t["mask"].sum()) == scenes.num_objects  # every object has its own centre cell
    assert int(t["heatmap"].eq(1).sum()) == scenes.num_objects
    # ideal head maps (the targets as logits) decode to the exact boxes: mAP 1
    logit = torch.logit(t["heatmap"].clamp(1e-6, 1 - 1e-6))
    pred = decode({"heatmap": logit, "size": t["size"], "offset": t["offset"]}, image_size=(64, 64))
    m = evaluate_detections(pred, scenes.boxes, scenes.labels, num_classes=8)
    assert m.map == pytest.approx(1.0, abs=1e-6)


def test_forward_shapes_loss_and_errors():
    model = CenterNet(width=4, head_width=8)
    out = model(torch.rand(2, 3, 32, 48))
    assert out["heatmap"].shape == (2, 8, 8, 12) and out["size"].shape == (2, 2, 8, 12)
    with pytest.raises(ConfigError):
        CenterNet(width=0)
    with pytest.raises(DataError, match="multiple of 4"):
        model.predict(torch.rand(1, 3, 30, 30))
    with pytest.raises(DataError, match=r"\(N, 3, H, W\)"):
        model.predict(torch.rand(1, 1, 32, 32))


def test_training_is_seeded_lowers_the_loss_and_predicts_lists(scenes):
    a, b = CenterNet(width=4, head_width=8), CenterNet(width=4, head_width=8)
    sub = scenes.subset(slice(0, 24))
    ha = train_detector(a, sub.x, sub.boxes, sub.labels, epochs=3, batch_size=8, lr=1e-2, progress=False)
    train_detector(b, sub.x, sub.boxes, sub.labels, epochs=3, batch_size=8, lr=1e-2, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha["loss"][-1] < ha["loss"][0]
    pred = a.predict(scenes.x[:5], max_dets=10)
    assert len(pred) == 5
    for boxes, scores, labels in pred:
        assert boxes.shape == (len(scores), 4) and labels.dtype == torch.long and len(scores) <= 10
        assert bool((scores[:-1] >= scores[1:]).all()) and bool((boxes >= 0).all() & (boxes <= 64).all())
    t = detection_targets(scenes.boxes, scenes.labels, 8, (64, 64))
    assert torch.isfinite(centernet_loss(a(scenes.x[:4]), {k: v[:4] for k, v in t.items()}))
    with pytest.raises(DataError, match="box sets"):
        train_detector(a, scenes.x, scenes.boxes[:-1], scenes.labels, epochs=1, progress=False)
