"""Bulk scoring end to end: `python -m bulk` on a local Ray (2 CPUs), against the HTTP service's answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from tests.conftest import ROOT, photo

pytestmark = pytest.mark.integration

CORRUPT = {"garbage.jpg": "invalid_image", "truncated.png": "invalid_image", "empty.jpg": "empty_file"}
TOWERS = {"b16": "clip-vit-b16-openai", "l14": "clip-vit-large-patch14", "b32": "open-clip-vit-b32"}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """~200 real photos, JPEG and PNG, 48-1400 px, some grey or with alpha, in nested folders; three corrupt
    files; and files that are not images (skipped)."""
    root = tmp_path_factory.mktemp("album")
    rng = np.random.default_rng(7)
    sources = [photo(n) for n in ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "retina")]
    for i in range(200):
        img = Image.fromarray(sources[i % len(sources)])
        w, h = img.size
        left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        img = img.crop((left, top, w - int(rng.integers(0, w // 4)), h - int(rng.integers(0, h // 4))))
        side = int(rng.integers(48, 1400))
        img = img.resize((side, max(8, side * img.height // img.width)))
        mode = ("L", "RGBA", "RGB", "RGB")[i % 4]
        folder = root / ("", "2024", "2024/summer")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        if mode == "RGBA" or i % 5 == 0:
            img.convert(mode).save(folder / f"photo{i:03d}.png")
        else:
            img.convert("L" if mode == "L" else "RGB").save(folder / f"photo{i:03d}.jpg", quality=int(rng.integers(60, 95)))
    (root / "garbage.jpg").write_bytes(b"this is not a photo")
    (root / "truncated.png").write_bytes((root / "photo000.png").read_bytes()[:300])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    (root / "2024" / ".thumbs.jpg").write_bytes(b"hidden")
    return root


def _bulk(source: Path, out: Path, *args: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bulk", str(source), "--out", str(out), "--num-cpus", "2", "--no-progress", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc: subprocess.Popen) -> dict:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    return json.loads(output.strip().splitlines()[-1])


def _rows(out: Path) -> dict[str, dict]:
    rows = pads.dataset(str(out), format="parquet").to_table().to_pylist()
    return {r["path"]: r for r in rows} if len({r["path"] for r in rows}) == len(rows) else {"duplicates": rows}


@pytest.fixture(scope="module")
def scored_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bulk") / "out"


@pytest.fixture(scope="module")
def scored(collection, scored_out, species_dev_model, aesthetic_models, zero_shot_models):
    out = scored_out
    summary = _finish(_bulk(collection, out, "--species", "--report", "--embedding", ",".join(TOWERS),
                            "--part-rows", "40"))
    return summary, _rows(out)


def _images(collection: Path) -> list[Path]:
    return sorted(p for p in collection.rglob("*") if p.suffix in (".jpg", ".png") and not p.name.startswith("."))


def test_one_row_per_input_with_errors_on_exactly_the_corrupt_files(collection, scored) -> None:
    summary, rows = scored
    assert set(rows) == {str(p) for p in _images(collection)} and len(rows) == 203
    assert {Path(p).name: r["error"] for p, r in rows.items() if r["error"]} == CORRUPT
    assert summary["processed"] == 203 and summary["ok"] == 200
    assert summary["errors"] == {"invalid_image": 2, "empty_file": 1} and summary["images_per_s"] > 0
    assert {m["variant"] for m in summary["models"].values()} <= {"dev", "release"}
    assert summary["models"]["species"] == {"tag": "eva02-inat21:dev", "variant": "dev"}
    bad = rows[str(collection / "garbage.jpg")]
    assert bad["species"] is None and bad["aesthetic_raw"] is None and bad["embedding_l14"] is None


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def test_species_and_aesthetic_equal_the_http_batch_routes(server, collection, scored) -> None:
    _, rows = scored
    images = _images(collection)
    for chunk in _chunks(images, 8):
        files = [("images", (p.name, p.read_bytes(), "application/octet-stream")) for p in chunk]
        species = httpx.post(f"{server.url}/classify/batch?top_k=3", files=files, timeout=120).json()["results"]
        scores = httpx.post(f"{server.url}/score/batch", files=files, timeout=120).json()["results"]
        for path, top, score in zip(chunk, species, scores):
            row = rows[str(path)]
            if "error" in top:
                assert row["error"] == top["error"] == score["error"] or (row["error"], top["error"]) == (
                    "empty_file", "empty_body")
                continue
            assert row["error"] is None
            assert row["species"] == [p["species"] for p in top["predictions"]]
            assert row["species_lineage"] == top["predictions"][0]["lineage"]
            assert row["species_common_names"] == [p["common_name"] for p in top["predictions"]]
            assert row["species_status"] == top["status"]
            assert row["gate_organism"] == pytest.approx(top["gate"]["organism"], abs=1e-4)
            rolled = top["rollup"] or {}
            assert (row["rollup_rank"], row["rollup_name"]) == (rolled.get("rank"), rolled.get("name"))
            assert np.allclose(row["species_scores"], [p["score"] for p in top["predictions"]], atol=1e-5)
            assert abs(row["aesthetic_raw"] - score["raw"]) < 1e-5 and abs(row["aesthetic_score"] - score["score"]) < 1e-5


MEASURES = ("sharpness_score", "exposure_score", "resolution_score", "rule_of_thirds_score", "visual_interest_score",
            "technical_score", "composition_score", "clipped_shadows", "clipped_highlights", "brightness",
            "image_width", "image_height")


def test_the_report_equals_the_scores_route(server, collection, scored) -> None:
    """--report writes what POST /scores answers: the measures exactly (within 1e-6: the same decode and numpy),
    the overall score as far as the aesthetic score agrees (float32 in Parquet, within 1e-5 of the route's)."""
    summary, rows = scored
    assert "report" in summary["tasks"] and "aesthetic" in summary["tasks"]
    for path in _images(collection)[:12]:
        answer = httpx.post(f"{server.url}/scores", content=path.read_bytes(), timeout=60).json()
        row = rows[str(path)]
        if "error" in answer:
            assert row["error"] and row["overall_score"] is None and row["notes"] is None
            continue
        for field in MEASURES:
            assert row[field] == pytest.approx(answer[field], abs=1e-6), field
        assert row["notes"] == answer["notes"]
        assert row["overall_score"] == pytest.approx(answer["overall_score"], abs=1e-3)


@pytest.mark.parametrize("alias", list(TOWERS))
def test_embeddings_equal_the_http_embed_route(server, collection, scored, alias: str) -> None:
    _, rows = scored
    for path in _images(collection)[::4]:
        row = rows[str(path)]
        if row["error"]:
            continue
        answer = httpx.post(f"{server.url}/embed?model={alias}", content=path.read_bytes(), timeout=60).json()
        assert answer["model"]["tag"] == f"{TOWERS[alias]}:dev"
        assert len(row[f"embedding_{alias}"]) == answer["dim"]
        assert np.allclose(row[f"embedding_{alias}"], answer["embedding"], atol=1e-5)
        assert abs(np.linalg.norm(row[f"embedding_{alias}"]) - 1) < 1e-4


def test_the_search_example_ranks_the_collection_by_the_services_text_embedding(server, scored, scored_out) -> None:
    """README's search example, offline on dev models: the order is the dot-product order of the rows' image
    embeddings with the service's embedding of the query (with dev weights that order is all that is defined)."""
    _, rows = scored
    query = "ein Astronaut im Weltraum"
    proc = subprocess.run([sys.executable, "-m", "bulk.search", str(scored_out), query, "--model", "b32", "--url",
                           server.url, "--top", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    vector = np.array(httpx.post(f"{server.url}/embed/text", json={"model": "b32", "texts": [query]},
                                 timeout=60).json()["embeddings"][0])
    ranked = sorted(((float(np.dot(r["embedding_b32"], vector)), p) for p, r in rows.items()
                     if r["embedding_b32"] is not None), reverse=True)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["similarity"] for h in hits] == pytest.approx([s for s, _ in ranked[:5]], abs=1e-5)
    assert {h["path"] for h in hits} <= set(rows) and hits[0]["path"] == ranked[0][1]
    missing = subprocess.run([sys.executable, "-m", "bulk.search", str(scored_out), query, "--model", "b32-laion2b",
                              "--url", server.url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no column embedding_b32_laion2b" in missing.stderr


def test_a_killed_run_resumes_and_writes_every_image_exactly_once(collection, scored, tmp_path) -> None:
    _, full = scored
    out = tmp_path / "out"
    # small model batches, so results (and parts) arrive through the run rather than in a few large blocks
    small = {**os.environ, "SPECIES_MAX_BATCH_SIZE": "4", "AESTHETIC_MAX_BATCH_SIZE": "4"}
    proc = _bulk(collection, out, "--species", "--aesthetic", "--part-rows", "20", "--decode-batch", "4",
                 start_new_session=True, env=small)
    deadline = time.monotonic() + 300
    while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the command, its local Ray and Ray's workers
    proc.communicate(timeout=60)
    first = _rows(out)
    assert 0 < len(first) < 203, "the run should have been killed halfway"
    refused = _bulk(collection, out, "--species", "--aesthetic")
    assert refused.wait(timeout=120) == 2 and "pass --resume" in refused.communicate()[0]
    summary = _finish(_bulk(collection, out, "--species", "--aesthetic", "--part-rows", "20", "--resume"))
    assert summary["already_done"] == len(first) and summary["processed"] == 203 - len(first)
    rows = _rows(out)
    assert set(rows) == set(full)  # every image exactly once (no duplicates key)
    for path, row in rows.items():
        assert row["error"] == full[path]["error"] and row["species"] == full[path]["species"]
    again = _finish(_bulk(collection, out, "--species", "--aesthetic", "--resume"))
    assert (again["already_done"], again["processed"]) == (203, 0)


def test_a_list_file_and_a_csv_column_name_the_same_images(collection, tmp_path, scored) -> None:
    _, full = scored
    chosen = _images(collection)[:10]
    (tmp_path / "list.txt").write_text("\n".join(os.path.relpath(p, tmp_path) for p in chosen))
    (tmp_path / "t.csv").write_text("file\n" + "\n".join(str(p) for p in chosen[:4]))
    by_list = _finish(_bulk(tmp_path / "list.txt", tmp_path / "a", "--aesthetic"))
    by_csv = _finish(_bulk(tmp_path / "t.csv", tmp_path / "b", "--aesthetic", "--column", "file"))
    assert (by_list["processed"], by_csv["processed"]) == (10, 4)
    for path, row in _rows(tmp_path / "a").items():
        assert abs(row["aesthetic_raw"] - full[path]["aesthetic_raw"]) < 1e-5
