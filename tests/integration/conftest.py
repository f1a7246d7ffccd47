"""Start a real ``bentoml serve`` process on a free loopback port for the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
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


def own_home(folder: Path) -> str:
    """A BENTOML_HOME sharing the test model store. Each `bentoml serve` wipes its home's Prometheus folder, so
    servers that run side by side need homes of their own to keep their /metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
    return str(folder)


def start_server(log: Path, env: dict[str, str] | None = None, timeout: float = 180,
                 target: str = "service:Gateway", cwd: Path = ROOT) -> Server:
    """Run ``bentoml serve TARGET`` (the project, or a Bento tag) and wait until /readyz answers 200."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
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


def process_tree(server: Server) -> list[psutil.Process]:
    """The CLI process and every worker it started (BentoML starts each worker in a session of its own)."""
    try:
        root = psutil.Process(server.proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_server(server: Server) -> None:
    """SIGKILL every process of the server at once: a crash of the whole machine's service."""
    procs = process_tree(server)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=30)
    server.proc.wait()


def stop_server(server: Server) -> None:
    """SIGTERM the CLI (BentoML stops its workers), then SIGKILL whatever is left."""
    procs = process_tree(server)
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    server.proc.wait()


def burst(server: Server, path: str, body: bytes, n: int) -> list[httpx.Response]:
    """Send ``n`` identical POSTs at once and return the responses in order."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post(path, content=body) for _ in range(n)))

    return asyncio.run(run())


def batch_histogram(server: Server, service: str) -> tuple[float, float, float]:
    """(batches, images, batches of one image) run by ``service``'s batchable APIs, from the gateway's /metrics."""
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text

    def total(prefix: str) -> float:
        found = re.findall(prefix + rf'[^\n]*service_name="{service}"[^\n]*\}} ([0-9.e+]+)', metrics)
        return sum(float(v) for v in found)

    return (
        total(r"bentoml_service_adaptive_batch_size_count\{"),
        total(r"bentoml_service_adaptive_batch_size_sum\{"),
        total(r'bentoml_service_adaptive_batch_size_bucket\{le="1.0"'),
    )


@pytest.fixture(scope="session")
def server(species_dev_model, aesthetic_models, zero_shot_models, tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("serve") / "bentoml.log")
    yield srv
    stop_server(srv)
