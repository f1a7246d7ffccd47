"""Start and stop local servers (`bentoml serve` or any command) on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]

GRACE_S = 30.0  # for a server to finish its work in flight after SIGTERM
INTERRUPTED_GRACE_S = 3.0

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
    (folder / "models").symlink_to(Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")) / "models")
    return str(folder)


def start_server(log: Path, env: dict[str, str] | None = None, timeout: float = 180,
                 target: str = "service:Gateway", cwd: Path = ROOT, command: list[str] | None = None,
                 ready_path: str = "/readyz") -> Server:
    """Run ``bentoml serve TARGET`` (the project, or a Bento tag), or ``command`` with ``{port}`` filled in,
    and wait until ``ready_path`` answers 200."""
    port = free_port()
    argv = [a.format(port=port) for a in command] if command else [
        BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                if httpx.get(f"{server.url}{ready_path}", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    except (KeyboardInterrupt, SystemExit):  # not yet the caller's to stop; `bentoml serve` defers SIGTERM while
        stop_servers([server], INTERRUPTED_GRACE_S)  # its runners load, so a short grace, then SIGKILL
        raise
    stop_server(server)
    raise RuntimeError(f"{argv[0]} not ready after {timeout}s:\n{server.log_tail()}")


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
    """SIGTERM the CLI (BentoML stops its workers), then SIGKILL whatever is left after :data:`GRACE_S`."""
    stop_servers([server])


def stop_servers(servers: Iterable[Server], grace: float = GRACE_S) -> None:
    """:func:`stop_server` for several servers at once, under one grace period for all (not one each)."""
    servers = list(servers)
    procs = [proc for server in servers for proc in process_tree(server)]
    for proc in procs:  # a paused (SIGSTOP) server would not act on SIGTERM
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.resume()
    for server in servers:
        if server.proc.poll() is None:
            server.proc.terminate()
    deadline = time.monotonic() + grace
    for server in servers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    _, alive = psutil.wait_procs(procs, timeout=min(10.0, grace))
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    for server in servers:
        server.proc.wait()


@contextlib.contextmanager
def stopped_at_exit() -> Iterator[dict[str, Server]]:
    """Servers started in the block (added to the dict it gives) are stopped when it ends; when it ends by
    Ctrl-C or SIGTERM (SystemExit), with a grace of :data:`INTERRUPTED_GRACE_S` instead of waiting for the work
    in flight (a full-size model's queue can take minutes)."""
    servers: dict[str, Server] = {}
    grace = GRACE_S
    try:
        yield servers
    except (KeyboardInterrupt, SystemExit):
        grace = INTERRUPTED_GRACE_S
        raise
    finally:
        stop_servers(servers.values(), grace)
