"""Bulk scoring vs the online service on the same collection, side by side in one run (``benchmark.py --bulk-only``).

A folder of ``count`` JPEGs (scikit-image photos at the benchmark's long sides, cycled) is scored for each task
in ``rounds`` alternating rounds by:
  - ``http-single``: one image per request to ``/classify`` or ``/score`` at concurrency ``concurrency``;
  - ``http-batch``: ``/classify/batch`` or ``/score/batch``, 32 images per request, four requests in flight;
  - ``bulk``: ``python -m bulk FOLDER --species`` or ``--aesthetic`` on a local Ray with every CPU, end to end
    (Ray start, actors, models, decoding, Parquet) and in its steady state (from its first result on).
One ``bentoml serve`` serves both HTTP systems and stays idle while bulk runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.local_server import start_server, stopped_at_exit

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
ROUTE = {"species": "classify", "aesthetic": "score"}
PER_REQUEST = 32
BATCH_CONCURRENCY = 4


def make_collection(folder: Path, count: int, images: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i:05d}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_bytes(images[i % len(images)])
    return paths


async def _http(url: str, route: str, images: list[bytes], per_request: int, concurrency: int) -> dict[str, Any]:
    """All ``images`` through ``route``, ``per_request`` at a time (multipart for the batch routes)."""
    chunks = iter([images[i:i + per_request] for i in range(0, len(images), per_request)])
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for chunk in chunks:
            if per_request == 1:
                response = await client.post(f"/{route}", content=chunk[0])
                errors += response.status_code != 200
                continue
            response = await client.post(f"/{route}/batch", files=[
                ("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(chunk)])
            results = response.json()["results"] if response.status_code == 200 else [{"error": "http"}] * len(chunk)
            errors += sum("error" in r for r in results)

    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        await client.post(f"/{route}", content=images[0])  # warm the connection and the path
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {"images": len(images), "errors": errors, "seconds": round(seconds, 2),
            "images_per_s": round((len(images) - errors) / seconds, 2)}


def _bulk(folder: Path, task: str, log: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as out, log.open("a") as err:
        done = subprocess.run([sys.executable, "-m", "bulk", str(folder), "--out", f"{out}/parts", f"--{task}",
                               "--num-cpus", str(os.cpu_count()), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=err, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: summary.get(key) for key in ("processed", "ok", "seconds", "images_per_s", "startup_s",
                                              "steady_images_per_s", "resources")}


def _total(runs: list[dict[str, Any]], rate: str = "images_per_s") -> dict[str, Any]:
    """Rounds together: images over seconds (steady: each round's rate, averaged by its images)."""
    images = sum(r.get("images", r.get("processed", 0)) for r in runs)
    if rate == "steady_images_per_s":
        rates = [r[rate] for r in runs if r.get(rate)]
        return {"images_per_s": round(sum(rates) / len(rates), 2) if rates else None}
    seconds = sum(r["seconds"] for r in runs)
    return {"images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 2),
            "errors": sum(r.get("errors", r.get("processed", 0) - r.get("ok", 0)) for r in runs)}


def run(tasks: list[str], count: int, images: list[bytes], rounds: int, concurrency: int,
        logs: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp:
        paths = make_collection(Path(tmp), count, images)
        data = [p.read_bytes() for p in paths]
        with stopped_at_exit() as servers:
            server = servers["service"] = start_server(logs / "service.log")
            runs: dict[str, dict[str, list]] = {t: {"http-single": [], "http-batch": [], "bulk": []} for t in tasks}
            for r in range(rounds):
                for task in tasks:
                    route = ROUTE[task]
                    for system, per_request, level in (("http-single", 1, concurrency), ("http-batch", PER_REQUEST, BATCH_CONCURRENCY)):
                        row = asyncio.run(_http(server.url, route, data, per_request, level))
                        runs[task][system].append(row)
                        logger.info("%s %s round %d: %.1f img/s", task, system, r + 1, row["images_per_s"])
                    row = _bulk(Path(tmp), task, logs / "bulk.log")
                    runs[task]["bulk"].append(row)
                    logger.info("%s bulk round %d: %.1f img/s end to end, %s steady (start-up %.1f s)", task, r + 1,
                                row["images_per_s"], row["steady_images_per_s"], row["startup_s"])
    for task, by_system in runs.items():
        single = _total(by_system["http-single"])
        results[task] = {"route": f"/{ROUTE[task]}", "http-single": {**single, "concurrency": concurrency},
                         "http-batch": {**_total(by_system["http-batch"]), "per_request": PER_REQUEST,
                                        "concurrency": BATCH_CONCURRENCY},
                         "bulk": {**_total(by_system["bulk"]),
                                  "steady_images_per_s": _total(by_system["bulk"], "steady_images_per_s")[
                                      "images_per_s"],
                                  "startup_s": [r["startup_s"] for r in by_system["bulk"]],
                                  "resources": by_system["bulk"][-1]["resources"]},
                         "rounds": by_system}
        bulk = results[task]["bulk"]
        results[task]["ratios"] = {
            "bulk_vs_single": round(bulk["images_per_s"] / single["images_per_s"], 2),
            "bulk_steady_vs_single": round((bulk["steady_images_per_s"] or 0) / single["images_per_s"], 2),
            "batch_vs_single": round(results[task]["http-batch"]["images_per_s"] / single["images_per_s"], 2)}
    return {"collection": f"{count} JPEGs", "tasks": results}


def markdown(report: dict[str, Any]) -> list[str]:
    lines = [f"Collection: {report['collection']} ({report['images']}), {report['rounds']} alternating rounds.", "",
             "| task | HTTP single (c={c}) img/s | HTTP batch route (32/request, c=4) img/s | bulk end to end img/s "
             "| bulk steady img/s | bulk start-up s | bulk / single | bulk steady / single | batch / single |".format(
                 c=report["concurrency"]),
             "|---|---|---|---|---|---|---|---|---|"]
    for task, r in report["tasks"].items():
        lines.append(f"| {task} (`{r['route']}`) | {r['http-single']['images_per_s']} | "
                     f"{r['http-batch']['images_per_s']} | {r['bulk']['images_per_s']} | "
                     f"{r['bulk']['steady_images_per_s']} | {', '.join(map(str, r['bulk']['startup_s']))} | "
                     f"{r['ratios']['bulk_vs_single']}x | {r['ratios']['bulk_steady_vs_single']}x | "
                     f"{r['ratios']['batch_vs_single']}x |")
    lines += ["", "Bulk end to end includes starting Ray, its actors and the models (the start-up column: until the "
              "first result). The steady column is the second half of the run's results over the time they took; "
              "decoding runs ahead while the models load, so it means something only when the run is long next to "
              "its start-up (thousands of images here), and is an upper bound otherwise.", ""]
    lines += [f"Bulk resources for {task}: `{json.dumps(r['bulk']['resources'])}`." for task, r in
              report["tasks"].items()]
    return lines
