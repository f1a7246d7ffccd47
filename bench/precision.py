"""The service in each precision, side by side (``benchmark.py --precision``).

The same service started twice, ``PRECISION=fp32`` and ``PRECISION=bf16`` (each with a store copy and job store of
its own), measured in rounds that alternate between them (the other paused): concurrency 1 (p50/p95) and 32
(images/s) on ``/classify``, ``/score`` and zero-shot jobs. bf16 / fp32 is the speed-up of the CPU fast path.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from bench.load import measure
from tests.support.local_server import Server, own_home, start_server, stop_server

logger = logging.getLogger(__name__)
ENDPOINTS = ("classify", "score", "zero-shot")
SYSTEMS = {"fp32": {"PRECISION": "fp32"}, "bf16": {"PRECISION": "bf16"}}


def run(images: list[bytes], requests: int, model: str, logs: Path, rounds: int = 4) -> dict[str, Any]:
    """Each endpoint at concurrency 1 and 32 for each precision, and bf16's ratios to fp32."""
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        servers: dict[str, Server] = {}
        try:
            for name, env in SYSTEMS.items():
                home = own_home(Path(tmp) / name)
                servers[name] = start_server(logs / f"{name}.log", {
                    **env, "BENTOML_HOME": home, "JOB_STORE_PATH": str(Path(home) / "jobs.sqlite")})
            urls = {name: server.url for name, server in servers.items()}
            measured = measure(urls, list(ENDPOINTS), [1, 32], requests, images, model, rounds, servers)
        finally:
            for server in servers.values():
                stop_server(server)
    rows: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        (f_lone, f_busy), (b_lone, b_busy) = measured["fp32"][endpoint], measured["bf16"][endpoint]
        rows[endpoint] = {
            "fp32": {"c1_p50_ms": f_lone["p50_ms"], "c1_p95_ms": f_lone["p95_ms"],
                     "c32_images_per_s": f_busy["images_per_s"], "errors": f_lone["errors"] + f_busy["errors"]},
            "bf16": {"c1_p50_ms": b_lone["p50_ms"], "c1_p95_ms": b_lone["p95_ms"],
                     "c32_images_per_s": b_busy["images_per_s"], "errors": b_lone["errors"] + b_busy["errors"]},
            "c32_bf16_vs_fp32": round(b_busy["images_per_s"] / f_busy["images_per_s"], 2),
            "c1_p50_bf16_vs_fp32": round(b_lone["p50_ms"] / f_lone["p50_ms"], 2)}
    return {"systems": SYSTEMS, "endpoints": rows}


def bare(tags: list[str], batches: tuple[int, ...] = (1, 8), rounds: int = 3) -> list[dict[str, Any]]:
    """The engines alone (no HTTP, no decoding) for store entries ``tags`` (e.g. ``--dev --full-size`` towers),
    fp32 and bf16 in alternating rounds: median seconds per forward at each batch size."""
    import time

    import numpy as np

    import catalog
    import engines
    from model_store import open_entry

    rows = []
    for tag in tags:
        name = tag.split(":")[0]
        stored = open_entry(catalog.entry(name).name, tag)
        cfg = stored.meta.require_preprocess()
        loaded = {p: engines.load(stored, engines.EngineOptions(precision=p)) for p in SYSTEMS}
        forward = {p: (e.classify if stored.entry.kind == "timm-classifier" else e.embed_images)
                   for p, e in loaded.items()}
        for batch in batches:
            x = np.random.default_rng(0).integers(0, 256, (batch, cfg.height, cfg.width, 3), dtype=np.uint8)
            args = (x, 5) if stored.entry.kind == "timm-classifier" else (x,)
            seconds: dict[str, list[float]] = {p: [] for p in SYSTEMS}
            for _ in range(rounds):
                for p in SYSTEMS:
                    forward[p](*args)  # warm
                    start = time.perf_counter()
                    forward[p](*args)
                    seconds[p].append(time.perf_counter() - start)
            fp32, bf16 = (float(np.median(seconds[p])) for p in ("fp32", "bf16"))
            rows.append({"tag": tag, "batch": batch, "fp32_ms": round(fp32 * 1000, 1), "bf16_ms": round(bf16 * 1000, 1),
                         "speed_up": round(fp32 / bf16, 2)})
            logger.info("bare %s batch %d: fp32 %.0f ms, bf16 %.0f ms", tag, batch, fp32 * 1000, bf16 * 1000)
    return rows


def markdown(report: dict[str, Any]) -> list[str]:
    lines = ["| endpoint | c=1 p50 fp32 ms | c=1 p50 bf16 ms | bf16/fp32 | c=32 img/s fp32 | c=32 img/s bf16 "
             "| bf16/fp32 | errors |", "|---|---|---|---|---|---|---|---|"]
    for endpoint, r in report["endpoints"].items():
        f, b = r["fp32"], r["bf16"]
        lines.append(f"| {endpoint} | {f['c1_p50_ms']} | {b['c1_p50_ms']} | {r['c1_p50_bf16_vs_fp32']}x "
                     f"| {f['c32_images_per_s']} | {b['c32_images_per_s']} | {r['c32_bf16_vs_fp32']}x "
                     f"| {f['errors'] + b['errors']} |")
    if report.get("bare"):
        lines += ["", "The engines alone (no HTTP, no decoding), fp32 and bf16 in alternating rounds:", "",
                  "| store entry | batch | fp32 ms | bf16 ms | speed-up |", "|---|---|---|---|---|"]
        lines += [f"| {r['tag']} | {r['batch']} | {r['fp32_ms']} | {r['bf16_ms']} | {r['speed_up']}x |"
                  for r in report["bare"]]
    return lines
