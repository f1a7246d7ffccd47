"""What the photo report costs (``benchmark.py --report-only``): ``/scores`` against ``/score``, side by side.

1. The measures alone (:func:`capabilities.report.measure`) on the image as the service decodes it (the aesthetic
   tower's reduced-scale JPEG decode), per photo size: milliseconds, median of repeats.
2. Over HTTP, one ``bentoml serve`` (dev models), concurrency 1: ``POST /score`` and ``POST /scores`` alternating
   request by request on the same JPEGs; the p50 of each and their difference.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

logger = logging.getLogger(__name__)


def measures_alone(images: dict[int, bytes], repeats: int = 30) -> dict[str, float]:
    """Median ms of measure() per long side, on the service's decode of each JPEG."""
    import catalog
    from capabilities.report import measure
    from model_store import open_entry
    from serving.imaging import decode_image_sized, draft_size

    cfg = open_entry(catalog.aesthetic_tower().name).meta.require_preprocess()
    out = {}
    for side, data in images.items():
        img, size = decode_image_sized(data, 10**9, draft_size(cfg))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            measure(img, size)
            times.append((time.perf_counter() - start) * 1000)
        out[str(side)] = round(float(np.median(times)), 2)
    return out


def http_side_by_side(url: str, images: dict[int, bytes], requests: int) -> dict[str, Any]:
    """p50 ms of /score and /scores per long side, alternating one request each, at concurrency 1."""
    rows = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for side, data in images.items():
            times: dict[str, list[float]] = {"/score": [], "/scores": []}
            for i in range(requests + 2):
                for route in times:
                    start = time.perf_counter()
                    response = client.post(route, content=data, headers={"Content-Type": "image/jpeg"})
                    elapsed = (time.perf_counter() - start) * 1000
                    response.raise_for_status()
                    if i >= 2:  # two warm-up pairs
                        times[route].append(elapsed)
            score, scores = (float(np.median(times[r])) for r in ("/score", "/scores"))
            rows[str(side)] = {"score_p50_ms": round(score, 2), "scores_p50_ms": round(scores, 2),
                               "added_ms": round(scores - score, 2)}
    return rows


def run(images: dict[int, bytes], requests: int, logs: Path, url: str | None = None) -> dict[str, Any]:
    from tests.support.local_server import own_home, start_server, stopped_at_exit

    results: dict[str, Any] = {"measure_ms": measures_alone(images)}
    with stopped_at_exit() as servers:
        if url is None:
            servers["service"] = start_server(logs / "service.log", env={"BENTOML_HOME": own_home(logs / "home")})
            url = servers["service"].url
        results["http"] = http_side_by_side(url, images, requests)
    results["requests"] = requests
    return results


def markdown(report: dict[str, Any]) -> list[str]:
    lines = ["## The measures alone (on the service's decode)", "", "| long side px | measure() ms (median) |",
             "|---:|---:|"]
    lines += [f"| {side} | {ms} |" for side, ms in report["measure_ms"].items()]
    lines += ["", f"## Over HTTP, concurrency 1, {report['requests']} alternating pairs per size", "",
              "| long side px | /score p50 ms | /scores p50 ms | added ms |", "|---:|---:|---:|---:|"]
    lines += [f"| {side} | {r['score_p50_ms']} | {r['scores_p50_ms']} | {r['added_ms']} |"
              for side, r in report["http"].items()]
    return lines + [""]
