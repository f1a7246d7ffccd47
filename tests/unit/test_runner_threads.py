"""Every runner calls its engine on one thread, whichever thread calls its API (whichever engine runs it).

A second thread calling torch gives the process a second OpenMP team, and libgomp then stops spin-waiting: on
2 cores a dev EVA02 forward went from 28.7 ms to 50 ms (see engines/thread.InferenceThread).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engines.thread import InferenceThread


def record_engine_threads(engine, seen: set[int]) -> None:
    """Record the thread of every call into ``engine``'s task methods."""
    for name in ("classify", "probabilities", "embed_images", "embed_texts", "truncated", "apply"):
        if hasattr(engine, name):
            method = getattr(engine, name)
            setattr(engine, name, lambda *a, _m=method, **k: (seen.add(threading.get_ident()), _m(*a, **k))[1])


def call_from_several_threads(coro_fn, n: int = 3) -> list:
    """Run ``coro_fn()`` on the main thread and on ``n`` other threads, each with its own event loop."""
    results = [asyncio.run(coro_fn())]
    with ThreadPoolExecutor(n) as pool:
        results += list(pool.map(lambda _: asyncio.run(coro_fn()), range(n)))
    return results


def test_inference_thread_runs_everything_on_one_thread() -> None:
    thread = InferenceThread("test")
    first = thread.call(threading.get_ident)
    later = call_from_several_threads(lambda: thread.run(threading.get_ident))
    assert first != threading.get_ident() and set(later) == {first}
    with pytest.raises(ZeroDivisionError):  # errors reach the caller
        asyncio.run(thread.run(lambda: 1 / 0))


def test_species_runner_forwards_on_its_inference_thread(species_dev_model) -> None:
    from runners import services

    runner = services()["species"].inner()
    seen: set[int] = set()
    record_engine_threads(runner.engine, seen)
    images = np.zeros((2, runner.cfg.height, runner.cfg.width, 3), np.uint8)
    results = call_from_several_threads(lambda: runner.predict(images))
    assert all(len(r) == 2 for r in results)
    assert seen == {runner.thread.call(threading.get_ident)}, "the engine was called from another thread"


def test_aesthetic_runner_forwards_on_its_inference_thread(aesthetic_models) -> None:
    from runners import services

    runner = services()["aesthetic"].inner()
    seen: set[int] = set()
    record_engine_threads(runner.engine, seen)
    record_engine_threads(runner.head, seen)
    images = np.zeros((3, runner.cfg.height, runner.cfg.width, 3), np.uint8)
    scores = call_from_several_threads(lambda: runner.score(images))
    embeddings = call_from_several_threads(lambda: runner.embed_images(images))
    assert all(s.shape == (3,) for s in scores) and all(e.shape == (3, 512) for e in embeddings)
    assert seen == {runner.thread.call(threading.get_ident)}, "the engine was called from another thread"


def test_zero_shot_runner_forwards_on_its_inference_thread(zero_shot_models) -> None:
    from runners import services

    runner = services()["zero_shot_b32"].inner()
    seen: set[int] = set()
    record_engine_threads(runner.engine, seen)
    images = np.zeros((2, runner.cfg.height, runner.cfg.width, 3), np.uint8)
    image_emb = call_from_several_threads(lambda: runner.embed_images(images))
    text_emb = call_from_several_threads(lambda: runner.embed_texts(["a cat", "a dog"]))
    classes = call_from_several_threads(lambda: runner.class_embeddings(["cat", "owl"], ["a photo of a {}."]))
    assert all(len(e) == 2 for e in image_emb + text_emb + classes)
    assert seen == {runner.thread.call(threading.get_ident)}, "the engine was called from another thread"
