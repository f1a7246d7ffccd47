"""The benchmark's server handling: a server it paused (SIGSTOP) while measuring another still stops, and an
interrupted run stops its servers at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.local_server import Server, process_tree, stop_server, stopped_at_exit

# a stand-in for `bentoml serve`: a parent that stops its worker on SIGTERM
PARENT = """
import signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
signal.signal(signal.SIGTERM, lambda *_: (worker.terminate(), worker.wait(), sys.exit(0)))
time.sleep(120)
"""


def test_a_paused_server_and_its_workers_are_stopped(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", PARENT])
    server = Server(url="http://127.0.0.1:9", proc=proc, log=tmp_path / "log")
    deadline = time.monotonic() + 30
    while len(process_tree(server)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = process_tree(server)
    assert len(tree) == 2
    for p in tree:
        p.suspend()
    started = time.monotonic()
    stop_server(server)
    assert time.monotonic() - started < 10  # SIGTERM acted on at once, not after the 30 s wait and SIGKILL
    assert proc.returncode is not None
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)


# a server still draining its work: it does not act on SIGTERM
DRAINING = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def test_servers_are_stopped_with_sigterm_when_the_run_ends(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]) for _ in range(2)]
    with stopped_at_exit() as servers:
        for i, proc in enumerate(procs):
            servers[f"s{i}"] = Server(url="http://127.0.0.1:9", proc=proc, log=tmp_path / "log")
    assert [p.returncode for p in procs] == [-signal.SIGTERM] * 2


def test_an_interrupted_run_kills_its_draining_servers_after_a_short_grace(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", DRAINING]) for _ in range(2)]
    time.sleep(1)  # both have set SIG_IGN
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), stopped_at_exit() as servers:
        for i, proc in enumerate(procs):
            servers[f"s{i}"] = Server(url="http://127.0.0.1:9", proc=proc, log=tmp_path / "log")
        raise KeyboardInterrupt
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
    assert time.monotonic() - started < 20  # one short grace for all, not 30 s + 10 s for each

def test_the_engines_report_says_how_much_of_the_baseline_is_the_forward_and_the_best_ratio_left() -> None:
    from bench import precision

    def system(p50: float, per_s: float) -> dict:
        return {"c1_p50_ms": p50, "c1_p95_ms": p50, "c32_images_per_s": per_s, "errors": 0,
                "c32_vs_baseline": 1.0, "c1_p50_vs_baseline": 1.0}

    report = {"baseline": "torch-fp32",
              "endpoints": {"score": {"torch-fp32": system(20.0, 50.0)}, "classify": {"torch-fp32": system(9, 9)}},
              "bare": [{"tag": "clip:dev", "batch": 1, "ms": {"torch-fp32": 5.0}, "speed_up": {"torch-fp32": 1.0}},
                       {"tag": "clip:dev", "batch": 8, "ms": {"torch-fp32": 80.0}, "speed_up": {"torch-fp32": 1.0}}]}
    report["time_split"] = precision.time_split(report, {"score": "clip:dev", "classify": "eva:dev"})
    # 5 of 20 ms at c=1; 50 images/s x 10 ms each = half of every second at c=32
    assert report["time_split"] == [{
        "endpoint": "score", "tag": "clip:dev", "c1_p50_ms": 20.0, "forward_batch1_ms": 5.0, "c1_forward_share": 0.25,
        "c1_p50_ratio_free_forward": 0.75, "c32_forward_share": 0.5, "c32_ratio_free_forward": 2.0}]
    assert "| score | clip:dev | 20.0 | 5.0 | 0.25 | 0.75x | 0.5 | 2.0x |" in precision.markdown(report)


def test_a_top5_swap_passes_only_between_near_ties() -> None:
    import numpy as np

    from bench.parity import same_up_to_near_ties

    q32 = np.array([0.5, 0.2, 0.1, 0.08, 0.05, 0.0499, 0.001, 0.0001, 0.0, 0.0])
    near = q32.copy()
    near[[4, 5]] = near[[5, 4]]  # the 5th and 6th, 1e-4 apart (the spread is 0.45): a near-tie
    far = q32.copy()
    far[[4, 6]] = far[[6, 4]]  # the 7th, 0.049 below the 5th, into the top 5
    assert same_up_to_near_ties(q32, q32) and same_up_to_near_ties(q32, near)
    assert not same_up_to_near_ties(q32, far)


def test_a_run_interrupted_while_a_server_starts_stops_that_server(tmp_path: Path) -> None:
    from tests.support import local_server

    started: list[subprocess.Popen] = []
    calls, real_popen = 0, subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def interrupted(*_args, **_kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:  # Ctrl-C, or the benchmark's SIGTERM handler, while it waits for /readyz
            raise KeyboardInterrupt
        raise local_server.httpx.ConnectError("not listening yet")

    began = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local_server.subprocess, "Popen", popen)
        mp.setattr(local_server.httpx, "get", interrupted)
        with pytest.raises(KeyboardInterrupt):
            # never ready, and deaf to SIGTERM, as `bentoml serve` is while its runners load
            local_server.start_server(tmp_path / "log", command=[sys.executable, "-c", DRAINING])
    try:
        assert len(started) == 1 and started[0].returncode == -signal.SIGKILL
        assert time.monotonic() - began < 20
    finally:  # a failing run leaves nothing behind either
        for proc in started:
            proc.kill()
            proc.wait()
