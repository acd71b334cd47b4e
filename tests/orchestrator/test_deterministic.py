"""``deterministic: true``: the process-wide switches it sets, and two runs that agree bit for bit."""

import os

import pytest
import torch

from classy_fast.config import config_from_dict
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


@pytest.fixture
def restore_switches(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_run_sets_the_switches_and_repeats_bit_for_bit(tmp_path, restore_switches, device):
    """On CUDA with bf16 autocast too: cuDNN convolutions and BatchNorm, the fused ops, the meters."""
    torch.set_num_threads(1)
    runs = []
    for name in ("a", "b"):
        cfg = config_from_dict(tiny_config_dict(tmp_path / name, epochs=1, deterministic=True, cudnn_benchmark=True,
                                                device=device, amp="bf16" if device == "cuda" else "none"), "test")
        task = ClassificationTask(cfg)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark  # overrides the autotuner
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        task.run()
        runs.append({k: v.clone() for k, v in task.model.state_dict().items()})
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def test_default_run_leaves_determinism_alone(tmp_path, restore_switches):
    torch.use_deterministic_algorithms(True, warn_only=True)  # the user's own choice
    ClassificationTask(config_from_dict(tiny_config_dict(tmp_path / "c", cudnn_benchmark=False), "test"))
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark


def test_tf32_switch_leaves_torchs_legacy_and_new_readers_working():
    """Libraries still read the legacy flags; after fp32_precision writes torch ≥ 2.9 would make them raise."""
    from classy_fast.performance import set_tf32, tf32_enabled

    old = tf32_enabled()
    try:
        for enabled in (True, False):
            set_tf32(enabled)
            assert tf32_enabled() is enabled
            assert torch.backends.cuda.matmul.allow_tf32 is enabled
            assert torch.get_float32_matmul_precision() == ("high" if enabled else "highest")
            assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if enabled else "ieee")
    finally:
        set_tf32(old)
