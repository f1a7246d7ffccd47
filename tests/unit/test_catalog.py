"""The model catalog: each model is named once, and everything else is derived from its entry."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import catalog
from tests.conftest import ROOT


def test_every_entry_is_saved_served_and_listed(species_dev_model, aesthetic_models, zero_shot_models) -> None:
    import service
    from bulk.__main__ import parse_args
    from capabilities.embedding import TOWERS
    from capabilities.zero_shot import MODELS as ZERO_SHOT
    from capabilities.fes.rest import list_models
    from model_store import EntryMetadata, open_entry
    from scripts.save_models import build_parser

    served = {m.key: m for m in catalog.served()}
    assert set(service.RUNNERS) == set(served) == set(service.Gateway.dependencies)
    assert {s.name for s in service.RUNNERS.values()} == {m.runner for m in served.values()}
    gateway = service.Gateway.inner()
    assert set(gateway.gates) == set(served)
    for entry in catalog.MODELS:
        stored = open_entry(entry.name)
        assert EntryMetadata.of(stored.model).kind == entry.kind and stored.meta.engine == "torch"
        runner = service.RUNNERS.get(entry.key) if entry.key else None
        if runner is not None:
            assert entry.name in {m.tag.name for m in runner.models}
        assert (entry.name in ZERO_SHOT) == entry.zero_shot
        assert (entry.name in TOWERS) == bool(entry.alias)
    assert set(asyncio.run(list_models(gateway.jobs))) == {m.name for m in catalog.MODELS if m.kind == "clip"}
    assert gateway.jobs.task("zero-shot-image-classification").models() == [m.name for m in catalog.zero_shot_models()]
    assert gateway.jobs.task("text-embedding").models() == [m.name for m in catalog.embedding_models()]
    assert set(build_parser().parse_args(["zero-shot", "--model", "open-clip-vit-b32"]).model_name.split()) == {
        "open-clip-vit-b32"}
    assert parse_args(["src", "--out", "o", "--embedding", ",".join(catalog.aliases())]).embedding
    assert catalog.gpu_share() == round(1 / len(served), 4)


def test_a_clip_model_added_to_the_catalog_alone_is_saved_served_and_listed(tmp_path) -> None:
    """One new catalog entry, nothing else: the save step registers it, a runner serves it, the gateway gates
    it, and the zero-shot, embedding, REST, save and bulk listings carry it."""
    code = textwrap.dedent("""
        import asyncio, dataclasses, json, os
        import numpy as np
        import catalog
        base = catalog.entry("open-clip-vit-b32-laion2b")
        extra = dataclasses.replace(base, name="test-clip-extra", setting="TEST_CLIP_EXTRA_MODEL",
                                    runner="TestClipExtraRunner", key="test_clip_extra", alias="extra")
        catalog.MODELS = (*catalog.MODELS, extra)
        os.environ["TEST_CLIP_EXTRA_MODEL"] = "test-clip-extra:dev"
        from scripts.save_models import build_parser, save
        saved = save(build_parser().parse_args(["zero-shot", "--dev", "--model", "test-clip-extra"]))
        import service
        from bulk.__main__ import parse_args
        from capabilities.embedding import tower_name
        from capabilities.fes.rest import list_models
        runner = service.RUNNERS["test_clip_extra"].inner()
        classes = asyncio.run(runner.class_embeddings(["cat", "owl"], ["a photo of a {}."]))
        image = asyncio.run(runner.embed_images(np.zeros((1, 224, 224, 3), np.uint8)))
        gateway = service.Gateway.inner()
        print(json.dumps({"saved": saved, "runner": service.RUNNERS["test_clip_extra"].name,
                          "dependency": "test_clip_extra" in service.Gateway.dependencies,
                          "gate": "test_clip_extra" in gateway.gates,
                          "zero_shot": "test-clip-extra" in gateway.zero_shot_api.entries,
                          "rest": asyncio.run(list_models(gateway.jobs)),
                          "text": gateway.jobs.task("text-embedding").models(), "embed": tower_name("extra"),
                          "bulk": parse_args(["s", "--out", "o", "--embedding", "extra"]).embedding,
                          "shapes": [list(classes.shape), list(image.shape)]}))
    """)
    env = {**os.environ, "TEST_CLIP_EXTRA_MODEL": "test-clip-extra:dev"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["saved"]["TEST_CLIP_EXTRA_MODEL"] == "test-clip-extra:dev"
    assert got["runner"] == "TestClipExtraRunner" and got["dependency"] and got["gate"] and got["zero_shot"]
    assert "test-clip-extra" in got["rest"] and "test-clip-extra" in got["text"]
    assert got["embed"] == "test-clip-extra" and got["bulk"] == "extra"
    assert got["shapes"] == [[2, 512], [1, 512]]


class FakeEngine:
    """A second backend for CLIP towers: constant embeddings, and a record of what it was given."""

    backend = "fake"
    device = "nowhere"
    precision = "fp32"
    context_length = 77
    calls: list[tuple[int, int, int]] = []

    def __init__(self, stored, options) -> None:
        self.dim = stored.meta.embed_dim

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        FakeEngine.calls.append(images.shape[:3])
        out = np.zeros((len(images), self.dim), np.float32)
        out[:, 0] = 1.0
        return out

    def embed_texts(self, texts) -> np.ndarray:
        return self.embed_images(np.zeros((len(texts), 1, 1, 3), np.uint8))

    def truncated(self, texts) -> list[bool]:
        return [len(t.split()) > self.context_length for t in texts]

    def warm_up(self) -> None:
        pass


@pytest.fixture
def fake_engine_entry(aesthetic_models, monkeypatch):
    """The dev ViT-B/16 stored again with ``engine: fake`` in its metadata, and the service pointed at it."""
    import bentoml

    import engines
    import serving.settings
    from model_store import EntryMetadata

    monkeypatch.setitem(engines._LOADERS, ("fake", "clip"), FakeEngine)
    clip, _ = aesthetic_models
    tag = "clip-vit-b16-openai:fake-engine"
    if not any(str(m.tag) == tag for m in bentoml.models.list("clip-vit-b16-openai")):
        meta = EntryMetadata.of(clip).model_copy(update={"engine": "fake"})
        with bentoml.models.create(tag, labels=dict(clip.info.labels), module="open_clip") as entry:
            for f in os.listdir(clip.path):
                if os.path.isfile(os.path.join(clip.path, f)) and not f.endswith(".yaml"):
                    os.link(os.path.join(clip.path, f), os.path.join(entry.path, f))
            meta.write(entry)
    settings = serving.settings.settings
    tags = {**settings.model_tags, "clip-vit-b16-openai": tag}
    monkeypatch.setattr(serving.settings, "settings", dataclasses.replace(settings, model_tags=tags))
    FakeEngine.calls.clear()
    return tag


def test_a_second_engine_named_by_the_store_entry_runs_in_the_runner_and_in_bulk(fake_engine_entry) -> None:
    import runners.factory
    from bulk.run import make_plan

    runner = runners.factory.make_runner(catalog.entry("clip-vit-b16-openai")).inner()
    assert runner.engine.backend == "fake" and asyncio.run(runner.info())["engine"] == "fake"
    images = np.zeros((3, 224, 224, 3), np.uint8)
    assert asyncio.run(runner.embed_images(images))[:, 0].tolist() == [1.0, 1.0, 1.0]

    (stage,) = make_plan(species=False, aesthetic=False, embeddings=["clip-vit-b16-openai"], top_k=3).stages
    actor = stage.cls(**stage.kwargs, num_threads=1)
    batch = {"path": np.array(["a", "b"], object), "error": np.array(["", ""], object),
             "error_detail": np.array(["", ""], object), "pixels_b16": images[:2]}
    assert actor(batch)["embedding_b16"][:, 0].tolist() == [1.0, 1.0]
    assert (2, 224, 224) in FakeEngine.calls and (3, 224, 224) in FakeEngine.calls


def test_an_engine_that_cannot_run_the_entry_is_refused_by_name(fake_engine_entry, monkeypatch) -> None:
    import engines
    from model_store import open_entry

    monkeypatch.delitem(engines._LOADERS, ("fake", "clip"))
    with pytest.raises(RuntimeError, match="asks for the 'fake' engine, which cannot run clip models here; "
                                           "available: torch, openvino"):
        engines.load(open_entry("clip-vit-b16-openai"), engines.EngineOptions())
