import math
import os

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


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_loss_meter_names_the_first_step_of_any_nonfinite_kind(bad):
    m = LossMeter("cpu")
    step = torch.zeros((), dtype=torch.int64)
    for value in (0.0, -1e30, bad, 1.0, float("nan")):
        step += 1
        m.update_loss(torch.tensor(value), 3, step)
    assert m.first_nonfinite_step() == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accuracy_matches_a_per_sample_count_on_random_batches(dtype):
    g = torch.Generator().manual_seed(0)
    topk, classes = [1, 3, 5, 12], 10
    m = AccuracyMeter(topk, classes, "cpu")
    expected, total = {k: 0 for k in topk}, 0
    for batch in (1, 7, 64):
        logits = torch.randn(batch, classes, generator=g).to(dtype)
        target = torch.randint(0, classes, (batch,), generator=g)
        m.update(logits, target)
        order = logits.float().argsort(dim=1, descending=True, stable=True).tolist()
        for row, label in zip(order, target.tolist()):
            for k in topk:
                expected[k] += label in row[:k]
        total += batch
    assert m.value() == pytest.approx({f"top{k}": expected[k] / total for k in topk})


def test_meter_state_round_trip():
    a = AccuracyMeter([1, 2], 4, "cpu")
    a.update(LOGITS, TARGET)
    b = AccuracyMeter([1, 2], 4, "cpu")
    b.load_state_dict(a.state_dict())
    assert b.value() == a.value()
    b.sync()  # single process: a no-op
    assert b.value() == a.value()


def test_first_nonfinite_step_checkpoint_state_keeps_minus_one_for_none():
    m = LossMeter("cpu")
    step = torch.ones((), dtype=torch.int64)
    m.update_loss(torch.tensor(1.0), 2, step)
    assert int(m.state_dict()["first_nonfinite_step"]) == -1  # the saved format is unchanged
    m2 = LossMeter("cpu")
    m2.load_state_dict({**m.state_dict(), "first_nonfinite_step": torch.tensor(-1)})  # an older checkpoint
    step.fill_(2)
    m2.update_loss(torch.tensor(float("nan")), 2, step)
    assert m2.first_nonfinite_step() == 2
    m3 = LossMeter("cpu")
    m3.load_state_dict(m2.state_dict())
    step.fill_(3)
    m3.update_loss(torch.tensor(float("nan")), 2, step)
    assert m3.first_nonfinite_step() == 2  # the first one stays


def _nonfinite_rank(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = LossMeter("cpu")
        step = torch.zeros((), dtype=torch.int64)
        bad_from = {0: 7, 1: 3, 2: None}[rank]  # rank 1 goes non-finite first (step 3), rank 0 at 7, rank 2 never
        for s in range(1, 11):
            step.fill_(s)
            bad = bad_from is not None and s >= bad_from
            m.update_loss(torch.tensor(float("nan") if bad else 1.0), 4, step)
        saved = m.state_dict()  # mid-phase under DDP: the global state, a collective
        m.sync()
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(f"{m.first_nonfinite_step()} {int(saved['first_nonfinite_step'])}")
    finally:
        dist.destroy_process_group()


def test_first_nonfinite_step_is_the_earliest_over_ranks(tmp_path):
    """Under DDP the report names the earliest non-finite step of any rank (an all-reduce MIN), not the latest."""
    import torch.multiprocessing as mp

    mp.spawn(_nonfinite_rank, args=(3, str(tmp_path / "store"), str(tmp_path)), nprocs=3)
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(3)] == ["3 3"] * 3


def test_precision_at_k_above_the_class_count_caps_k_like_accuracy():
    """precision@7 of 4 classes is over the 4 classes top-7 can hold: perfect multi-hot targets give 1.0 at
    k = C and at any k > C (the uncapped k gave 4/7), as accuracy's top-7 = top-4."""
    target = torch.ones(3, 4)
    p = PrecisionRecallAtKMeter([4, 7], 4, "cpu", "precision")
    p.update(LOGITS, target)
    assert p.value() == pytest.approx({"precision@4": 1.0, "precision@7": 1.0})
    r = PrecisionRecallAtKMeter([7], 4, "cpu", "recall")
    r.update(LOGITS, target)
    assert r.value() == pytest.approx({"recall@7": 1.0})
