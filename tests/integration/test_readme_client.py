"""The README's Python client examples run as written against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, encode, photo

pytestmark = pytest.mark.integration


def readme_python_blocks(containing: str) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b for b in blocks if containing in b]


def run_example(code: str, server, cwd: Path) -> str:
    code = code.replace("http://localhost:3000", server.url)
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_readme_classify_client_example(server, species_dev_model, tmp_path: Path) -> None:
    (block,) = readme_python_blocks("client.classify(")
    (tmp_path / "photo.jpg").write_bytes(encode(photo("rocket")))
    lines = run_example(block, server, tmp_path).strip().splitlines()
    assert len(lines) == 3
    scores = []
    for line in lines:
        species, score = line.rsplit(": ", 1)
        assert species and 0 <= float(score) <= 1
        scores.append(float(score))
    assert scores == sorted(scores, reverse=True)
