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
