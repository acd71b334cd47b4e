import math

import pytest
import torch

from classy_fast.meters import AccuracyMeter, LossMeter, PrecisionRecallAtKMeter

LOGITS = torch.tensor([
    [0.1, 0.5, 0.2, 0.9],   # ranking 3, 1, 2, 0
    [0.8, 0.1, 0.3, 0.2],   # ranking 0, 2, 3, 1
    [0.2, 0.3, 0.4, 0.1],   # ranking 2, 1, 0, 3
])
TARGET = torch.tensor([1, 0, 3])  # ranks: 2nd, 1st, 4th


def test_accuracy_topk_hand_computed():
    m = AccuracyMeter([1, 2, 3], num_classes=4, device="cpu")
    m.update(LOGITS, TARGET)
    assert m.value() == pytest.approx({"top1": 1 / 3, "top2": 2 / 3, "top3": 2 / 3})
    m.update(LOGITS[:1], torch.tensor([3]))
    assert m.value() == pytest.approx({"top1": 2 / 4, "top2": 3 / 4, "top3": 3 / 4})


def test_accuracy_k_larger_than_classes_and_soft_targets():
    m = AccuracyMeter([1, 5], num_classes=4, device="cpu")
    soft = torch.nn.functional.one_hot(TARGET, 4).float() * 0.7 + 0.075  # argmax is still TARGET
    m.update(LOGITS, soft)
    assert m.value() == pytest.approx({"top1": 1 / 3, "top5": 1.0})


def test_precision_and_recall_at_k_multi_hot():
    target = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
    p = PrecisionRecallAtKMeter([1, 2], 4, "cpu", "precision")
    r = PrecisionRecallAtKMeter([1, 2], 4, "cpu", "recall")
    for m in (p, r):
        m.update(LOGITS, target)
    # top-1 hits: row0 3✓, row1 0✓, row2 2✗ → 2; top-2 hits: row0 {3,1} 2, row1 {0,2} 1, row2 {2,1} 0 → 3
    assert p.value() == pytest.approx({"precision@1": 2 / 3, "precision@2": 3 / 6})
    assert r.value() == pytest.approx({"recall@1": 2 / 4, "recall@2": 3 / 4})


def test_loss_meter_mean_and_first_nonfinite_step():
    m = LossMeter("cpu")
    step = torch.zeros((), dtype=torch.int64)
    for value, bs in [(2.0, 4), (1.0, 2)]:
        step += 1
        m.update_loss(torch.tensor(value), bs, step)
    assert m.value()["loss"] == pytest.approx((8 + 2) / 6)
    assert m.first_nonfinite_step() == -1
    for value in (float("nan"), float("inf")):
        step += 1
        m.update_loss(torch.tensor(value), 1, step)
    assert m.first_nonfinite_step() == 3 and math.isnan(m.value()["loss"])
    m.reset()
    assert m.first_nonfinite_step() == -1 and math.isnan(m.value()["loss"])


def test_meter_state_round_trip():
    a = AccuracyMeter([1, 2], 4, "cpu")
    a.update(LOGITS, TARGET)
    b = AccuracyMeter([1, 2], 4, "cpu")
    b.load_state_dict(a.state_dict())
    assert b.value() == a.value()
    b.sync()  # single process: a no-op
    assert b.value() == a.value()
