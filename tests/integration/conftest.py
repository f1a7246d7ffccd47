"""Start a real ``bentoml serve`` process on a free loopback port for the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

BENTOML = str(Path(sys.executable).with_name("bentoml"))


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log: Path, env: dict[str, str] | None = None, timeout: float = 180) -> Server:
    """Run ``bentoml serve service:Gateway`` and wait until /readyz answers 200."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [BENTOML, "serve", "service:Gateway", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"bentoml serve not ready after {timeout}s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@pytest.fixture(scope="session")
def server(species_dev_model, tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("serve") / "bentoml.log")
    yield srv
    stop_server(srv)
