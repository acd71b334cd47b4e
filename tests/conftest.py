"""Shared fixtures: a tiny, fast run configuration on synthetic data."""

from __future__ import annotations

import pytest
import torch

from classy_fast.config import TrainConfig, config_from_dict


def tiny_config_dict(output_dir: str, **top) -> dict:
    d = {
        "epochs": 2,
        "device": "cpu",
        "amp": "none",
        "seed": 3,
        "output_dir": str(output_dir),
        "model": {"name": "small_resnet", "width": 4},
        "data": {"name": "synthetic", "synthetic_train_size": 96, "synthetic_test_size": 40, "image_size": 12,
                 "num_classes": 6, "channels": 1, "batch_size": 16, "test_batch_size": 16},
        "optimizer": {"lr": 0.05},
        "scheduler": {"warmup_epochs": 0.5},
        "hooks": {"progress_bar": False, "log_interval": 2, "model_complexity": False},
    }
    d.update(top)
    return d


@pytest.fixture
def tiny_cfg(tmp_path) -> TrainConfig:
    torch.set_num_threads(1)
    return config_from_dict(tiny_config_dict(tmp_path / "run"), "tiny")
