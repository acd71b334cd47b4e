"""The configs shipped in configs/ stay valid as the config schema changes, and the ImageNet recipe (which
no CI machine can run for real) trains end to end on a generated image folder with its own settings:
TrivialAugment, random erasing, Mixup/CutMix, EMA with best.pt by top1_ema, a larger evaluation crop."""

import json
from pathlib import Path

import pytest

from classy_fast.config import load_config
from classy_fast.train import main
from tests.data.conftest import make_image_folder

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "imagenet_resnet50.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads(path):
    cfg = load_config(str(path))
    assert cfg.epochs >= 1


def test_imagenet_recipe_trains_on_a_small_folder(tmp_path):
    root = make_image_folder(str(tmp_path / "images"))
    out = tmp_path / "run"
    rc = main(["--config", str(CONFIG_DIR / "imagenet_resnet50.yaml"), "--epochs", "1", "--device", "cpu",
               "--output-dir", str(out), "--set", f"data.root={root}", "--set", "data.backend=torchvision",
               "--set", "data.crop_size=32", "--set", "data.test_crop_size=40", "--set", "data.resize_size=44",
               "--set", "data.batch_size=4", "--set", "data.test_batch_size=4", "--set", "data.num_workers=0",
               "--set", "scheduler.warmup_epochs=0", "--set", "hooks.log_interval=2"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in records if r["phase_type"] == "test"][-1]
    assert "top1_ema" in test and 0.0 <= test["top1"] <= 1.0
    assert (out / "checkpoints" / "best.pt").exists()
