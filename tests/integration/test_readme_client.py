"""The README's curl lines and Python client examples run as written against a real server."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT, encode, photo

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()
CURL_LINES = re.findall(r"^curl -X POST .*$", README, re.M)


def readme_python_block(containing: str) -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if containing in b]
    return block


def run_example(code: str, server, cwd: Path) -> str:
    code = code.replace("http://localhost:3000", server.url)
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    (tmp_path / "photo.jpg").write_bytes(encode(photo("rocket")))
    return tmp_path


def test_readme_shows_a_curl_line_per_endpoint() -> None:
    assert {line.rsplit("/", 1)[1] for line in CURL_LINES} >= {"classify", "score"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("line", CURL_LINES)
def test_readme_curl_lines_work_as_written(server, photo_dir: Path, line: str) -> None:
    command = line.replace("http://localhost:3000", server.url).split()
    out = subprocess.run(command, cwd=photo_dir, capture_output=True, text=True, timeout=60, check=True)
    expected = httpx.post(command[-1], content=(photo_dir / "photo.jpg").read_bytes(), timeout=60)
    assert expected.status_code == 200
    assert json.loads(out.stdout) == expected.json()


def test_readme_classify_client_example(server, photo_dir: Path) -> None:
    lines = run_example(readme_python_block("client.classify("), server, photo_dir).strip().splitlines()
    assert len(lines) == 3
    scores = []
    for line in lines:
        species, score = line.rsplit(": ", 1)
        assert species and 0 <= float(score) <= 1
        scores.append(float(score))
    assert scores == sorted(scores, reverse=True)


def test_readme_score_client_example(server, photo_dir: Path) -> None:
    out = run_example(readme_python_block("client.score("), server, photo_dir).strip()
    expected = httpx.post(f"{server.url}/score", content=(photo_dir / "photo.jpg").read_bytes(), timeout=60).json()
    assert out == f'aesthetic score {expected["score"]:.2f} (raw {expected["raw"]:.3f})'


def test_readme_zero_shot_curl_example(server, photo_dir: Path) -> None:
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "zero-shot-image-classification" in b]
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.replace("http://localhost:3000", server.url)],
                          cwd=photo_dir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["model"] == "clip-vit-large-patch14" and job["status"] in ("starting", "running", "complete")
    for _ in range(300):
        job = httpx.get(f"{server.url}/api/tasks/zero-shot-image-classification/jobs/{job['id']}").json()
        if job["status"] == "complete":
            break
        time.sleep(0.1)
    probs = job["result"]["probabilities"]
    assert len(probs) == 3 and abs(sum(probs) - 1) < 1e-6


def test_readme_zero_shot_client_example(server, photo_dir: Path) -> None:
    lines = run_example(readme_python_block("client.submit_zero_shot("), server, photo_dir).strip().splitlines()
    status, job_probs = lines[0].split(" ", 1)
    assert status == "complete"
    np.testing.assert_allclose(json.loads(job_probs), json.loads(lines[1]), atol=1e-6)  # job and direct answers agree
    assert abs(sum(json.loads(lines[1])) - 1) < 1e-6


def test_readme_typed_client_example(server, photo_dir: Path) -> None:
    lines = run_example(readme_python_block("vc.classify("), server, photo_dir).strip().splitlines()
    species, score = lines[0].rsplit(" ", 1)
    assert species and 0 <= float(score) <= 1
    assert 0 <= float(lines[1]) <= 10
    probs = json.loads(lines[2])
    assert len(probs) == 3 and abs(sum(probs) - 1) < 1e-6
    assert lines[3] == "2"  # the text-embedding job: one embedding per text


def test_readme_search_snippet_ranks_a_bulk_output_by_a_text_query(server, tmp_path: Path) -> None:
    """The snippet beside python -m bulk.search, on a small Parquet folder laid out as bulk writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["chelsea", "coffee", "astronaut"]
    vectors = [httpx.post(f"{server.url}/embed?model=b32", content=encode(photo(n)), timeout=60).json()["embedding"]
               for n in names]
    out = tmp_path / "var" / "pictures"
    out.mkdir(parents=True)
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(vectors), pa.float32()), len(vectors[0]))
    pq.write_table(pa.table({"path": [f"{n}.jpg" for n in names], "embedding_b32": column}), out / "part-0.parquet")
    shown = ast.literal_eval(run_example(readme_python_block("np.argsort("), server, tmp_path).strip())
    query = httpx.post(f"{server.url}/embed/text", json={"model": "b32", "texts": ["Sonnenuntergang am Meer"]},
                       timeout=60).json()["embeddings"][0]
    assert shown == sorted((f"{n}.jpg" for n in names), key=lambda p: -float(np.dot(vectors[names.index(p[:-4])],
                                                                                       query)))


def test_readme_batch_client_example(server, tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        (album / f"{name}.jpg").write_bytes(encode(photo(name)))
    (album / "damaged.jpg").write_bytes(encode(photo("rocket"))[:300])
    lines = run_example(readme_python_block("client.classify_batch("), server, tmp_path).strip().splitlines()
    assert [line.split()[0] for line in lines] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "damaged.jpg"]
    assert "error:" in lines[3] and all("error:" not in line for line in lines[:3])
    assert all(0 <= float(line.split()[-1]) <= 10 for line in lines[:3])
