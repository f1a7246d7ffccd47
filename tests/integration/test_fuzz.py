"""Property-based fuzzing of every public route, bounded in examples and time: no input gets a 5xx."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
JPEG = encode(photo("chelsea"))
TASK = "/api/tasks/zero-shot-image-classification"
CONTENT_TYPES = st.sampled_from(["", "image/jpeg", "image/png", "application/json", "text/plain",
                                 "multipart/form-data", "application/x-www-form-urlencoded",
                                 "application/vnd.bentoml+pickle", "image/gif; charset=utf-8"])


def mutate(data: bytes, cuts: list[int], flips: list[int]) -> bytes:
    out = bytearray(data)
    for i in flips:
        out[i % len(out)] ^= 0xFF
    for c in cuts:
        out = out[: max(1, c % len(out))]
    return bytes(out)


@FUZZ
@given(path=st.sampled_from(["/classify", "/score", "/classify?top_k=5", "/classify?top_k=x"]),
       body=st.one_of(st.binary(max_size=2048),
                      st.builds(mutate, st.just(JPEG), st.lists(st.integers(0, 10**6), max_size=2),
                                st.lists(st.integers(0, 10**6), max_size=8))),
       content_type=CONTENT_TYPES)
def test_raw_image_routes_never_answer_5xx(server, path: str, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=60)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "detail"}


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                       max_leaves=12)


@FUZZ
@given(route=st.sampled_from([f"{TASK}/open-clip-vit-b32/jobs", f"{TASK}/open-clip-vit-b32/batched/jobs",
                              f"{TASK}/batched/open-clip-vit-b32/jobs", f"/api/legacy/tasks/zero-shot-image-classification/open-clip-vit-b32/jobs",
                              f"{TASK}/nope/jobs", "/zero_shot", "/submit_zero_shot", "/submit_zero_shot_batch",
                              "/zero_shot_job"]),
       body=st.one_of(JSONISH, st.fixed_dictionaries({"image": JSONISH, "classes": JSONISH, "config": JSONISH,
                                                       "model": JSONISH, "id": JSONISH})),
       content_type=CONTENT_TYPES)
def test_json_routes_never_answer_5xx(server, route: str, body, content_type: str) -> None:
    import json

    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{server.url}{route}", content=json.dumps(body), headers=headers, timeout=60)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "detail"}, response.text
