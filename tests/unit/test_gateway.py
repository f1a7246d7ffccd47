"""Gateway behaviour with a fake runner: response shape, top_k, and runner failures."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace

import numpy as np
import pytest
from starlette.datastructures import Headers, MutableHeaders

from runners import TopK
from tests.conftest import encode, photo


class FakeSpecies:
    """Stands in for the SpeciesRunner dependency; records what it was sent."""

    def __init__(self, fail: bool = False, shed: bool = False) -> None:
        self.fail, self.shed, self.batches = fail, shed, []
        self.to_async = SimpleNamespace(predict=self.predict)

    async def predict(self, images: np.ndarray) -> list[TopK]:
        self.batches.append(images)
        if self.shed:
            from bentoml.exceptions import ServiceUnavailable

            raise ServiceUnavailable("process is overloaded")
        if self.fail:
            raise RuntimeError("CUDA error: device-side assert triggered at /secret/path.py")
        return [TopK(labels=[f"taxon {i}" for i in range(10)], scores=[0.5 / 2**i for i in range(10)])]


def make_ctx(query: dict | None = None, body_len: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        request=SimpleNamespace(query_params=query or {}, headers=Headers({"content-length": str(body_len)})),
        response=SimpleNamespace(status_code=200, headers=MutableHeaders()),
    )


@pytest.fixture
def gateway(species_dev_model, aesthetic_models, zero_shot_models):
    from service import Gateway

    gw = Gateway.inner()
    gw.species = FakeSpecies()
    return gw


def call(gw, body: bytes, ctx) -> object:
    return asyncio.run(gw.classify(body, ctx=ctx))


def test_classify_sends_one_preprocessed_uint8_image_and_trims_to_top_k(gateway) -> None:
    ctx = make_ctx({"top_k": "5"})
    result = call(gateway, encode(photo("coffee")), ctx)
    (batch,) = gateway.species.batches
    assert batch.dtype == np.uint8 and batch.shape == (1, 224, 224, 3)
    assert [p.species for p in result.predictions] == [f"taxon {i}" for i in range(5)]
    assert result.model.variant == "dev"
    assert ctx.response.headers["X-Model-Variant"] == "dev"


def test_default_top_k_is_three(gateway) -> None:
    assert len(call(gateway, encode(photo("coffee")), make_ctx()).predictions) == 3


@pytest.mark.parametrize("top_k", ["0", "11", "three", "-1", ""])
def test_bad_top_k_is_400(gateway, top_k: str) -> None:
    ctx = make_ctx({"top_k": top_k})
    response = call(gateway, encode(photo("coffee")), ctx)
    assert response.status_code == ctx.response.status_code == 400
    assert json.loads(response.body)["error"] == "invalid_parameter"
    assert gateway.species.batches == []


def test_runner_failure_is_503_json_without_internals(gateway) -> None:
    gateway.species = FakeSpecies(fail=True)
    ctx = make_ctx()
    response = call(gateway, encode(photo("coffee")), ctx)
    body = json.loads(response.body)
    assert response.status_code == ctx.response.status_code == 503
    assert body == {"error": "inference_failed", "detail": "The species model failed; retry shortly."}


def test_empty_body_is_named_as_such(gateway) -> None:
    ctx = make_ctx(body_len=0)
    response = call(gateway, b"{}", ctx)  # what BentoML hands over for an empty body
    assert response.status_code == 400 and json.loads(response.body)["error"] == "empty_body"


def test_shed_request_is_503_overloaded_with_retry_after(gateway) -> None:
    gateway.species = FakeSpecies(shed=True)
    ctx = make_ctx()
    response = call(gateway, encode(photo("coffee")), ctx)
    assert response.status_code == ctx.response.status_code == 503
    assert json.loads(response.body)["error"] == "overloaded"
    assert response.headers["retry-after"] == "1"


def test_runner_calls_are_sent_again_when_the_pooled_connection_was_closed() -> None:
    import aiohttp

    from serving.errors import call_runner

    def flaky(failures: list[Exception]):
        calls = []

        async def method(x: int) -> int:
            calls.append(x)
            if len(calls) <= len(failures):
                raise failures[len(calls) - 1]
            return x * 2

        return method, calls

    closed = aiohttp.ClientOSError(None, "Can not write request body")
    method, calls = flaky([closed, aiohttp.ServerDisconnectedError()])
    assert asyncio.run(call_runner(method, 21)) == 42 and calls == [21, 21, 21]
    method, calls = flaky([closed] * 5)  # a runner that stays unreachable still fails, after five tries
    with pytest.raises(aiohttp.ClientOSError):
        asyncio.run(call_runner(method, 1))
    assert len(calls) == 5
    method, calls = flaky([ValueError("bad batch")])  # errors from the model itself are not retried
    with pytest.raises(ValueError):
        asyncio.run(call_runner(method, 1))
    assert calls == [1]


class FakeZeroShot:
    """Stands in for a zero-shot runner: a fixed image embedding and one embedding per class name."""

    def __init__(self, short_by: int = 0) -> None:
        self.class_calls: list[tuple[list[str], list[str]]] = []
        self.short_by = short_by
        self.to_async = SimpleNamespace(embed_images=self.embed_images, class_embeddings=self.class_embeddings)

    async def embed_images(self, images: np.ndarray) -> np.ndarray:
        return np.tile(np.eye(4, dtype=np.float32)[:1], (len(images), 1))

    async def class_embeddings(self, classes: list[str], templates: list[str]) -> np.ndarray:
        self.class_calls.append((list(classes), list(templates)))
        rows = np.eye(4, dtype=np.float32)[[len(c) % 4 for c in classes]]
        return rows[: len(rows) - self.short_by]


def zero_shot(gw, classes: list[str], templates: list[str] | None = None) -> object:
    from capabilities.zero_shot.requests import ZeroShotConfig

    uri = "data:image/jpeg;base64," + base64.b64encode(encode(photo("coffee"))).decode()
    return asyncio.run(gw.zero_shot("open-clip-vit-b32", uri, classes, ZeroShotConfig(templates=templates),
                                    ctx=make_ctx()))


def test_a_repeated_class_list_is_answered_from_the_gateway_memo(gateway) -> None:
    gateway.zero_shot_b32 = runner = FakeZeroShot()
    first = zero_shot(gateway, ["abcd", "abc"])
    assert zero_shot(gateway, ["abcd", "abc"]) == first and len(runner.class_calls) == 1
    swapped = zero_shot(gateway, ["abc", "abcd"])  # order is part of the key: probabilities follow the classes
    assert swapped.probabilities == first.probabilities[::-1] and len(runner.class_calls) == 2
    zero_shot(gateway, ["abcd", "abc"], ["a drawing of a {}."])  # other templates, other embeddings
    assert runner.class_calls[-1] == (["abcd", "abc"], ["a drawing of a {}."]) and len(runner.class_calls) == 3
    assert gateway.class_memo["open-clip-vit-b32"].stats() | {"weight": 0} == {
        "size": 3, "weight": 0, "hits": 1, "misses": 3}


def test_a_runner_answer_of_the_wrong_length_is_503_and_not_remembered(gateway) -> None:
    gateway.zero_shot_b32 = runner = FakeZeroShot(short_by=1)
    response = zero_shot(gateway, ["abcd", "abc"])
    assert response.status_code == 503 and json.loads(response.body)["error"] == "inference_failed"
    runner.short_by = 0
    assert len(zero_shot(gateway, ["abcd", "abc"]).probabilities) == 2 and len(runner.class_calls) == 2


def test_a_request_shed_by_the_runner_gate_is_503_overloaded(gateway) -> None:
    from serving.admission import RunnerGate

    release = asyncio.Event()

    class HeldSpecies(FakeSpecies):
        async def predict(self, images: np.ndarray) -> list[TopK]:
            await release.wait()  # holds the only slot until the other request has been answered
            return await super().predict(images)

    gateway.species = HeldSpecies()
    gateway.gates["species"] = RunnerGate(limit=1, wait_s=0.05)
    body = encode(photo("coffee"))

    async def two() -> tuple:
        tasks = [asyncio.ensure_future(gateway.classify(body, ctx=make_ctx())) for _ in range(2)]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        release.set()
        return next(iter(done)).result(), await next(iter(pending))

    shed, served = asyncio.run(two())
    assert shed.status_code == 503 and json.loads(shed.body)["error"] == "overloaded"
    assert shed.headers["retry-after"] == "1"
    assert len(served.predictions) == 3 and len(gateway.species.batches) == 1


def test_when_one_call_fails_the_others_are_cancelled() -> None:
    from service import gather_or_cancel

    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def shed() -> None:
        raise RuntimeError("shed")

    async def run() -> None:
        with pytest.raises(RuntimeError, match="shed"):
            await asyncio.wait_for(gather_or_cancel([slow(), shed(), slow()]), 5)
        await asyncio.sleep(0)  # let the cancellations land

    asyncio.run(run())
    assert cancelled == [True, True]

    async def fine() -> list:
        return await gather_or_cancel([asyncio.sleep(0, result=i) for i in range(3)])

    assert asyncio.run(fine()) == [0, 1, 2]
