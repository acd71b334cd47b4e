"""torch.compile of forward + loss: no graph break from the fused ops; compiled and eager steps agree (CPU)."""

import pytest
import torch

from classy_fast import ops
from classy_fast.amp import Precision
from classy_fast.config import config_from_dict
from classy_fast.hooks import build_hooks
from classy_fast.losses import FusedCrossEntropyLoss
from classy_fast.performance import ForwardLoss
from classy_fast.task import ClassificationTask

from ..conftest import tiny_config_dict
from . import models


@pytest.mark.parametrize("mixed", [False, True])
def test_fused_losses_do_not_break_the_graph(mixed):
    model = models.BNFreeNet(num_classes=5, in_channels=1)
    forward = ForwardLoss(FusedCrossEntropyLoss(label_smoothing=0.1), Precision("none", torch.device("cpu")))
    images, target = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    if mixed:
        target = (target, target.flip(0), torch.tensor(0.7))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(forward._eager)(model, images, target)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    if ops.extension_available():  # the fused op is a node of the graph, not an opaque call around it
        graph_code = "\n".join(g.code for g in explanation.graphs)
        assert ("mixup_cross_entropy_loss" if mixed else "cross_entropy_loss") in graph_code


def test_compiled_and_eager_training_agree(tmp_path):
    torch.set_num_threads(2)

    def run(name, compile):
        d = tiny_config_dict(tmp_path / name, compile=compile, model={"name": "test_bn_free", "width": 4},
                             mixup={"mixup_alpha": 0.4}, optimizer={"lr": 0.05, "fused": "torch"})
        cfg = config_from_dict(d, "test")
        task = ClassificationTask(cfg, hooks=build_hooks(cfg))
        task.phase = task.phases[0]
        task.model.train()
        task.train_data.resume_at(0, 0)
        losses = []
        for images, target in list(task.train_data)[:3]:
            before = float(task.loss_meter.state["sum"])
            task.train_step(images, target)
            task.step_in_phase += 1
            losses.append((float(task.loss_meter.state["sum"]) - before) / images.shape[0])
        return task, losses

    torch._dynamo.reset()
    eager, eager_losses = run("eager", False)
    compiled, compiled_losses = run("compiled", True)
    assert compiled.forward_loss.compiled and not eager.forward_loss.compiled
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_compile_flag_and_mode_from_the_command_line():
    from classy_fast.train import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--compile", "--set", "compile_mode=max-autotune"]))
    assert cfg.compile and cfg.compile_mode == "max-autotune"
    assert not config_from_args(build_parser().parse_args([])).compile
