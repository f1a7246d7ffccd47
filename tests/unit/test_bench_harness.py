"""The benchmark's server handling: a server it paused (SIGSTOP) while measuring another still stops."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.support.local_server import Server, process_tree, stop_server

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
