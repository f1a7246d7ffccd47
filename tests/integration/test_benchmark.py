"""A short smoke run of the benchmark (bench/run.py): service, naive design, LitServe and ceiling, side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import run as benchmark

pytestmark = pytest.mark.integration


def test_benchmark_smoke_run_writes_comparable_results(server, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = ["--url", server.url, "--concurrency", "1,2", "--requests", "4", "--sizes", "500,2048",
            "--ceiling-batches", "1,2", "--ceiling-seconds", "0.2", "--rounds", "2", "--out", str(out)]
    assert benchmark.main(argv) == 0

    report = json.loads((out / "results.json").read_text())
    for endpoint in ("classify", "score", "zero-shot"):
        for system in ("service", "naive", "litserve"):
            rows = report[system][endpoint]
            assert [r["concurrency"] for r in rows] == [1, 2]
            assert [r["requests"] for r in rows] == [4, 4]  # two rounds of two, alternating with the other system
            assert all(r["errors"] == 0 and r["images_per_s"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in rows)
        assert all(r["mean_batch"] >= 1 for r in report["service"][endpoint])
        assert report["ceiling"][endpoint]["images_per_s"] > 0
        summary = report["summary"][endpoint]
        assert set(summary["throughput_ratio_vs_naive"]) == {"1", "2"}  # JSON keys
        assert set(summary["throughput_ratio_vs_litserve"]) == set(summary["p50_ratio_vs_litserve"]) == {"1", "2"}
        assert isinstance(summary["overhead_ms_at_c1"], float)
        bare_ms = report["ceiling"][endpoint]["batch1_ms"]
        assert 0 < bare_ms and summary["added_ms_over_bare_model_at_c1"] == pytest.approx(
            report["service"][endpoint][0]["p50_ms"] - bare_ms, abs=0.051)
    for endpoint, path in (("classify", "/classify"), ("score", "/score"), ("zero-shot", "/zero_shot/")):
        log = (out / "logs" / f"litserve-{endpoint}.log").read_text()  # one LitServe server per model
        assert path in log and all(p not in log for p in ("/classify", "/score", "/zero_shot/") if p != path)
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scripts/benchmark.py --url" in (out / "results.md").read_text()
