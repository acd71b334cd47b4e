"""data.auto_augment (TrivialAugment, RandAugment) on the torchvision and DALI backends: the policy changes
training crops only, deterministically per sample (in workers or not, without touching the main
process's random state), labels travel with their images, and pipelines that cannot apply a policy
refuse it naming the setting."""

import pytest
import torch

from classy_fast.config import DataConfig
from classy_fast.data import build_data
from classy_fast.data import image_datasets
from classy_fast.data.auto_augment import AutoAugment
from classy_fast.data.dali_pipeline import dali_import_error

DALI_MISSING = dali_import_error()
needs_dali = pytest.mark.skipif(DALI_MISSING is not None, reason=f"DALI not importable ({DALI_MISSING})")
POLICIES = [("trivial_augment", {}), ("rand_augment", {"auto_augment_ops": 2, "auto_augment_magnitude": 9})]


def build(root, split="train", **kw):
    base = dict(name="image_folder", root=root, backend="torchvision", batch_size=6, test_batch_size=6,
                crop_size=24, resize_size=28, num_workers=0)
    base.update(kw)
    return build_data(DataConfig(**base), split, device=torch.device("cpu"), seed=3)


def first_batches(data, n=2):
    out = []
    for i, batch in enumerate(data):
        if i == n:
            break
        out.append(batch)
    return out


@pytest.mark.parametrize("policy,kw", POLICIES)
@pytest.mark.parametrize("backend", ["torchvision", pytest.param("dali", marks=needs_dali)])
def test_policy_changes_training_crops_only_and_deterministically(image_folder, backend, policy, kw):
    plain = first_batches(build(image_folder, backend=backend))
    augmented = first_batches(build(image_folder, backend=backend, auto_augment=policy, **kw))
    again = first_batches(build(image_folder, backend=backend, auto_augment=policy, **kw))
    for (x0, y0), (x1, y1), (x2, y2) in zip(plain, augmented, again):
        assert x1.shape == x0.shape and x1.dtype == x0.dtype
        assert torch.equal(y0, y1)  # same samples, same order: labels travel with their images
        assert torch.equal(x1, x2) and torch.equal(y1, y2)  # a function of the seeds
    assert any(not torch.equal(x0, x1) for (x0, _), (x1, _) in zip(plain, augmented))
    # Evaluation batches are never augmented.
    test_plain = first_batches(build(image_folder, "test", backend=backend))
    test_aug = first_batches(build(image_folder, "test", backend=backend, auto_augment=policy, **kw))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(test_plain, test_aug))


def test_torchvision_policy_in_workers_equals_main_process_and_keeps_the_rng_state(image_folder):
    # The DataLoader itself draws its base seed from torch's generator; the policy draws nothing from it.
    torch.manual_seed(11)
    first_batches(build(image_folder), 3)
    after_plain = torch.get_rng_state()
    torch.manual_seed(11)
    in_main = first_batches(build(image_folder, auto_augment="trivial_augment"), 3)
    assert torch.equal(torch.get_rng_state(), after_plain)
    in_workers = first_batches(build(image_folder, auto_augment="trivial_augment", num_workers=2), 3)
    for (x0, y0), (x1, y1) in zip(in_main, in_workers):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_pipelines_that_cannot_apply_a_policy_refuse_it(image_folder, monkeypatch):
    with pytest.raises(ValueError, match="data.auto_augment=trivial_augment needs data.backend torchvision or dali"):
        build(image_folder, backend="nvjpeg", auto_augment="trivial_augment")
    with pytest.raises(ValueError, match="in-memory dataset 'synthetic' cannot apply it"):
        build_data(DataConfig(name="synthetic", auto_augment="rand_augment"), "train", device=torch.device("cpu"),
                   seed=0)
    # 'auto' without DALI takes the torchvision backend when a policy is set (nvjpeg on CUDA otherwise).
    monkeypatch.setattr(image_datasets, "dali_import_error", lambda: "not installed")
    policy = AutoAugment("trivial_augment")
    assert image_datasets.choose_backend("auto", torch.device("cuda"), policy) == "torchvision"
    assert image_datasets.choose_backend("auto", torch.device("cuda"), None) == "nvjpeg"
    # With augmentation off the policy is off too (no refusal, nothing applied).
    build_data(DataConfig(name="synthetic", auto_augment="rand_augment", augment=False), "train",
               device=torch.device("cpu"), seed=0)


@pytest.mark.parametrize("kw,match", [
    (dict(policy="auto_augment"), "data.auto_augment must be one of"),
    (dict(policy="rand_augment", num_ops=0), "data.auto_augment_ops must be ≥ 1"),
    (dict(policy="rand_augment", magnitude=31), r"data.auto_augment_magnitude must be in \[0, 30\]"),
])
def test_bad_policy_settings_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        AutoAugment(**kw)
