"""Zero-shot request validation, probability maths and the class-embedding cache."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from runners.factory import prompts_for
from serving.cache import LRU
from serving.errors import ServiceError
from capabilities.zero_shot.requests import check_classes, check_templates, check_wait, decode_data_uri, probabilities


def _error(fn, *args) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        fn(*args)
    return info.value


def test_data_uri_round_trip() -> None:
    payload = b"\xff\xd8\xff\xe0 some jpeg bytes"
    assert decode_data_uri("data:image/jpeg;base64," + base64.b64encode(payload).decode()) == payload
    assert decode_data_uri("data:;base64," + base64.b64encode(payload).decode()) == payload
    assert decode_data_uri(base64.b64encode(payload).decode()) == payload  # bare base64, as FES clients send


@pytest.mark.parametrize("uri", ["", "not a uri", "data:image/jpeg,rawtext", "data:image/jpeg;base64,@@@@",
                                 "data:image/jpeg;base64,", "https://example.com/cat.jpg", "/9j/4AAQSkZJRg", "data:image/png,/9j/4AAQ"])
def test_malformed_data_uris_are_400(uri: str) -> None:
    err = _error(decode_data_uri, uri)
    assert (err.status, err.error) == (400, "invalid_data_uri")


def test_oversized_data_uri_is_413() -> None:
    err = _error(decode_data_uri, "data:image/png;base64," + "A" * 100, 50)
    assert (err.status, err.error) == (413, "payload_too_large")


@pytest.mark.parametrize("classes,fragment", [
    ([], "at least one"), (["cat", "cat"], "unique"), (["cat", ""], "non-empty"), (["  "], "non-empty"),
    ([f"c{i}" for i in range(257)], "limit is 256"), (["x" * 201], "limit is 200"), (["cat", 3], "non-empty"),
])
def test_bad_class_lists_are_400(classes, fragment: str) -> None:
    err = _error(check_classes, classes)
    assert err.status == 400 and err.error == "invalid_classes" and fragment in err.detail


def test_classes_keep_their_order() -> None:
    assert check_classes(["zebra", "ant", "moth"]) == ["zebra", "ant", "moth"]


@pytest.mark.parametrize("templates", [[], ["no placeholder"], ["{} and {}"], ["a {}.", "a {}."], ["{}" + "x" * 300]])
def test_bad_templates_are_400(templates) -> None:
    assert _error(check_templates, templates).error == "invalid_templates"


def test_default_template_and_literal_substitution() -> None:
    assert check_templates(None) == ["a photo of a {}."]
    # "{0}"-style fields in class names or templates are text, never format directives
    assert prompts_for(["{0.__class__}", "dog"], ["a {} photo", "{} (x)"]) == [
        "a {0.__class__} photo", "{0.__class__} (x)", "a dog photo", "dog (x)"]


def test_probabilities_are_softmax_of_scaled_cosine() -> None:
    rng = np.random.default_rng(0)
    images, classes = rng.normal(size=(2, 8)), rng.normal(size=(3, 8))
    probs = probabilities(images * 5, classes * 0.1, logit_scale=100.0)  # scale of the inputs must not matter
    cos = (images / np.linalg.norm(images, axis=1, keepdims=True)) @ (
        classes / np.linalg.norm(classes, axis=1, keepdims=True)).T
    expected = np.exp(100 * cos) / np.exp(100 * cos).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities(images, classes[::-1], 100.0), probs[:, ::-1])


def test_lru_evicts_least_recently_used() -> None:
    cache = LRU(2)
    cache.put("a", np.zeros(1))
    cache.put("b", np.ones(1))
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", np.ones(1))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 1)


def test_weighted_lru_holds_at_most_its_capacity_in_rows() -> None:
    cache = LRU(5, weight=len)
    cache.put("three", np.zeros((3, 2)))
    cache.put("two", np.zeros((2, 2)))
    cache.put("one", np.zeros((1, 2)))  # 6 rows: the oldest entry goes
    assert cache.get("three") is None and cache.stats()["weight"] == 3
    cache.put("six", np.zeros((6, 2)))  # heavier than the whole cache: not kept, nothing evicted
    assert cache.get("six") is None and cache.get("two") is not None and len(cache) == 2
    cache.put("two", np.zeros((4, 2)))  # replacing an entry re-weighs it
    assert cache.stats()["weight"] == 5


def test_repeated_class_lists_cost_no_text_tower_work(zero_shot_models) -> None:
    from runners import services

    runner = services()["zero_shot_l14"].inner()
    calls: list[list[str]] = []
    encode = runner._encode_texts
    runner._encode_texts = lambda texts: calls.append(list(texts)) or encode(texts)
    templates = ["a photo of a {}.", "a drawing of a {}."]

    def class_embeddings(classes: list[str], templates: list[str]) -> np.ndarray:
        return asyncio.run(runner.class_embeddings(classes=classes, templates=templates))

    first = class_embeddings(["cat", "dog"], templates)
    assert calls == [["a photo of a cat.", "a drawing of a cat.", "a photo of a dog.", "a drawing of a dog."]]
    again = class_embeddings(["dog", "cat"], templates)
    assert len(calls) == 1 and np.array_equal(again, first[::-1])
    class_embeddings(["cat", "owl"], templates)
    assert calls[-1] == ["a photo of a owl.", "a drawing of a owl."]  # only the new class is encoded
    class_embeddings(["cat"], templates[:1])
    assert calls[-1] == ["a photo of a cat."]  # another template set is another cache key
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("value,expected", [(None, 0.0), ("", 0.0), ("2.5", 2.5), (30, 30.0), (0, 0.0)])
def test_wait_accepts_seconds_from_0_to_30(value, expected) -> None:
    assert check_wait(value) == expected


@pytest.mark.parametrize("value", ["abc", "-0.1", "30.5", "nan", "inf", float("nan"), [1]])
def test_bad_wait_says_what_to_send(value) -> None:
    err = _error(check_wait, value)
    assert err.status == 400 and err.error == "invalid_wait" and "0 to 30" in err.detail


def test_fes_raw_cosine_probabilities_follow_from_ours() -> None:
    """README (Migrating from FES): FES's softmax(cos) is softmax(log(p) / s) of our p = softmax(s * cos)."""
    rng = np.random.default_rng(0)
    images, classes = rng.normal(size=(3, 16)), rng.normal(size=(5, 16))
    ours, fes = probabilities(images, classes, 100.0), probabilities(images, classes, 1.0)
    logits = np.log(ours) / 100.0
    recovered = np.exp(logits - logits.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(recovered / recovered.sum(axis=-1, keepdims=True), fes, rtol=1e-9)


def test_rest_routes_before_the_gateway_binds_its_jobs_answer_503_starting(monkeypatch) -> None:
    from starlette.testclient import TestClient

    from capabilities.fes import rest

    monkeypatch.setattr(rest.state, "jobs", None, raising=False)
    response = TestClient(rest).get("/models/open-clip-vit-b32/status")
    assert response.status_code == 503 and response.json()["error"] == "starting"
