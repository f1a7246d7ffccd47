"""ENGINE: which backend runs an entry, and the OpenVINO engine's conversion cache, batch invariance and top-k (its
parity with torch is in test_precision.py)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

import engines
from engines.openvino.classifier import softmax_top_k
from tests.conftest import encode, photo

ov = pytest.importorskip("openvino", reason="the OpenVINO engine needs the openvino extra (make install)")


def entry(name: str, engine: str = "torch"):
    from model_store import open_entry

    stored = open_entry(name)
    return dataclasses.replace(stored, meta=stored.meta.model_copy(update={"engine": engine}))


@pytest.mark.parametrize(("setting", "name", "expected"), [
    ("", "eva02-inat21", "openvino"),  # unset is auto: OpenVINO on a CPU where it is installed
    ("auto", "clip-vit-b16-openai", "openvino"),
    ("auto", "laion-aesthetic-vit-b16", "torch"),  # no OpenVINO engine for heads
    ("torch", "eva02-inat21", "torch"),
    ("openvino", "open-clip-vit-b32", "openvino"),
    ("openvino", "laion-aesthetic-vit-b16", "torch"),
])
def test_engine_setting_picks_the_backend(species_dev_model, aesthetic_models, zero_shot_models, setting, name,
                                          expected) -> None:
    assert engines.choose(entry(name), engines.EngineOptions(engine=setting, device="cpu")) == expected


def test_auto_keeps_torch_on_cuda_and_for_torch_compile_and_an_entry_naming_its_engine_wins(aesthetic_models) -> None:
    assert engines.choose(entry("clip-vit-b16-openai"), engines.EngineOptions(device="cuda")) == "torch"
    assert engines.choose(entry("clip-vit-b16-openai"), engines.EngineOptions(device="cpu", compile="default")) == "torch"
    assert engines.choose(entry("clip-vit-b16-openai", "fake"), engines.EngineOptions(engine="openvino")) == "fake"


def test_unknown_engines_and_openvino_on_cuda_are_refused_with_what_to_do(aesthetic_models) -> None:
    with pytest.raises(ValueError, match="ENGINE='onnx': use one of auto, torch, openvino"):
        engines.choose(entry("clip-vit-b16-openai"), engines.EngineOptions(engine="onnx"))
    with pytest.raises(RuntimeError, match="ENGINE=openvino runs on the CPU; set DEVICE=auto or cpu"):
        engines.load(entry("clip-vit-b16-openai"), engines.EngineOptions(engine="openvino", device="cuda"))


def test_conversion_is_cached_in_the_entry_folder_and_reused(aesthetic_models, monkeypatch) -> None:
    from engines.openvino import common

    stored = entry("clip-vit-b16-openai")
    options = engines.EngineOptions(engine="openvino", precision="fp32")
    first = engines.load(stored, options)
    assert (common.ir_folder(stored) / "visual.xml").is_file() and (common.ir_folder(stored) / "visual.bin").is_file()
    monkeypatch.setattr(common, "trace", lambda *a, **k: pytest.fail("converted again despite the cache"))
    again = engines.load(stored, options)
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(first.embed_images(images), again.embed_images(images))


def test_a_read_only_entry_folder_converts_in_memory_with_a_warning(zero_shot_models, monkeypatch, tmp_path,
                                                                   caplog) -> None:
    from engines.openvino import common

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(common, "ir_folder", lambda stored: blocker / "openvino")
    with caplog.at_level(logging.WARNING, logger=common.__name__):
        engine = engines.load(entry("open-clip-vit-b32"), engines.EngineOptions(engine="openvino"))
    assert "converting at each start" in caplog.text
    assert engine.embed_texts(["ein Foto"]).shape == (1, 512)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_image_gets_the_same_answer_alone_and_in_a_batch(species_dev_model, aesthetic_models, precision) -> None:
    """What lets bulk scoring (other batches) equal the HTTP routes exactly, bf16 included."""
    from serving.imaging import decode_image, preprocess

    clip = engines.load(entry("clip-vit-b16-openai"), engines.EngineOptions(engine="openvino", precision=precision))
    species = engines.load(entry("eva02-inat21"), engines.EngineOptions(engine="openvino", precision=precision))
    for engine, run in ((clip, clip.embed_images), (species, lambda x: species.classify(x, 5)[0])):
        images = np.stack([preprocess(decode_image(encode(photo(n)), 10**8), engine.cfg)
                           for n in ("chelsea", "coffee", "astronaut")])
        alone = np.concatenate([run(images[i:i + 1]) for i in range(len(images))])
        np.testing.assert_allclose(run(images), alone, atol=1e-6)


def test_the_openvino_classifier_runs_a_large_batch_in_chunks_with_the_same_answers(species_dev_model,
                                                                                    monkeypatch) -> None:
    """A full adaptive batch of a full-size EVA02-L outgrew 12 GB in one OpenVINO inference; chunks bound it."""
    species = engines.load(entry("eva02-inat21"), engines.EngineOptions(engine="openvino", precision="bf16"))
    images = np.random.default_rng(1).integers(0, 256, (5, species.cfg.height, species.cfg.width, 3), np.uint8)
    alone = np.concatenate([species.probabilities(images[i:i + 1]) for i in range(len(images))])
    sizes: list[int] = []
    compiled = species.model
    monkeypatch.setattr(species, "model", lambda x: (sizes.append(len(x)), compiled(x))[1])
    monkeypatch.setattr(species, "chunk", 2)
    np.testing.assert_allclose(species.probabilities(images), alone, atol=1e-6)
    assert sizes == [2, 2, 1]
    scores, indices = species.classify(images, 3)
    assert scores.shape == indices.shape == (5, 3) and sizes[3:] == [2, 2, 1]


def test_softmax_top_k_matches_torch() -> None:
    import torch

    logits = np.random.default_rng(1).normal(size=(4, 1000)).astype(np.float32) * 5
    probs, indices = softmax_top_k(logits, 5)
    expected, expected_indices = torch.from_numpy(logits).softmax(-1).topk(5)
    np.testing.assert_allclose(probs, expected.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    assert softmax_top_k(logits[:, :3], 5)[1].shape == (4, 3)


def test_the_engine_benchmark_times_every_engine_and_precision_alone(aesthetic_models) -> None:
    from bench import precision as bench_engines

    rows = bench_engines.bare(["clip-vit-b16-openai:dev"], batches=(1, 2), rounds=1)
    assert [r["batch"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row["ms"]) == set(bench_engines.SYSTEMS) and all(ms > 0 for ms in row["ms"].values())
        assert row["speed_up"][bench_engines.BASELINE] == 1.0
    table = "\n".join(bench_engines.markdown({"endpoints": {}, "bare": rows}))
    assert "| clip-vit-b16-openai:dev | 2 |" in table and "openvino-bf16" in table


def test_the_engine_benchmark_runs_the_systems_asked_for_and_always_the_baseline() -> None:
    from bench import precision as bench_engines

    assert list(bench_engines.chosen("openvino-bf16")) == ["torch-fp32", "openvino-bf16"]
    assert list(bench_engines.chosen("")) == list(bench_engines.SYSTEMS)
    with pytest.raises(SystemExit, match="unknown onnx-fp32; choose from torch-fp32"):
        bench_engines.chosen("onnx-fp32")
    table = "\n".join(bench_engines.markdown({"endpoints": {}, "models": {"SPECIES_MODEL": "eva02-inat21:bench"}}))
    assert table.startswith("Served models and settings (every system): `SPECIES_MODEL=eva02-inat21:bench`.")


def test_the_engine_benchmark_reports_changed_batching_settings(monkeypatch) -> None:
    from bench import precision as bench_engines

    monkeypatch.setenv("SPECIES_MODEL", "eva02-inat21:bench")
    monkeypatch.setenv("SPECIES_MAX_LATENCY_MS", "300000")
    monkeypatch.delenv("AESTHETIC_MAX_LATENCY_MS", raising=False)
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "300")
    monkeypatch.setenv("ZERO_SHOT_B32_MODEL", "open-clip-vit-b32:bench")  # --zero-shot-model open-clip-vit-b32
    monkeypatch.delenv("ZERO_SHOT_B32_LAION2B_MODEL", raising=False)
    served = bench_engines.served_models()
    assert served["ZERO_SHOT_B32_MODEL"] == "open-clip-vit-b32:bench"
    assert "ZERO_SHOT_B32_LAION2B_MODEL" not in served
    assert served["SPECIES_MODEL"] == "eva02-inat21:bench" and served["SPECIES_MAX_LATENCY_MS"] == "300000"
    assert served["REQUEST_TIMEOUT_S"] == "300"
    assert "AESTHETIC_MAX_LATENCY_MS" not in served
