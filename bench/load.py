"""Load generation and measurement shared by the benchmarks: test images, one request per system, concurrency
levels in alternating rounds (the servers not being measured paused), latency percentiles and batch sizes.

bench/run.py and bench/history.py both build on this module; it imports neither.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import re
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import psutil

from tests.support.local_server import Server, process_tree

logger = logging.getLogger(__name__)

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
RUNNER_OF = {"classify": ("SpeciesRunner", "predict"), "score": ("AestheticRunner", "score"),
             "zero-shot": ("ClipL14Runner", "embed_images")}
CLASSES = ["cat", "dog", "bird", "coffee cup", "rocket", "astronaut", "car", "tree"]
TASK = "/api/tasks/zero-shot-image-classification"


def make_images(sizes: list[int]) -> list[bytes]:
    """Real photos resized to each long side and re-encoded as JPEG (quality 90)."""
    import skimage.data
    import skimage.io
    from PIL import Image

    out = []
    for name in PHOTOS:
        array = (skimage.io.imread(Path(skimage.data.__file__).parent / "rocket.jpg") if name == "rocket"
                 else getattr(skimage.data, name)())
        img = Image.fromarray(array).convert("RGB")
        for size in sizes:
            scale = size / max(img.size)
            buf = io.BytesIO()
            img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC).save(
                buf, format="JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def litserve_path(endpoint: str, model: str) -> str:
    """The LitServe peer's route for a benchmark endpoint (bench/litserve_app.py)."""
    return f"/zero_shot/{model}" if endpoint == "zero-shot" else f"/{endpoint}"


async def one_request(client: httpx.AsyncClient, system: str, endpoint: str, image: bytes, model: str) -> bool:
    """One request (for service zero-shot: submit a job, then read it with ``?wait=``, the way clients are meant to
    fetch results; for LitServe, JSON with a base64 image, as its docs send images); True when it succeeded."""
    if system == "litserve":
        body: dict[str, Any] = {"image": base64.b64encode(image).decode()}
        if endpoint == "zero-shot":
            body["classes"] = CLASSES
        return (await client.post(litserve_path(endpoint, model), json=body)).status_code == 200
    if endpoint in ("classify", "score"):
        return (await client.post(f"/{endpoint}", content=image)).status_code == 200
    uri = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    if system == "naive":
        return (await client.post(f"/zero_shot/{model}", json={"image": uri, "classes": CLASSES})).status_code == 200
    response = await client.post(f"{TASK}/{model}/jobs", json={"image": uri, "classes": CLASSES})
    if response.status_code != 200:
        return False
    while True:  # each read is held until the job is complete or failed (or 30 s pass)
        status = (await client.get(f"{TASK}/jobs/{response.json()['id']}", params={"wait": 30})).json()["status"]
        if status in ("complete", "failed"):
            return status == "complete"


async def run_level(url: str, system: str, endpoint: str, images: list[bytes], concurrency: int, requests: int,
                    model: str, first: int = 0) -> tuple[list[float], int, float]:
    """``requests`` requests by ``concurrency`` concurrent clients, cycling the images from index ``first``:
    (latencies in ms, errors, wall seconds)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(first, first + requests))
    # idle connections are dropped before the servers' 5 s keep-alive timeout, so none is reused while it closes
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8,
                          keepalive_expiry=2.0)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            start = time.perf_counter()
            try:
                ok = await one_request(client, system, endpoint, images[i % len(images)], model)
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            errors += not ok

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await one_request(client, system, endpoint, images[0], model)  # warm the connection and the path
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def level_row(concurrency: int, latencies: list[float], errors: int, wall: float) -> dict[str, Any]:
    """Images/s and latency percentiles of one level (all its rounds together)."""
    requests = len(latencies)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"concurrency": concurrency, "requests": requests, "errors": errors, "seconds": round(wall, 3),
            "images_per_s": round((requests - errors) / wall, 2),
            "p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1)}


def batch_histogram(url: str, service: str, method: str) -> tuple[float, float]:
    """(batches, images) the runner's batchable method has run, from the gateway's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text

    def total(name: str) -> float:
        pattern = rf'{name}\{{[^}}]*method_name="{method}"[^}}]*service_name="{service}"[^}}]*\}} ([0-9.e+]+)'
        return sum(float(v) for v in re.findall(pattern, text))

    return total("bentoml_service_adaptive_batch_size_count"), total("bentoml_service_adaptive_batch_size_sum")


def measure(urls: dict[str, str | dict[str, str]], endpoints: list[str], levels: list[int], requests: int,
            images: list[bytes], model: str, rounds: int,
            servers: dict[str, Server] | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every endpoint and level on every system (``urls``: system -> server URL, or endpoint -> URL for a system
    with a server per model, whose ``servers`` are named ``system:endpoint``), side by side: each level is split
    into ``rounds`` rounds that alternate between the systems, so drift in the machine's load falls on all alike.
    The ``servers`` this run started are paused (SIGSTOP) while another one is measured: LitServe's idle
    workers poll their queues and would otherwise take CPU from the others."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {system: {} for system in urls}
    for endpoint in endpoints:
        for level in levels:
            per_round = max(level, -(-max(requests, level) // rounds))
            before = batch_histogram(urls["service"], *RUNNER_OF[endpoint]) if "service" in urls else None
            runs: dict[str, list] = {system: [] for system in urls}
            for r in range(rounds):
                for system, where in urls.items():
                    url = where[endpoint] if isinstance(where, dict) else where
                    key = f"{system}:{endpoint}" if isinstance(where, dict) else system
                    with only_running(key, servers or {}):
                        runs[system].append(asyncio.run(run_level(url, system, endpoint, images, level, per_round,
                                                                  model, first=r * per_round)))
            for system, parts in runs.items():
                row = level_row(level, [ms for lat, _, _ in parts for ms in lat], sum(e for _, e, _ in parts),
                                sum(w for _, _, w in parts))
                if system == "service" and before is not None:
                    batches, seen = (a - b for a, b in zip(batch_histogram(urls["service"], *RUNNER_OF[endpoint]),
                                                           before))
                    row["mean_batch"] = round(seen / batches, 2) if batches else None
                logger.info("%s %s c=%d: %.1f img/s p50 %.1f ms errors %d", system, endpoint, level,
                            row["images_per_s"], row["p50_ms"], row["errors"])
                results[system].setdefault(endpoint, []).append(row)
    return results


@contextlib.contextmanager
def only_running(keep: str, servers: dict[str, Server]) -> Iterator[None]:
    """Suspend every started server but ``servers[keep]`` (all their processes) for the block, then resume them."""
    paused = [p for name, server in servers.items() if name != keep for p in process_tree(server)]
    for proc in paused:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.suspend()
    try:
        yield
    finally:
        for proc in paused:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()
