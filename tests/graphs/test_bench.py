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
