"""PRECISION: which precision ``auto`` picks, and bf16 answers staying within the parity bounds of fp32 ones on real
photos with dev models (embedding cosine >= 0.9999, the same species top-5, aesthetic scores within 0.05, zero-shot
probabilities within 2e-3: the aim of 1e-3 is not met by every model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engines
from engines.torch.common import resolve_precision
from serving.imaging import decode_image, preprocess
from tests.conftest import encode, photo

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(("setting", "device", "flags", "expected"), [
    ("auto", CPU, {"avx512f", "avx512_bf16"}, "bf16"),
    ("auto", CPU, {"amx_bf16", "amx_tile"}, "bf16"),
    ("auto", CPU, {"avx2", "avx512f"}, "fp32"),  # bf16 without native support is slower than fp32
    ("auto", CUDA, set(), "bf16"),
    ("fp32", CPU, {"avx512_bf16"}, "fp32"),
    ("bf16", CPU, set(), "bf16"),
])
def test_auto_picks_bf16_where_it_is_native(setting, device, flags, expected) -> None:
    assert resolve_precision(setting, device, frozenset(flags)) == expected


def test_an_unknown_precision_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="PRECISION='fp16': use one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)


def both(name: str):
    """(fp32 engine, bf16 engine, preprocessed real photos) for catalog entry ``name``."""
    from model_store import open_entry

    stored = open_entry(name)
    cfg = stored.meta.require_preprocess()
    images = np.stack([preprocess(decode_image(encode(photo(n)), 10**8), cfg) for n in PHOTOS])
    fp32, bf16 = (engines.load(stored, engines.EngineOptions(precision=p)) for p in ("fp32", "bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    return fp32, bf16, images


def test_bf16_species_keep_the_top5_of_fp32(species_dev_model) -> None:
    fp32, bf16, images = both("eva02-inat21")
    (p32, i32), (p16, i16) = fp32.classify(images, 5), bf16.classify(images, 5)
    assert [set(a) for a in i32.tolist()] == [set(b) for b in i16.tolist()]
    np.testing.assert_allclose(p16, p32, atol=1e-3)


@pytest.mark.parametrize("name", ["clip-vit-b16-openai", "clip-vit-large-patch14", "open-clip-vit-b32",
                                  "open-clip-vit-b32-laion2b"])
def test_bf16_clip_embeddings_and_zero_shot_stay_within_parity(aesthetic_models, zero_shot_models, name) -> None:
    from capabilities.zero_shot.requests import probabilities
    from model_store import open_entry

    fp32, bf16, images = both(name)
    assert (fp32.embed_images(images) * bf16.embed_images(images)).sum(-1).min() >= 0.9999
    if "text" not in open_entry(name).entry.towers:
        return
    texts = ["a photo of a cat.", "a photo of coffee.", "ein Foto von einer Rakete.", "宇航员的照片。"]
    t32, t16 = fp32.embed_texts(texts), bf16.embed_texts(texts)
    assert (t32 * t16).sum(-1).min() >= 0.9999
    scale = open_entry(name).meta.logit_scale
    # 1e-3 is the aim; measured up to 1.24e-3 here (dev ViT-L/14 and ViT-B/32 LAION-2B), one reason bf16 is not
    # the default yet (README, CPU precision)
    np.testing.assert_allclose(probabilities(bf16.embed_images(images), t16, scale),
                               probabilities(fp32.embed_images(images), t32, scale), atol=2e-3)


def test_bf16_aesthetic_scores_stay_within_005_of_fp32(aesthetic_models) -> None:
    from model_store import open_entry

    fp32, bf16, images = both("clip-vit-b16-openai")
    head = engines.load(open_entry("laion-aesthetic-vit-b16"), engines.EngineOptions())
    np.testing.assert_allclose(head.apply(bf16.embed_images(images)), head.apply(fp32.embed_images(images)),
                               atol=0.05)


def test_unset_keeps_bf16_autocast_on_cuda_and_fp32_on_a_cpu() -> None:
    assert resolve_precision("", CUDA, frozenset()) == "bf16"
    assert resolve_precision("", CPU, frozenset({"avx512_bf16"})) == "fp32"


def test_a_bf16_runner_says_so_and_so_does_the_answer(species_dev_model, monkeypatch) -> None:
    import asyncio
    import dataclasses
    from types import SimpleNamespace

    import catalog
    import runners.factory as factory
    from capabilities.species import Species
    from serving.admission import RunnerGate
    from tests.unit.test_gateway import make_ctx

    monkeypatch.setattr(factory, "settings", dataclasses.replace(factory.settings, precision="bf16"))
    runner = factory.make_runner(catalog.species_model()).inner()
    assert asyncio.run(runner.info())["precision"] == "bf16"

    species = Species(lambda key: SimpleNamespace(to_async=runner), {"species": RunnerGate(4, 1.0)})
    ctx = make_ctx()
    answer = asyncio.run(species.classify(encode(photo("chelsea")), ctx))
    assert answer.model.precision == "bf16" and ctx.response.headers["X-Model-Precision"] == "bf16"
    assert len(answer.predictions) == 3
