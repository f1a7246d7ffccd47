"""What the job store costs: SQLite vs PostgreSQL, side by side in one run (``benchmark.py --jobs-only``).

1. The store alone, in this process: the real store and ``JobWorker`` with an inference step that returns at
   once, so every millisecond is the store's. A job is submitted, run and finished; the client waits for it
   with ``wait_until_final``. Two paths:
   - ``local``: the submitting worker has a free slot and leases the job in the same write (the default path);
   - ``queued``: another handle submits (as another replica, or a gateway worker with no free slot, would) and
     the worker claims it when it wakes: at once through NOTIFY on PostgreSQL, at its next 0.25 s poll on SQLite.
   At concurrency 1 and 32: jobs/s and p50/p95 latency.
2. Over HTTP against a real ``bentoml serve`` per store (dev models): the p50 of a job (submit, then
   ``GET ...?wait=30``) minus the p50 of a direct ``POST /zero_shot`` for the same 224 px image, at concurrency 1.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from jobs import COMPLETE, JobWorker, open_job_store, wait_until_final
from tests.support.local_postgres import PostgresServer
from tests.support.local_server import own_home, start_server, stopped_at_exit

logger = logging.getLogger(__name__)
PIXELS = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
TASK = "/api/tasks/zero-shot-image-classification"
MODEL = "clip-vit-large-patch14"
CLASSES = ["cat", "dog", "bird"]


def _stats(latencies: list[float], wall: float) -> dict[str, Any]:
    p50, p95 = np.percentile(latencies, [50, 95])
    return {"jobs": len(latencies), "jobs_per_s": round(len(latencies) / wall, 1), "p50_ms": round(float(p50), 2),
            "p95_ms": round(float(p95), 2)}


async def _store_level(url: str, path: str, concurrency: int, jobs: int, seconds: float = 10) -> dict[str, Any]:
    """Up to ``jobs`` jobs by ``concurrency`` clients, or as many as ``seconds`` allow."""
    store = open_job_store(url, retention_s=3600, lease_s=15)
    submitter = open_job_store(url, retention_s=3600, lease_s=15)
    store.init()
    submitter.init()

    async def execute(job, pixels) -> dict[str, list[float]]:
        return {"probabilities": [1.0]}

    async def ready() -> None:
        return None

    worker = JobWorker(store, execute, concurrency=64, max_attempts=3, ready=ready)
    worker.start()
    while not worker._started:
        await asyncio.sleep(0.01)
    latencies: list[float] = []
    left = iter(range(jobs))

    async def client() -> None:
        for _ in left:
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            if path == "local":
                job = await worker.submit(MODEL, False, PIXELS, CLASSES, ["a photo of a {}."])
            else:
                job = await asyncio.to_thread(submitter.submit, MODEL, False, PIXELS, CLASSES, ["a photo of a {}."])
            done = await wait_until_final(store, job.id, 30, worker)
            assert done is not None and done.status == COMPLETE, done
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    await worker.stop()
    store.close()
    submitter.close()
    return _stats(latencies, wall)


def _http_level(url: str, body: dict, job: bool, concurrency: int, requests: int) -> dict[str, Any]:
    async def run() -> tuple[list[float], float]:
        latencies: list[float] = []
        left = iter(range(requests))
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async def one() -> None:
                if job:
                    submitted = (await client.post(f"{TASK}/{MODEL}/jobs", json=body)).json()
                    status = (await client.get(f"{TASK}/jobs/{submitted['id']}", params={"wait": 30})).json()
                    assert status["status"] == "complete", status
                else:
                    response = await client.post("/zero_shot", json={"model": MODEL, **body})
                    assert response.status_code == 200, response.text

            async def worker() -> None:
                for _ in left:
                    start = time.perf_counter()
                    await one()
                    latencies.append((time.perf_counter() - start) * 1000)

            await one()  # warm the path (and the class-embedding cache)
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies, time.perf_counter() - start

    latencies, wall = asyncio.run(run())
    return _stats(latencies, wall)


def run(levels: list[int], jobs: int, rounds: int, http_requests: int, logs: Path) -> dict[str, Any]:
    """The whole comparison; PostgreSQL is a throwaway local server (tests/support/local_postgres.py)."""
    import io

    import skimage.data
    from PIL import Image

    pg = PostgresServer(durable=True)  # fsync on, as in production
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    urls = {"sqlite": f"sqlite:///{tmp / 'jobs.sqlite'}", "postgres": pg.new_database("bench")}
    report: dict[str, Any] = {"store": {}, "http": {}}
    try:
        for path in ("local", "queued"):
            for level in levels:
                parts: dict[str, list] = {backend: [] for backend in urls}
                for _ in range(rounds):  # alternate the backends, so machine drift falls on both alike
                    for backend, url in urls.items():
                        parts[backend].append(asyncio.run(_store_level(url, path, level, jobs // rounds)))
                for backend, rows in parts.items():
                    row = {"path": path, "concurrency": level,
                           "jobs_per_s": round(float(np.median([r["jobs_per_s"] for r in rows])), 1),
                           "p50_ms": round(float(np.median([r["p50_ms"] for r in rows])), 2),
                           "p95_ms": round(float(np.median([r["p95_ms"] for r in rows])), 2)}
                    report["store"].setdefault(backend, []).append(row)
                    logger.info("store %s %s c=%d: %.0f jobs/s p50 %.2f ms", backend, path, level,
                                row["jobs_per_s"], row["p50_ms"])
        buf = io.BytesIO()
        Image.fromarray(skimage.data.chelsea()[:224, :224]).save(buf, format="JPEG", quality=90)
        image = buf.getvalue()
        body = {"image": "data:image/jpeg;base64," + base64.b64encode(image).decode(), "classes": CLASSES}
        for backend, url in urls.items():
            with stopped_at_exit() as servers:
                server = servers[backend] = start_server(logs / f"jobs-{backend}.log", {
                    "JOB_STORE_URL": url, "GATEWAY_WORKERS": "1", "BENTOML_HOME": own_home(tmp / f"home-{backend}")})
                rows = {}
                for name, job in (("direct", False), ("job", True)) * rounds:
                    rows.setdefault(name, []).append(_http_level(server.url, body, job, 1, http_requests // rounds))
                direct, job = (float(np.median([r["p50_ms"] for r in rows[n]])) for n in ("direct", "job"))
                report["http"][backend] = {"direct_p50_ms": round(direct, 2), "job_p50_ms": round(job, 2),
                                           "added_p50_ms": round(job - direct, 2)}
                logger.info("http %s: direct %.1f ms, job %.1f ms", backend, direct, job)
    finally:
        pg.close()
    return report


def markdown(report: dict[str, Any]) -> list[str]:
    lines = ["## Job store: SQLite vs PostgreSQL", "",
             "The store alone (inference returns at once): jobs submitted, run, finished and waited for.", "",
             "| store | path | concurrency | jobs/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
    for backend, rows in report["store"].items():
        for r in rows:
            lines.append(f"| {backend} | {r['path']} | {r['concurrency']} | {r['jobs_per_s']} | {r['p50_ms']} | "
                         f"{r['p95_ms']} |")
    lines += ["", "Over HTTP, concurrency 1, one 224 px JPEG, dev CLIP ViT-L/14: a job (submit, then `?wait=30`) "
              "against a direct `POST /zero_shot`.", "",
              "| store | direct p50 ms | job p50 ms | added by the job path |", "|---|---|---|---|"]
    for backend, r in report["http"].items():
        lines.append(f"| {backend} | {r['direct_p50_ms']} | {r['job_p50_ms']} | {r['added_p50_ms']} ms |")
    return lines + [""]
