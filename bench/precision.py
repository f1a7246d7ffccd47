"""The service on each engine and precision, side by side (``benchmark.py --engines``).

The same service started once per system (``ENGINE`` x ``PRECISION``, each with a store copy and job store of its
own), measured in rounds that alternate between them (the others paused): concurrency 1 (p50/p95) and 32
(images/s) on ``/classify``, ``/score`` and zero-shot jobs. The baseline is ``torch-fp32``, the service as it ran on
a CPU before the fast path; every other system's ratios are to it. ``--engines-bare`` also times the engines alone
(no HTTP, no decoding) on given store entries, e.g. ``--dev --full-size`` towers.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.load import measure
from tests.support.local_server import own_home, start_server, stopped_at_exit

logger = logging.getLogger(__name__)
ENDPOINTS = ("classify", "score", "zero-shot")
BASELINE = "torch-fp32"
START_TIMEOUT_S = 1200  # a first OpenVINO start converts the models (minutes for full-size towers on 2 cores)
SYSTEMS = {f"{engine}-{precision}": {"ENGINE": engine, "PRECISION": precision}
           for engine in ("torch", "openvino") for precision in ("fp32", "bf16")}


def chosen(names: str) -> dict[str, dict[str, str]]:
    """The systems named (comma-separated; empty: all), the baseline always among them."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"--engine-systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    return {n: env for n, env in SYSTEMS.items() if not wanted or n in wanted or n == BASELINE}


def served_models() -> dict[str, str]:
    """The store entries the servers serve and any batching setting changed from its default (as the benchmark's
    environment gives them to every server)."""
    import catalog

    always = ("SPECIES_MODEL", "AESTHETIC_CLIP_MODEL", "ZERO_SHOT_L14_MODEL")  # what the endpoints serve by default
    served = {m.setting: os.environ.get(m.setting, "(default)") for m in catalog.MODELS
              if m.setting in always or m.setting in os.environ}
    batching = {f"{b.prefix}_{what}": os.environ[f"{b.prefix}_{what}"] for b in catalog.batchings()
                for what in ("MAX_BATCH_SIZE", "MAX_LATENCY_MS") if os.environ.get(f"{b.prefix}_{what}")}
    timeout = {"REQUEST_TIMEOUT_S": os.environ["REQUEST_TIMEOUT_S"]} if os.environ.get("REQUEST_TIMEOUT_S") else {}
    return {**served, **batching, **timeout}


def run(images: list[bytes], requests: int, model: str, logs: Path, rounds: int = 4,
        systems: dict[str, dict[str, str]] = SYSTEMS, endpoints: tuple[str, ...] = ENDPOINTS) -> dict[str, Any]:
    """Each endpoint at concurrency 1 and 32 for each system, and each system's ratios to the baseline."""
    import catalog

    # each system's PRECISION is compared: a runner's own setting (ZERO_SHOT_PRECISION, ...) would override it
    runner_precisions = {f"{b.prefix}_PRECISION": "" for b in catalog.batchings()}
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        with stopped_at_exit() as servers:
            for name, env in systems.items():
                home = own_home(Path(tmp) / name)
                servers[name] = start_server(logs / f"{name}.log", {
                    **runner_precisions, **env, "BENTOML_HOME": home,
                    "JOB_STORE_PATH": str(Path(home) / "jobs.sqlite")}, timeout=START_TIMEOUT_S)
            urls = {name: server.url for name, server in servers.items()}
            measured = measure(urls, list(endpoints), [1, 32], requests, images, model, rounds, servers)
    rows: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        base_lone, base_busy = measured[BASELINE][endpoint]
        rows[endpoint] = {}
        for name in systems:
            lone, busy = measured[name][endpoint]
            rows[endpoint][name] = {
                "c1_p50_ms": lone["p50_ms"], "c1_p95_ms": lone["p95_ms"], "c32_images_per_s": busy["images_per_s"],
                "errors": lone["errors"] + busy["errors"],
                "c32_vs_baseline": round(busy["images_per_s"] / base_busy["images_per_s"], 2),
                "c1_p50_vs_baseline": round(lone["p50_ms"] / base_lone["p50_ms"], 2)}
    return {"systems": systems, "baseline": BASELINE, "endpoints": rows}


def endpoint_tags(zero_shot_model: str) -> dict[str, str]:
    """The store entry each endpoint's image forward runs, where the benchmark's environment names it."""
    import catalog

    entries = {"classify": catalog.species_model(), "score": catalog.aesthetic_tower(),
               "zero-shot": catalog.entry(zero_shot_model)}
    return {ep: os.environ[e.setting] for ep, e in entries.items() if os.environ.get(e.setting)}


def time_split(report: dict[str, Any], tags: dict[str, str]) -> list[dict[str, Any]]:
    """How much of the baseline's time is the image forward, from the bare timings of the served entries, and so
    the ratio a forward that took no time would give with all else equal (Amdahl): p50 at c=1, and images/s at
    c=32 (the forward's share there: images/s x ms per image at batch 8). An engine can beat it where it also
    changes what else runs, e.g. by leaving more of the CPU to decoding."""
    forward = {(r["tag"], r["batch"]): r["ms"][BASELINE] for r in report.get("bare", [])}
    rows = []
    for endpoint, systems in report["endpoints"].items():
        tag = tags.get(endpoint)
        if (tag, 1) not in forward:
            continue
        base = systems[BASELINE]
        share1 = forward[tag, 1] / base["c1_p50_ms"]
        row = {"endpoint": endpoint, "tag": tag, "c1_p50_ms": base["c1_p50_ms"], "forward_batch1_ms": forward[tag, 1],
               "c1_forward_share": round(share1, 2), "c1_p50_ratio_free_forward": round(max(0.0, 1 - share1), 2)}
        if (tag, 8) in forward:
            share32 = base["c32_images_per_s"] * forward[tag, 8] / 8 / 1000
            row |= {"c32_forward_share": round(share32, 2),
                    "c32_ratio_free_forward": round(1 / (1 - share32), 2) if share32 < 1 else None}
        rows.append(row)
    return rows


def bare(tags: list[str], batches: tuple[int, ...] = (1, 8), rounds: int = 3,
         systems: dict[str, dict[str, str]] = SYSTEMS) -> list[dict[str, Any]]:
    """The engines alone for store entries ``tags``, each system in alternating rounds: median ms per forward at
    each batch size, and the speed-up over the baseline."""
    import time

    import numpy as np

    import catalog
    import engines
    from model_store import open_entry

    rows = []
    for tag in tags:
        stored = open_entry(catalog.entry(tag.split(":")[0]).name, tag)
        cfg = stored.meta.require_preprocess()
        loaded = {name: engines.load(stored, engines.EngineOptions(engine=env["ENGINE"], precision=env["PRECISION"]))
                  for name, env in systems.items()}
        for batch in batches:
            x = np.random.default_rng(0).integers(0, 256, (batch, cfg.height, cfg.width, 3), dtype=np.uint8)
            run = {name: (lambda e=e: e.classify(x, 5)) if stored.entry.kind == "timm-classifier"
                   else (lambda e=e: e.embed_images(x)) for name, e in loaded.items()}
            seconds: dict[str, list[float]] = {name: [] for name in systems}
            for _ in range(rounds):
                for name in systems:
                    run[name]()  # warm
                    start = time.perf_counter()
                    run[name]()
                    seconds[name].append(time.perf_counter() - start)
            ms = {name: round(float(np.median(s)) * 1000, 1) for name, s in seconds.items()}
            rows.append({"tag": tag, "batch": batch, "ms": ms,
                         "speed_up": {name: round(ms[BASELINE] / ms[name], 2) for name in systems}})
            logger.info("bare %s batch %d: %s", tag, batch, ms)
    return rows


def markdown(report: dict[str, Any]) -> list[str]:
    base = report.get("baseline", BASELINE)
    served = ", ".join(f"`{k}={v}`" for k, v in report.get("models", {}).items())
    lines = [*([f"Served models and settings (every system): {served}.", ""] if served else []),
             f"Ratios are to `{base}` (the service as it ran on a CPU before `ENGINE` and `PRECISION`): p50 at "
             "concurrency 1 (lower is better) and images/s at concurrency 32 (higher is better).", "",
             "| endpoint | system | c=1 p50 ms | c=1 p50 ratio | c=32 img/s | c=32 ratio | errors |",
             "|---|---|---|---|---|---|---|"]
    for endpoint, systems in report["endpoints"].items():
        for name, r in systems.items():
            lines.append(f"| {endpoint} | {name} | {r['c1_p50_ms']} | {r['c1_p50_vs_baseline']}x "
                         f"| {r['c32_images_per_s']} | {r['c32_vs_baseline']}x | {r['errors']} |")
    if report.get("bare"):
        names = list(report["bare"][0]["ms"])
        lines += ["", "The engines alone (no HTTP, no decoding), in alternating rounds: ms per forward (speed-up over "
                  f"`{base}`):", "", "| store entry | batch | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        lines += [f"| {r['tag']} | {r['batch']} | " + " | ".join(f"{r['ms'][n]} ({r['speed_up'][n]}x)" for n in names)
                  + " |" for r in report["bare"]]
    if report.get("time_split"):
        lines += ["", f"How much of `{base}`'s time is the image forward (its bare time on the served entry over the "
                  "service's), and the ratio a forward that took no time would give, all else equal (Amdahl):", "",
                  "| endpoint | store entry | c=1 p50 ms | forward at batch 1, ms | forward share at c=1 "
                  "| c=1 p50 ratio, free forward | forward share at c=32 | c=32 ratio, free forward |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["time_split"]:
            share32, best32 = r.get("c32_forward_share", ""), r.get("c32_ratio_free_forward")
            best32_text = f"{best32}x" if best32 else ("n/a (share >= 1)" if share32 != "" else "")
            lines.append(f"| {r['endpoint']} | {r['tag']} | {r['c1_p50_ms']} | {r['forward_batch1_ms']} "
                         f"| {r['c1_forward_share']} | {r['c1_p50_ratio_free_forward']}x | {share32} | {best32_text} |")
    return lines
