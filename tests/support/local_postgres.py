"""A throwaway PostgreSQL server for the tests and the benchmark: Debian's binaries, a temp cluster, a free loopback port.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user and every command
runs through ``runuser``. Without the binaries the tests that need it skip, naming the package to install
(``.ci/run`` installs it).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster with a ``jobs`` database; ``stop()``/``start()`` restart it on the same port and data."""

    def __init__(self, durable: bool = False) -> None:
        """``durable``: PostgreSQL's default fsync (the benchmark); off by default, for fast tests."""
        self.durable = durable
        self.bin = _bin_dir()
        if self.bin is None:
            raise FileNotFoundError("PostgreSQL is not installed: apt-get install postgresql (bash .ci/run does)")
        self.as_root = os.geteuid() == 0
        if self.as_root and os.stat("/dev/null").st_mode & 0o777 != 0o666:
            os.chmod("/dev/null", 0o666)  # some sandboxes leave it 0644; initdb's shell steps write to it
        self.dir = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data, self.port = self.dir / "data", _free_port()
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "jobs")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/jobs"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.dir}'"
        if not self.durable:
            options += " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def new_database(self, name: str) -> str:
        """A fresh, empty database on this server; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
