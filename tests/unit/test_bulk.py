"""Bulk scoring without Ray: what it lists, how it decodes, how it writes and resumes, how it sizes actors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulk.inputs import InputError, list_inputs, read_bytes
from bulk.output import Parts
from bulk.run import Plan, Stage, _rates, plan_resources, to_table
from bulk.stages import decode_batch
from capabilities.embedding import tower_name
from serving.errors import ServiceError
from serving.imaging import PreprocessConfig, prepare
from tests.conftest import encode, photo

CFG = PreprocessConfig(input_size=(3, 32, 32), interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                       crop_pct=0.875)
WIDE = PreprocessConfig(input_size=(3, 48, 48), interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                        crop_pct=1.0)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("one.jpg", "a/two.PNG", "a/b/three.webp", "a/b/.hidden.jpg", "notes.txt", "a/four.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_a_folder_is_listed_recursively_by_extension_without_hidden_files(folder) -> None:
    found = list_inputs(str(folder))
    assert found == sorted(str(folder / n) for n in ("one.jpg", "a/two.PNG", "a/b/three.webp", "a/four.jpeg"))
    assert list_inputs(f"file://{folder}", extensions=("png",)) == [str(folder / "a" / "two.PNG")]


def test_a_list_file_takes_relative_paths_from_its_folder_skips_comments_and_repeats(folder) -> None:
    (folder / "list.txt").write_text("# photos\none.jpg\n\na/two.PNG\none.jpg\n/abs/elsewhere.jpg\n")
    assert list_inputs(str(folder / "list.txt")) == [str(folder / "one.jpg"), str(folder / "a" / "two.PNG"),
                                                     "/abs/elsewhere.jpg"]


def test_parquet_and_csv_give_the_named_column(folder) -> None:
    pq.write_table(pa.table({"file": ["one.jpg", None, "a/four.jpeg"], "n": [1, 2, 3]}), folder / "t.parquet")
    (folder / "t.csv").write_text("path,x\none.jpg,1\ns3://bucket/k.jpg,2\n")
    assert list_inputs(str(folder / "t.parquet"), column="file") == [str(folder / "one.jpg"),
                                                                      str(folder / "a" / "four.jpeg")]
    assert list_inputs(str(folder / "t.csv")) == [str(folder / "one.jpg"), "s3://bucket/k.jpg"]
    with pytest.raises(InputError, match=r"no column 'path'.*\['file', 'n'\].*--column"):
        list_inputs(str(folder / "t.parquet"))


def test_a_missing_source_says_what_to_give(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist; give a folder"):
        list_inputs(str(tmp_path / "nope"))


def test_an_fsspec_filesystem_is_listed_and_read_through_its_uri() -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/album/x.jpg", b"jpeg bytes")
    memory.pipe("/album/sub/y.png", b"png bytes")
    memory.pipe("/album/z.txt", b"text")
    found = list_inputs("memory://album")
    assert found == ["memory:///album/sub/y.png", "memory:///album/x.jpg"]
    assert read_bytes(found[1]) == b"jpeg bytes"


def test_decoding_matches_the_service_path_and_records_errors_per_row(tmp_path) -> None:
    good = tmp_path / "cat.jpg"
    good.write_bytes(encode(photo("chelsea")))
    big = tmp_path / "big.png"
    big.write_bytes(encode(photo("astronaut"), "PNG"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    gif = tmp_path / "anim.jpg"
    gif.write_bytes(encode(photo("coffee"), "GIF"))
    paths = [str(good), str(tmp_path / "empty.jpg"), str(tmp_path / "missing.jpg"), str(big),
             str(tmp_path / "junk.jpg"), str(gif)]
    out = decode_batch({"path": np.array(paths, dtype=object)},
                       {"a": CFG.model_dump(), "b": WIDE.model_dump()}, max_pixels=50_000_000)
    assert list(out["error"]) == ["", "empty_file", "unreadable", "", "invalid_image", "unsupported_media_type"]
    assert "The file is not a readable image" in out["error_detail"][4] and "missing.jpg" in out["error_detail"][2]
    assert out["pixels_a"].shape == (6, 32, 32, 3) and out["pixels_b"].shape == (6, 48, 48, 3)
    for i in (0, 3):
        data = open(paths[i], "rb").read()
        np.testing.assert_array_equal(out["pixels_a"][i], prepare(data, CFG, 50_000_000))
        np.testing.assert_array_equal(out["pixels_b"][i], prepare(data, WIDE, 50_000_000))
    assert not out["pixels_a"][1:3].any()


def _plan() -> Plan:
    return Plan(stages=[Stage("species", object, {}, {}, 8),
                        Stage("b16", object, {"head": "laion-aesthetic-vit-b16", "embedding": True}, {}, 8)],
                description={"tasks": ["species(top_k=2)", "aesthetic", "embedding(b16)"], "models": {}})


def _batch(n: int, bad: set[int]) -> dict[str, np.ndarray]:
    return {"path": np.array([f"/p/{i}.jpg" for i in range(n)], dtype=object),
            "error": np.array(["invalid_image" if i in bad else "" for i in range(n)], dtype=object),
            "error_detail": np.array(["bad" if i in bad else "" for i in range(n)], dtype=object),
            "species": np.array([["", ""] if i in bad else ["a", "b"] for i in range(n)]),
            "species_scores": np.full((n, 2), 0.5, np.float32),
            "aesthetic_raw": np.array([11.5 if i == 0 else -1.0 for i in range(n)], np.float32),
            "embedding_b16": np.ones((n, 4), np.float32)}


def test_rows_carry_each_task_and_nulls_on_error_rows() -> None:
    rows = to_table(_batch(3, {1}), _plan()).to_pylist()
    assert [r["error"] for r in rows] == [None, "invalid_image", None]
    assert rows[0]["species"] == ["a", "b"] and rows[1]["species"] is None
    assert (rows[0]["aesthetic_score"], rows[0]["aesthetic_raw"]) == (10.0, 11.5)  # clamped as /score clamps
    assert rows[2]["aesthetic_score"] == 0.0 and rows[1]["aesthetic_raw"] is None
    assert rows[0]["embedding_b16"] == [1.0] * 4 and rows[1]["embedding_b16"] is None
    schema = to_table(_batch(1, set()), _plan()).schema
    assert schema.field("embedding_b16").type == pa.list_(pa.float32(), 4)


def test_parts_are_whole_and_resume_continues_them(tmp_path) -> None:
    plan = _plan()
    out = str(tmp_path / "out")
    parts = Parts(out, plan.description, resume=False)
    parts.write(to_table(_batch(3, set()), plan))
    (tmp_path / "out" / ".tmp-part-deadbeef").write_bytes(b"half a part from a killed run")
    with pytest.raises(InputError, match="already holds 1 parts; pass --resume"):
        Parts(out, plan.description, resume=False)
    again = Parts(out, plan.description, resume=True)
    assert again.done() == {"/p/0.jpg", "/p/1.jpg", "/p/2.jpg"}
    assert not (tmp_path / "out" / ".tmp-part-deadbeef").exists()
    written = again.write(to_table(_batch(1, set()), plan))
    assert written.endswith("part-000001.parquet")
    meta = pq.read_schema(written).metadata[b"vision_serve.bulk"]
    assert json.loads(meta) == plan.description


def test_resume_refuses_a_folder_written_by_other_tasks_or_models(tmp_path) -> None:
    plan = _plan()
    Parts(str(tmp_path), plan.description, resume=False).write(to_table(_batch(1, set()), plan))
    other = {**plan.description, "tasks": ["species(top_k=5)"]}
    with pytest.raises(InputError, match="written by another run"):
        Parts(str(tmp_path), other, resume=True)


def test_actor_pools_take_gpu_shares_when_there_are_gpus_and_decoding_gets_every_cpu() -> None:
    one_gpu = plan_resources({"CPU": 16, "GPU": 1}, stages=3, actors=None, gpus_per_actor=None, cpus_per_actor=None)
    assert (one_gpu.actors, one_gpu.gpus_per_actor) == (1, 0.333)
    eight = plan_resources({"CPU": 64, "GPU": 8}, stages=3, actors=None, gpus_per_actor=None, cpus_per_actor=None)
    assert (eight.actors, eight.gpus_per_actor) == (2, 1.0)
    assert (one_gpu.decode_cpus, one_gpu.cpus_per_actor) == (1.0, 1.0)
    cpu = plan_resources({"CPU": 8}, stages=2, actors=None, gpus_per_actor=None, cpus_per_actor=None)
    assert (cpu.actors, cpu.gpus_per_actor, cpu.threads) == (1, 0.0, 4)
    # one decoding task per CPU still fits beside the model actors' reservations
    assert 8 * cpu.decode_cpus + 2 * cpu.cpus_per_actor <= 8 and cpu.decode_cpus > 0.9
    two = plan_resources({"CPU": 2}, stages=1, actors=None, gpus_per_actor=None, cpus_per_actor=None)
    assert 2 * two.decode_cpus + two.cpus_per_actor <= 2 and two.threads == 2
    assert plan_resources({"CPU": 2}, 3, 2, None, 0.25).actors == 2


def test_embedding_models_are_named_by_name_or_alias() -> None:
    assert tower_name("l14") == "clip-vit-large-patch14" == tower_name("clip_vit_large_patch14")
    with pytest.raises(ServiceError, match="b16.*l14"):
        tower_name("vit-h")


def test_the_steady_rate_leaves_out_start_up_and_the_first_half() -> None:
    # 20 s to start, then 100 rows every second; results arrive in batches of 100
    marks = [(20.0 + i, 100 * i) for i in range(10)]
    rates = _rates(marks, 1000, started=0.0, end=30.0)
    assert rates == {"startup_s": 20.0, "steady_images_per_s": 100.0}
    assert _rates([], 0, started=0.0, end=1.0) == {"startup_s": None, "steady_images_per_s": None}
