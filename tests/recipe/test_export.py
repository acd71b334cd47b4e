"""Export and prediction hooks: the exported model reloads and matches; the CSV matches the test phase."""

import csv

import pytest
import torch

from classy_fast.config import config_from_dict
from classy_fast.hooks import ExportHook, build_hooks
from classy_fast.hooks.export import load_exported
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still supported
@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_exported_model_reloads_and_gives_the_same_outputs(tmp_path, fmt):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "run", epochs=1, ema={"enabled": True})
    d["hooks"] = {**d["hooks"], "export": {"enabled": True, "format": fmt, "use_ema": fmt == "export"},
                  "predictions": {"enabled": True}}
    cfg = config_from_dict(d, "test")
    task = ClassificationTask(cfg, hooks=build_hooks(cfg))
    result = task.run()
    hook = next(h for h in task.hooks if isinstance(h, ExportHook))
    assert hook.written and hook.written.endswith(".pt2" if fmt == "export" else ".ts")
    exported = load_exported(hook.written)
    reference = next(h for h in task.hooks if h.key == "ema").ema.module if fmt == "export" else task.model.eval()
    images = torch.cat([x for x, _ in task.test_data])[:5]  # 5: a batch size other than the traced one
    with torch.no_grad():
        torch.testing.assert_close(exported(images), reference(images), rtol=1e-5, atol=1e-5)

    rows = list(csv.DictReader(open(tmp_path / "run" / "predictions.csv")))
    assert len(rows) == task.test_data.num_samples and [int(r["id"]) for r in rows] == list(range(len(rows)))
    accuracy = sum(r["predicted"] == r["target"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(result["top1"])


def test_eval_only_run_writes_predictions_of_the_checkpoint(tmp_path):
    torch.set_num_threads(1)
    cfg = config_from_dict(tiny_config_dict(tmp_path / "t", epochs=1), "test")
    trained = ClassificationTask(cfg, hooks=build_hooks(cfg))
    trained.run()
    d = tiny_config_dict(tmp_path / "e", test_only=True)
    d["hooks"] = {**d["hooks"], "predictions": {"enabled": True, "path": str(tmp_path / "p" / "preds.csv")}}
    cfg = config_from_dict(d, "test")
    evaluator = ClassificationTask(cfg, hooks=build_hooks(cfg))
    evaluator.load_state_dict(torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=True),
                              weights_only=True)
    result = evaluator.run()
    rows = list(csv.reader(open(tmp_path / "p" / "preds.csv")))
    assert rows[0] == ["id", "predicted", "target"] and len(rows) == 41
    assert sum(r[1] == r[2] for r in rows[1:]) / 40 == pytest.approx(result["top1"])


def test_eval_only_predictions_do_not_replace_the_training_runs(tmp_path):
    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "t", epochs=1)
    d["hooks"] = {**d["hooks"], "predictions": {"enabled": True}}
    cfg = config_from_dict(d, "test")
    ClassificationTask(cfg, hooks=build_hooks(cfg)).run()
    trained_rows = (tmp_path / "t" / "predictions.csv").read_text()
    cfg = config_from_dict({**d, "test_only": True}, "test")  # same output directory
    evaluator = ClassificationTask(cfg, hooks=build_hooks(cfg))
    evaluator.load_state_dict(torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=True),
                              weights_only=True)
    evaluator.run()
    assert (tmp_path / "t" / "predictions.csv").read_text() == trained_rows
    assert (tmp_path / "t" / "eval_predictions.csv").exists()
