import math

import pytest
import torch

from classy_fast.config import ConfigError, SchedulerConfig
from classy_fast.schedulers import LearningRateController, build_schedule


def sched(epochs=10, **kw):
    kw.setdefault("warmup_epochs", 0.0)
    return build_schedule(SchedulerConfig(**kw), epochs)


def test_constant_step_multistep():
    assert sched(name="constant")(0.7) == 1.0
    s = sched(name="step", step_size_epochs=3, gamma=0.5)
    assert [s(w) for w in (0.0, 0.29, 0.3, 0.6, 0.95)] == pytest.approx([1, 1, 0.5, 0.25, 0.125])
    m = sched(name="multistep", milestones_epochs=[2, 7], gamma=0.1)
    assert [m(w) for w in (0.1, 0.2, 0.5, 0.7, 0.99)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])


def test_step_milestones_stay_at_their_epochs_after_a_warmup():
    """Goyal et al.: warm up 5 epochs, decay at epochs 30, 60, 80 of 90, not at rescaled points."""
    m = sched(epochs=90, name="multistep", milestones_epochs=[30, 60, 80], warmup_epochs=5, gamma=0.1)
    assert [m(e / 90) for e in (5, 29.99, 30, 59.99, 60, 80)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001])
    s = sched(epochs=10, name="step", step_size_epochs=5, warmup_epochs=1, gamma=0.1)
    assert [s(e / 10) for e in (1, 4.99, 5, 9.99)] == pytest.approx([1, 1, 0.1, 0.1])


def test_cosine_linear_polynomial():
    c = sched(name="cosine", end_factor=0.1)
    assert c(0.0) == pytest.approx(1.0) and c(1.0) == pytest.approx(0.1)
    assert c(0.5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert sched(name="linear", end_factor=0.0)(0.25) == pytest.approx(0.75)
    assert sched(name="polynomial", power=2.0, end_factor=0.0)(0.5) == pytest.approx(0.25)


def test_warmup_then_cosine():
    s = sched(epochs=10, name="cosine", warmup_epochs=2, warmup_start_factor=0.1)
    assert s(0.0) == pytest.approx(0.1)
    assert s(0.1) == pytest.approx(0.55)  # halfway through warmup
    assert s(0.2) == pytest.approx(1.0)
    assert s(0.6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ConfigError, match="warmup"):
        sched(epochs=2, name="cosine", warmup_epochs=2)


def test_composite():
    s = sched(name="composite", schedules=[
        {"name": "linear", "length": 0.25, "end_factor": 0.5},
        {"name": "constant", "length": 0.75},
    ])
    assert s(0.0) == pytest.approx(1.0) and s(0.125) == pytest.approx(0.75) and s(0.9) == 1.0
    with pytest.raises(ConfigError, match="add up to 1"):
        sched(name="composite", schedules=[{"name": "constant", "length": 0.5}])
    with pytest.raises(ConfigError, match=r"unknown key 'scheduler\.schedules\[0\]\.gama'"):
        sched(name="composite", schedules=[{"name": "constant", "length": 1.0, "gama": 1}])


def test_controller_writes_device_tensor_in_place():
    p = torch.nn.Parameter(torch.zeros(2))
    lr = torch.tensor(0.4)
    opt = torch.optim.SGD([{"params": [p], "lr": lr, "base_lr": 0.4}], lr=0.4)
    ctl = LearningRateController(opt, sched(epochs=2, name="linear", end_factor=0.0), 2, updates_per_epoch=5)
    ctl.set_for_update(5)  # halfway
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.2)
    epoch_ctl = LearningRateController(opt, sched(epochs=2, name="linear", end_factor=0.0), 2, 5, "epoch")
    epoch_ctl.set_for_update(4)
    assert lr.item() == pytest.approx(0.4)
    epoch_ctl.set_for_update(7)
    assert lr.item() == pytest.approx(0.2)


def test_logged_lr_is_the_one_the_phase_trained_with(tmp_path):
    """A per-epoch linear decay from 0.05 over 3 epochs trains at 0.05, 0.0333, 0.0167: the train rows say so
    (the device lr tensor already holds the next update's value when a phase ends)."""
    import json

    from classy_fast.config import config_from_dict
    from classy_fast.task import ClassificationTask

    from ..conftest import tiny_config_dict

    torch.set_num_threads(1)
    d = tiny_config_dict(tmp_path / "run", epochs=3, optimizer={"lr": 0.05},
                         scheduler={"name": "linear", "update_interval": "epoch", "warmup_epochs": 0.0})
    ClassificationTask(config_from_dict(d, "test")).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if r["phase_type"] == "train"] == pytest.approx([0.05, 0.05 * 2 / 3, 0.05 / 3])


def test_default_warmup_is_one_epoch_or_a_fifth_of_a_short_run():
    long = build_schedule(SchedulerConfig(name="constant", warmup_start_factor=0.0), 10)
    assert long(0.05) == pytest.approx(0.5) and long(0.1) == pytest.approx(1.0)  # 1 epoch of 10
    short = build_schedule(SchedulerConfig(name="constant", warmup_start_factor=0.0), 1)
    assert short(0.1) == pytest.approx(0.5) and short(0.2) == pytest.approx(1.0)  # a fifth of a 1-epoch run


def epoch_lrs(cfg, epochs):
    """The factor each epoch trains at under update_interval='epoch' (updates_per_epoch=3)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0, "base_lr": 1.0}], lr=1.0)
    ctl = LearningRateController(opt, build_schedule(cfg, epochs), epochs, 3, "epoch")
    return [ctl.lr_of_update(3 * e) for e in range(epochs)]


def test_epoch_interval_warmup_is_whole_epochs():
    """Per-epoch lr updates cannot ramp inside an epoch: a warmup ending inside the first epoch would hold
    all of it at warmup_start_factor. The default is 1 epoch from 5 epochs on, else none; an explicit
    fractional warmup is refused."""
    short = epoch_lrs(SchedulerConfig(name="constant", update_interval="epoch"), 2)
    assert short == [1.0, 1.0]  # the default min(1, 2/5) = 0.4 epoch rounds down to none
    long = epoch_lrs(SchedulerConfig(name="constant", update_interval="epoch", warmup_start_factor=0.1), 5)
    assert long == pytest.approx([0.1, 1.0, 1.0, 1.0, 1.0])  # a 1-epoch warmup
    two = epoch_lrs(SchedulerConfig(name="constant", update_interval="epoch", warmup_epochs=2.0,
                                    warmup_start_factor=0.0), 4)
    assert two == pytest.approx([0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ConfigError, match=r"scheduler\.warmup_epochs must be a whole number .*'epoch', got 0\.5"):
        build_schedule(SchedulerConfig(update_interval="epoch", warmup_epochs=0.5), 4)
    with pytest.raises(ConfigError, match=r"scheduler\.schedules\[0\]\.warmup_epochs must be a whole number"):
        build_schedule(SchedulerConfig(name="composite", update_interval="epoch", warmup_epochs=0, schedules=[
            {"name": "cosine", "length": 1.0, "warmup_epochs": 1.5}]), 4)
    # Per step the fractional default stays.
    assert build_schedule(SchedulerConfig(name="constant", warmup_start_factor=0.0), 2)(0.1) == pytest.approx(0.5)


@pytest.mark.parametrize("kw, message", [
    (dict(name="composite", schedules=[{"name": "linear", "length": 1.0}, {"name": "constant", "length": 0.0}]),
     r"scheduler\.schedules\[1\]\.length must be > 0, got 0\.0"),
    (dict(name="composite", schedules=[{"name": "linear", "length": 1.5}, {"name": "constant", "length": -0.5}]),
     r"scheduler\.schedules\[1\]\.length must be > 0, got -0\.5"),
    (dict(name="composite", schedules=[{"name": "cosine", "length": "one"}]),
     r"key 'scheduler\.schedules\[0\]\.length': expected a number, got 'one'"),
    (dict(name="composite", schedules=[{"name": "polynomial", "length": 1.0, "power": 0}]),
     r"scheduler\.schedules\[0\]\.power must be > 0, got 0"),
    (dict(name="polynomial", power=-1.0), r"scheduler\.power must be > 0, got -1\.0"),
    (dict(name="step", step_size_epochs=0.0), r"scheduler\.step_size_epochs must be > 0"),
    (dict(warmup_epochs=-1.0), r"scheduler\.warmup_epochs must be ≥ 0"),
    (dict(warmup_epochs=1.0, warmup_start_factor=-5.0), r"scheduler\.warmup_start_factor must be in \[0, 1\].*got -5\.0"),
    (dict(warmup_epochs=1.0, warmup_start_factor=1.5), r"scheduler\.warmup_start_factor must be in \[0, 1\]"),
    (dict(name="composite", update_interval="epoch", schedules=[
        {"name": "cosine", "length": 1.0, "update_interval": "step"}]), r"scheduler\.schedules\[0\]\.update_interval"),
])
def test_bad_schedule_options_name_the_key(kw, message):
    kw.setdefault("warmup_epochs", 0.0)
    with pytest.raises(ConfigError, match=message):
        build_schedule(SchedulerConfig(**kw), 10)


def test_bad_schedule_options_are_a_clear_cli_error(tmp_path, capsys):
    from classy_fast import train

    rc = train.main(["--epochs", "1", "--device", "cpu", "--output-dir", str(tmp_path), "--set", "data.name=synthetic",
                     "--set", "data.synthetic_train_size=64", "--batch-size", "16", "--set", "data.synthetic_test_size=16",
                     "--set", "hooks.progress_bar=false", "--set", "scheduler.name=composite",
                     "--set", "scheduler.schedules=[{name: cosine, length: 0.0}, {name: constant, length: 1.0}]"])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: scheduler.schedules[0].length must be > 0, got 0.0")


def test_composite_parts_are_fractions_of_the_run_with_a_warmup():
    """The parts sit at their fraction of the whole run whatever the warmup (as documented); a 'step' part's
    steps are run epochs from the part's start; the warmup ramps to the composite's value where it ends."""
    epochs = 10
    s = build_schedule(SchedulerConfig(name="composite", warmup_epochs=2.0, warmup_start_factor=0.0, schedules=[
        {"name": "constant", "length": 0.5},
        {"name": "step", "length": 0.5, "step_size_epochs": 1.0, "gamma": 0.5},
    ]), epochs)
    assert [s(e / epochs) for e in (1, 2, 4.99, 5, 5.99, 6, 7)] == pytest.approx([0.5, 1, 1, 1, 1, 0.5, 0.25])
    same = build_schedule(SchedulerConfig(name="composite", warmup_epochs=0.0, schedules=[
        {"name": "constant", "length": 0.5},
        {"name": "step", "length": 0.5, "step_size_epochs": 1.0, "gamma": 0.5},
    ]), epochs)
    assert [same(e / epochs) for e in (2, 5, 6, 7, 9.5)] == [s(e / epochs) for e in (2, 5, 6, 7, 9.5)]
    # A curve as the first part: no jump where the warmup ends.
    c = build_schedule(SchedulerConfig(name="composite", warmup_epochs=1.0, warmup_start_factor=0.0,
                                       schedules=[{"name": "cosine", "length": 1.0}]), epochs)
    assert c(0.1 - 1e-9) == pytest.approx(c(0.1)) and c(0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert c(0.05) == pytest.approx(0.5 * c(0.1)) and c(1.0) == pytest.approx(0.0)


def test_composite_part_boundaries_do_not_depend_on_float_rounding_of_the_lengths():
    """0.1 + 0.2 is 0.30000000000000004 in floats: epoch 3 of 10 must still train in the third part (1.0),
    not at the end of the second (0.5), as it does with the lengths 0.3 + 0.7."""
    s = build_schedule(SchedulerConfig(name="composite", update_interval="epoch", warmup_epochs=0.0, schedules=[
        {"name": "constant", "length": 0.1},
        {"name": "linear", "length": 0.2, "end_factor": 0.5},
        {"name": "constant", "length": 0.7},
    ]), 10)
    assert [s(e / 10) for e in range(5)] == pytest.approx([1.0, 1.0, 0.75, 1.0, 1.0])


@pytest.mark.parametrize("name", ["step", "multistep", "cosine"])
def test_a_run_of_zero_epochs_is_a_clear_error(name):
    with pytest.raises(ConfigError, match=r"epochs must be ≥ 1, got 0"):
        build_schedule(SchedulerConfig(name=name, warmup_epochs=1.0), 0)


def test_zero_epochs_with_a_step_schedule_is_a_clear_cli_error(tmp_path, capsys):
    from classy_fast import train

    rc = train.main(["--epochs", "0", "--device", "cpu", "--output-dir", str(tmp_path), "--set", "data.name=synthetic",
                     "--set", "data.synthetic_train_size=64", "--batch-size", "16", "--set", "data.synthetic_test_size=16",
                     "--set", "hooks.progress_bar=false", "--set", "scheduler.name=step"])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: epochs must be ≥ 1, got 0"


@pytest.mark.parametrize("kw, match", [
    (dict(name="step", gamma=-0.1), r"scheduler.gamma must be a finite factor ≥ 0, got -0.1"),
    (dict(name="multistep", gamma=float("nan")), r"scheduler.gamma must be a finite factor ≥ 0, got nan"),
    (dict(name="cosine", end_factor=-1.0), r"scheduler.end_factor must be a finite factor ≥ 0, got -1.0"),
    (dict(name="linear", end_factor=float("inf")), r"scheduler.end_factor must be a finite factor ≥ 0, got inf"),
    (dict(name="multistep", milestones_epochs=[2.0, -1.0]), r"scheduler.milestones_epochs must be epochs ≥ 0"),
])
def test_meaningless_decay_factors_and_milestones_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        build_schedule(SchedulerConfig(warmup_epochs=0.0, **kw), 10)


def test_multistep_milestones_past_the_run_are_warned_about(caplog):
    with caplog.at_level("WARNING", logger="classy_fast"):
        s = build_schedule(SchedulerConfig(name="multistep", warmup_epochs=0.0, milestones_epochs=[5.0, 30.0]), 10)
    assert "milestones_epochs [30.0] are not before the end of the run (10 epochs)" in caplog.text
    assert s(0.4) == 1.0 and s(0.6) == pytest.approx(0.1) and s(0.99) == pytest.approx(0.1)
