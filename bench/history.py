"""Does a lone request's latency depend on what the server went through? (``benchmark.py --history``)

For each system (the service with its idle-aware batcher, and the same service with BentoML's,
``RUNNER_BATCHER=bentoml``), side by side in one run:
  1. fresh: concurrency 1 (p50/p95) and concurrency 32 (images/s) on ``/classify``, ``/score`` and zero-shot jobs;
  2. history: a burst at concurrency 128 of the largest JPEGs on ``/classify`` and ``/score`` together, with a
     few corrupt (400) and too-large (413) inputs mixed in, then a burst of 128-concurrent zero-shot jobs;
  3. ``idle`` seconds with no requests;
  4. after: the same measurements as 1.
Concurrency-1 p50 after vs before is the drift; concurrency-32 after vs before says whether a fix costs throughput.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.load import measure, one_request
from tests.support.local_server import Server, own_home, start_server, stopped_at_exit

logger = logging.getLogger(__name__)
ENDPOINTS = ("classify", "score", "zero-shot")


def _hostile() -> list[tuple[str, bytes]]:
    """Inputs a public service meets: not an image (400), and one over MAX_IMAGE_PIXELS (413)."""
    big = io.BytesIO()
    Image.new("RGB", (10_000, 6_000), (90, 120, 150)).save(big, format="PNG", optimize=False)
    return [("classify", b"definitely not a photo"), ("score", b"\x89PNG\r\n\x1a\n broken"),
            ("classify", big.getvalue()), ("score", big.getvalue())]


async def _burst(url: str, images: list[bytes], requests: int, model: str) -> dict[str, int]:
    """The history: ``requests`` large images per route at concurrency 128 (both routes at once, hostile inputs
    mixed in), then ``requests`` zero-shot jobs at concurrency 128. Status codes seen, by code."""
    codes: dict[str, int] = {}
    hostile = _hostile()
    work = [(route, images[i % len(images)]) for i in range(requests) for route in ("classify", "score")]
    for i, item in enumerate(hostile):
        work.insert((i + 1) * len(work) // (len(hostile) + 1), item)
    queue = iter(work)

    async def worker(client: httpx.AsyncClient) -> None:
        for route, data in queue:
            code = (await client.post(f"/{route}", content=data)).status_code
            codes[str(code)] = codes.get(str(code), 0) + 1

    jobs = iter(range(requests))

    async def job_worker(client: httpx.AsyncClient) -> None:
        for i in jobs:
            ok = await one_request(client, "service", "zero-shot", images[i % len(images)], model)
            codes["job_ok" if ok else "job_failed"] = codes.get("job_ok" if ok else "job_failed", 0) + 1

    limits = httpx.Limits(max_connections=140, max_keepalive_connections=140, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(128)))
        await asyncio.gather(*(job_worker(client) for _ in range(128)))
    return codes


def _phase(servers: dict[str, Server], images: list[bytes], requests: int, model: str,
           rounds: int) -> dict[str, dict[str, Any]]:
    """Concurrency 1 and 32 on every endpoint, the systems alternating in ``rounds`` rounds (the others paused),
    so the machine's own drift falls on all of them alike. system -> endpoint -> figures."""
    urls = {name: server.url for name, server in servers.items()}
    measured = measure(urls, list(ENDPOINTS), [1, 32], requests, images, model, rounds, servers)
    out: dict[str, dict[str, Any]] = {}
    for name, endpoints in measured.items():
        for endpoint, (lone, busy) in endpoints.items():
            out.setdefault(name, {})[endpoint] = {
                "c1_p50_ms": lone["p50_ms"], "c1_p95_ms": lone["p95_ms"], "c32_images_per_s": busy["images_per_s"],
                "c32_p50_ms": busy["p50_ms"], "errors": lone["errors"] + busy["errors"]}
    return out


def run(images: list[bytes], large: list[bytes], requests: int, burst: int, idle: float, model: str,
        logs: Path, rounds: int = 4) -> dict[str, Any]:
    """Fresh, history, idle, after: for the service with each batcher."""
    systems = {"service": {"RUNNER_BATCHER": "idle-aware"}, "service-bentoml-batcher": {"RUNNER_BATCHER": "bentoml"}}
    report: dict[str, Any] = {"systems": {}}
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        with stopped_at_exit() as servers:
            for name, env in systems.items():
                home = own_home(Path(tmp) / name)  # and a job store of its own: no job runs on another server
                servers[name] = start_server(logs / f"{name}.log", {
                    **env, "BENTOML_HOME": home, "JOB_STORE_PATH": str(Path(home) / "jobs.sqlite")})
            fresh = _phase(servers, images, requests, model, rounds)
            history = {}
            for name, server in servers.items():
                started = time.monotonic()
                history[name] = asyncio.run(_burst(server.url, large, burst, model))
                logger.info("%s history: %s in %.0f s", name, history[name], time.monotonic() - started)
            logger.info("idle %.0f s", idle)
            time.sleep(idle)
            after = _phase(servers, images, requests, model, rounds)
    for name in servers:
        rows = {}
        for endpoint in ENDPOINTS:
            before, later = fresh[name][endpoint], after[name][endpoint]
            rows[endpoint] = {"fresh": before, "after": later,
                              "c1_p50_after_vs_fresh": round(later["c1_p50_ms"] / before["c1_p50_ms"], 2),
                              "c32_after_vs_fresh": round(later["c32_images_per_s"] / before["c32_images_per_s"], 2)}
        report["systems"][name] = {"env": systems[name], "history": history[name], "endpoints": rows}
    return report


def markdown(report: dict[str, Any]) -> list[str]:
    lines = [f"History: {report['history_desc']}.", "",
             "| system | endpoint | c=1 p50 fresh ms | c=1 p50 after ms | after/fresh | c=1 p95 fresh / after ms "
             "| c=32 img/s fresh | c=32 img/s after | after/fresh |", "|---|---|---|---|---|---|---|---|---|"]
    for name, system in report["systems"].items():
        for endpoint, r in system["endpoints"].items():
            f, a = r["fresh"], r["after"]
            lines.append(f"| {name} | {endpoint} | {f['c1_p50_ms']} | {a['c1_p50_ms']} | {r['c1_p50_after_vs_fresh']}x "
                         f"| {f['c1_p95_ms']} / {a['c1_p95_ms']} | {f['c32_images_per_s']} | {a['c32_images_per_s']} "
                         f"| {r['c32_after_vs_fresh']}x |")
    lines.append("")
    lines += [f"History responses, {name}: `{s['history']}`." for name, s in report["systems"].items()]
    return lines
