"""serving.allocator: which allocator a server is started with, and what the service says about it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from serving import allocator


@pytest.fixture
def lib_folder(tmp_path: Path) -> str:
    (tmp_path / allocator.LIBRARY).write_bytes(b"")
    return str(tmp_path)


def test_tcmalloc_is_preloaded_ahead_of_what_is_there(lib_folder: str, tmp_path: Path) -> None:
    env = allocator.preload_env({"LD_PRELOAD": "/opt/other.so"}, folders=["/nonexistent", lib_folder])
    assert env == {"LD_PRELOAD": f"{tmp_path / allocator.LIBRARY} /opt/other.so"}
    assert allocator.preload_env({}, folders=[lib_folder]) == {"LD_PRELOAD": str(tmp_path / allocator.LIBRARY)}


def test_nothing_to_add_when_opted_out_already_preloaded_or_not_installed(lib_folder: str) -> None:
    assert allocator.preload_env({"SERVE_MALLOC": "system"}, folders=[lib_folder]) == {}
    assert allocator.preload_env({"LD_PRELOAD": "/x/libtcmalloc.so.4"}, folders=[lib_folder]) == {}
    assert allocator.preload_env({}, folders=["/nonexistent"]) == {}


def test_a_bad_choice_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="SERVE_MALLOC='jemalloc' is not one of tcmalloc, system"):
        allocator.preload_env({"SERVE_MALLOC": "jemalloc"})


def test_warns_with_the_fix_when_running_on_glibc_malloc(monkeypatch, caplog) -> None:
    monkeypatch.setattr(allocator, "in_use", lambda: "system")
    with caplog.at_level(logging.INFO, logger="serving.allocator"):
        assert allocator.announce({}) == "system"
        allocator.announce({"SERVE_MALLOC": "system"})
    warning, info = caplog.records
    assert warning.levelno == logging.WARNING and "apt-get install libtcmalloc-minimal4" in warning.getMessage()
    assert info.levelno == logging.INFO and info.getMessage() == "Memory allocator: system"


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="TCMalloc (libtcmalloc-minimal4) is not installed")
def test_a_process_started_with_the_setting_runs_on_tcmalloc() -> None:
    probe = [sys.executable, "-c", "from serving import allocator; print(allocator.in_use())"]
    root = Path(__file__).resolve().parents[2]
    plain = subprocess.run(probe, cwd=root, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           check=True)
    preloaded = subprocess.run(probe, cwd=root, env={"PATH": "/usr/bin:/bin", **allocator.preload_env({})},
                               capture_output=True, text=True, check=True)
    assert (plain.stdout.strip(), preloaded.stdout.strip()) == ("system", "tcmalloc")
