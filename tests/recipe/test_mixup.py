"""Mixup / CutMix: hand-computed outputs, dominant-target ordering, label sums, determinism, the losses."""

import pytest
import torch
import torch.nn.functional as F

from classy_fast.data.memory import InMemoryImageData
from classy_fast.losses import FusedCrossEntropyLoss
from classy_fast.mixup import MixDraw, Mixup, MixupBatches, mixed_soft_targets, sample_beta
from classy_fast.recipe_config import MixupConfig


def images_2x4x4():
    x0 = torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    x1 = 100.0 + torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    return torch.stack([x0, x1]), torch.tensor([0, 1])


def no_box(n):
    z = torch.zeros(n, dtype=torch.int64)
    return z, z, z, z


def test_mixup_by_hand():
    x, y = images_2x4x4()
    mix = Mixup(MixupConfig(mixup_alpha=0.2))
    out, (a, b, lam) = mix.apply(x, y, MixDraw(torch.tensor([0.7]), torch.tensor([False]), no_box(1)))
    torch.testing.assert_close(out[0], 0.7 * x[0] + 0.3 * x[1])
    torch.testing.assert_close(out[1], 0.7 * x[1] + 0.3 * x[0])
    assert a.tolist() == [0, 1] and b.tolist() == [1, 0] and lam.ndim == 0 and float(lam) == pytest.approx(0.7)


def test_mixup_makes_target_a_the_dominant_class():
    x, y = images_2x4x4()
    mix = Mixup(MixupConfig(mixup_alpha=0.2))
    out, (a, b, lam) = mix.apply(x, y, MixDraw(torch.tensor([0.3]), torch.tensor([False]), no_box(1)))
    torch.testing.assert_close(out[0], 0.3 * x[0] + 0.7 * x[1])  # mostly image 1 ...
    assert a.tolist() == [1, 0] and b.tolist() == [0, 1]  # ... so its class is target_a
    assert float(lam) == pytest.approx(0.7)


def test_cutmix_by_hand():
    x, y = images_2x4x4()
    mix = Mixup(MixupConfig(cutmix_alpha=1.0))
    box = tuple(torch.tensor([v]) for v in (1, 3, 1, 3))  # rows 1-2, columns 1-2: 4 of 16 pixels
    out, (a, b, lam) = mix.apply(x, y, MixDraw(torch.tensor([0.75]), torch.tensor([True]), box))
    expected0 = x[0].clone()
    expected0[:, 1:3, 1:3] = x[1][:, 1:3, 1:3]
    expected1 = x[1].clone()
    expected1[:, 1:3, 1:3] = x[0][:, 1:3, 1:3]
    torch.testing.assert_close(out[0], expected0)
    torch.testing.assert_close(out[1], expected1)
    assert a.tolist() == [0, 1] and float(lam) == pytest.approx(0.75)


def test_pair_mode_by_hand():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    y = torch.tensor([0, 1, 2, 3])
    mix = Mixup(MixupConfig(mixup_alpha=0.2, mode="pair"))
    out, (a, b, lam) = mix.apply(x, y, MixDraw(torch.tensor([0.8, 0.4]), torch.tensor([False, False]), no_box(2)))
    # pairs (0, 3) with λ 0.8 and (1, 2) with λ 0.4; samples 1 and 2 are mostly their partner, so they swap
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.8 * 0 + 0.2 * 3, 0.4 * 1 + 0.6 * 2,
                                                              0.4 * 2 + 0.6 * 1, 0.8 * 3 + 0.2 * 0]))
    assert a.tolist() == [0, 2, 1, 3] and b.tolist() == [3, 1, 2, 0]
    torch.testing.assert_close(lam, torch.tensor([0.8, 0.6, 0.6, 0.8]))


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_drawn_mixes_have_labels_summing_to_one_and_consistent_lambda(mode, alphas):
    n, h, w = 7, 10, 12
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, h, w).clone()
    y = torch.arange(n)
    mix = Mixup(MixupConfig(mixup_alpha=alphas[0], cutmix_alpha=alphas[1], mode=mode, prob=0.8))
    for seed in range(20):
        out, (a, b, lam) = mix(x, y, torch.Generator().manual_seed(seed))
        soft = mixed_soft_targets(a, b, lam, n)
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(n))
        lam_rows = lam.expand(n)
        assert bool(((lam_rows >= 0.5) & (lam_rows <= 1.0)).all())
        # Each output is a blend of exactly its own image and its mirror partner with weight λ on target_a's image.
        own_a = x[a, 0, 0, 0].view(n, 1, 1)
        own_b = x[b, 0, 0, 0].view(n, 1, 1)
        if alphas[0] == 0.0:  # CutMix only: λ is the fraction of pixels from target_a's image
            from_a = (out[:, 0] == own_a).float().mean(dim=(1, 2))
            same = a == b  # odd batch: the middle sample is its own partner
            torch.testing.assert_close(torch.where(same, 1.0, from_a), torch.where(same, 1.0, lam_rows))
        elif alphas[1] == 0.0:  # Mixup only: out = λ·x_a + (1-λ)·x_b everywhere
            expected = lam_rows.view(n, 1, 1) * own_a + (1 - lam_rows.view(n, 1, 1)) * own_b
            torch.testing.assert_close(out[:, 0], expected.expand(n, h, w))


def test_beta_draws_from_a_generator():
    a = sample_beta(0.4, 20000, torch.Generator().manual_seed(1), torch.device("cpu"))
    b = sample_beta(0.4, 20000, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.equal(a, b)
    assert float(a.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(a.var()) == pytest.approx(1 / (4 * (2 * 0.4 + 1)), rel=0.05)


def test_mixed_batches_are_a_function_of_seed_epoch_and_position():
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40) % 5

    def batches(start):
        data = InMemoryImageData(images, labels, num_classes=5, batch_size=8, train=True, mean=(0.5,), std=(0.25,),
                                 device=torch.device("cpu"), seed=3)
        mixed = MixupBatches(data, Mixup(MixupConfig(mixup_alpha=0.4, cutmix_alpha=1.0)), seed=3)
        mixed.resume_at(epoch=1, batch_index=start)
        return list(mixed)

    full, resumed = batches(0), batches(2)
    assert len(full) == 5 and len(resumed) == 3
    for (x1, t1), (x2, t2) in zip(full[2:], resumed):
        assert torch.equal(x1, x2) and all(torch.equal(u, v) for u, v in zip(t1, t2))
    assert not torch.equal(full[0][0], full[1][0])


def test_losses_of_mixed_targets():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, requires_grad=True)
    a, b = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 3, 2, 1, 0, 1])
    loss = FusedCrossEntropyLoss(label_smoothing=0.1)
    # One λ (batch mode): the mixup kernel (or its reference) equals CE against the mixed soft target.
    lam = torch.tensor(0.7)
    expected = F.cross_entropy(logits, mixed_soft_targets(a, b, lam, 5), label_smoothing=0.1)
    torch.testing.assert_close(loss(logits, (a, b, lam)), expected)
    # A λ per sample (pair/elem modes): dense soft targets, the per-sample weighted sum of both CEs.
    lam = torch.tensor([0.9, 0.6, 0.5, 0.6, 0.9, 0.75])
    per_sample = lam * F.cross_entropy(logits, a, label_smoothing=0.1, reduction="none") + \
        (1 - lam) * F.cross_entropy(logits, b, label_smoothing=0.1, reduction="none")
    value = loss(logits, (a, b, lam))
    torch.testing.assert_close(value, per_sample.mean())
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
