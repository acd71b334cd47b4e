"""The throughput benchmark runs end to end on CPU (a smoke test: figures are not asserted)."""

import json

from classy_fast.bench import main


def test_bench_cpu_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--model", "small_resnet", "--image-size", "16", "--batch-size", "8", "--num-classes", "5",
                 "--amp", "none", "--steps", "2", "--windows", "2", "--warmup", "1", "--device", "cpu",
                 "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["results"]) == {"baseline", "eager"} and record["device"] == "cpu"
    for r in record["results"].values():
        assert r["images_per_sec"] > 0 and len(r["windows"]) == 2
    assert record["results"]["baseline"]["ratio_to_baseline"] == 1.0
    assert "vs baseline" in capsys.readouterr().out


def test_bench_cpu_compile_mode_reports_its_warmup(tmp_path):
    """--compile adds the compiled task step; its warm-up (where compilation happens) is reported apart."""
    out = tmp_path / "bench.json"
    assert main(["--model", "small_resnet", "--image-size", "16", "--batch-size", "8", "--num-classes", "5",
                 "--amp", "none", "--steps", "2", "--windows", "1", "--warmup", "1", "--device", "cpu",
                 "--compile", "--modes", "baseline,compile", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"baseline", "compile"}
    assert results["compile"]["images_per_sec"] > 0
    assert results["compile"]["warmup_s"] > results["baseline"]["warmup_s"]


def test_bench_keeps_the_figures_of_other_modes_when_one_fails(tmp_path, monkeypatch, capsys):
    """A mode that raises is recorded with its error (exit 1); the JSON, rewritten after every mode,
    still holds the modes that ran (gpu_check reads it after a failure or a timeout)."""
    import classy_fast.bench as bench

    def broken_task(*args, **kwargs):
        raise RuntimeError("capture failed\nsecond line")

    monkeypatch.setattr(bench, "classy_task", broken_task)
    out = tmp_path / "bench.json"
    assert main(["--model", "small_resnet", "--image-size", "16", "--batch-size", "8", "--num-classes", "5",
                 "--amp", "none", "--steps", "2", "--windows", "1", "--warmup", "1", "--device", "cpu",
                 "--modes", "eager,baseline", "--json", str(out)]) == 1
    results = json.loads(out.read_text())["results"]
    assert results["eager"] == {"error": "RuntimeError: capture failed"}
    assert results["baseline"]["images_per_sec"] > 0 and results["baseline"]["ratio_to_baseline"] == 1.0
    printed = capsys.readouterr().out
    assert "eager           failed: RuntimeError: capture failed" in printed and "baseline" in printed


# ---- argument validation: every refusal is argparse-style (exit 2) and comes before any timing ----

_SMALL = ["--model", "small_resnet", "--image-size", "16", "--batch-size", "8", "--num-classes", "5",
          "--amp", "none", "--steps", "2", "--windows", "1", "--warmup", "1", "--device", "cpu"]


def _refused(monkeypatch, capsys, argv, *fragments):
    import pytest

    import classy_fast.bench as bench

    def must_not_run(*args, **kwargs):
        raise AssertionError("timing started before the arguments were validated")

    monkeypatch.setattr(bench, "run", must_not_run)
    monkeypatch.setattr(bench, "time_mode", must_not_run)
    monkeypatch.setattr(bench, "baseline_step", must_not_run)
    monkeypatch.setattr(bench, "classy_task", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m classy_fast.bench" in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _with(**overrides):
    """_SMALL with some options replaced (``steps=-2`` → ``--steps -2``)."""
    argv = list(_SMALL)
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = str(value)
        else:
            argv += [flag, str(value)]
    return argv


def test_bench_refuses_counts_below_their_minimum(monkeypatch, capsys):
    for flag, bad in (("steps", -2), ("steps", 0), ("windows", 0), ("distinct_batches", 0), ("num_classes", 0),
                      ("batch_size", 0), ("image_size", 0), ("warmup", -1)):
        minimum = 0 if flag == "warmup" else 1
        _refused(monkeypatch, capsys, _with(**{flag: bad}), f"argument --{flag.replace('_', '-')}",
                 f"must be >= {minimum}, got {bad}")
    _refused(monkeypatch, capsys, _with(steps="two"), "argument --steps", "invalid int value: 'two'")


def test_bench_warmup_zero_is_allowed(tmp_path):
    out = tmp_path / "bench.json"
    assert main(_with(warmup=0, modes="baseline", json=out)) == 0
    import json as _json

    assert _json.loads(out.read_text())["results"]["baseline"]["images_per_sec"] > 0


def test_bench_refuses_an_unknown_device(monkeypatch, capsys):
    _refused(monkeypatch, capsys, _with(device="mps"), "argument --device", "invalid choice: 'mps'")


def test_bench_refuses_graph_modes_on_cpu(monkeypatch, capsys):
    """An eager figure must never be labelled 'graphs'."""
    for modes in ("baseline,graphs", "compile_graphs"):
        argv = _with(modes=modes) + (["--compile"] if "compile" in modes else [])
        _refused(monkeypatch, capsys, argv, "need a CUDA device", "cpu")


def test_bench_refuses_fp16_on_cpu_for_the_task_modes(monkeypatch, capsys):
    _refused(monkeypatch, capsys, _with(amp="fp16"), "--amp fp16 on cpu", "needs a CUDA device")
    _refused(monkeypatch, capsys, _with(amp="fp16", modes="eager"), "--amp fp16 on cpu")


def test_bench_refuses_an_unwritable_json_path(monkeypatch, capsys, tmp_path):
    _refused(monkeypatch, capsys, _with(json=tmp_path / "missing" / "x.json"), "--json", "does not exist")
    _refused(monkeypatch, capsys, _with(json="/nonexistent/x.json"), "--json /nonexistent/x.json")
    _refused(monkeypatch, capsys, _with(json=tmp_path), "is a directory")
    assert list(tmp_path.iterdir()) == []  # the write check leaves nothing behind


def test_bench_still_refuses_unknown_modes(monkeypatch, capsys):
    _refused(monkeypatch, capsys, _with(modes="baseline,warp"), "unknown mode(s) warp")
