"""Throughput and latency of the service, side by side with the naive design and the bare-model ceiling.

One invocation measures, on the same machine and images (service and naive design alternating in rounds):
  1. the service (``--url`` of a running server, or ``--serve`` to start ``bentoml serve`` here);
  2. the naive design: bench/naive_app.py, one FastAPI/uvicorn process, stock transforms, one unbatched
     fp32 forward per request, same store weights;
  3. LitServe: bench/litserve_app.py, one LitAPI per model with LitServe's batching, same store weights,
     one server per model;
  4. the ceiling: the bare models in a loop at their best batch size, no HTTP and no decoding, on the engine
     and precision the service runs (ENGINE, PRECISION).
Images are scikit-image photos re-encoded as JPEG with long sides of 500, 1024, 2048 and 4000 px (mixed).
Writes results.json, results.md and plot.png to ``--out``.

    python scripts/benchmark.py --serve --out docs/benchmarks/cpu-dev          # dev models, this machine
    python scripts/benchmark.py --jobs-only --out docs/benchmarks/jobs-cpu     # the job store: SQLite vs PostgreSQL
    python scripts/benchmark.py --bulk-only --out docs/benchmarks/bulk-cpu     # python -m bulk vs the HTTP routes
    python scripts/benchmark.py --history --out docs/benchmarks/history-cpu    # latency before and after a history
    python scripts/benchmark.py --engines --out docs/benchmarks/engines-cpu      # ENGINE x PRECISION side by side
    python scripts/benchmark.py --parity-only eva02-inat21:bench --out docs/benchmarks/parity-full-size  # vs fp32

``python -m bench`` takes the same arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import catalog
from bench.load import PHOTOS, litserve_path, make_images, measure
from tests.support.local_server import start_server, stopped_at_exit

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ("python", "scripts/benchmark.py")  # how results.md records the run
logger = logging.getLogger(__name__)


def ceiling(endpoints: list[str], model_name: str, batch_sizes: list[int], seconds: float) -> dict[str, dict]:
    """Images/s of the bare models at their best batch size, through the engines the runners load (ENGINE and
    PRECISION as the service reads them: by default the engine and precision measured fastest here)."""
    import engines
    from model_store import open_entry
    from serving.settings import settings

    forwards = {}
    if "classify" in endpoints:
        species_entry = catalog.species_model()
        species = engines.load(open_entry(species_entry.name), settings.engine_options(species_entry))
        forwards["classify"] = (lambda x: species.classify(x, 10), species)
    if "score" in endpoints:
        tower = catalog.aesthetic_tower()
        clip, head = (engines.load(open_entry(tower.name), settings.engine_options(tower)),
                      engines.load(open_entry(tower.head), settings.engine_options(tower)))
        forwards["score"] = (lambda x: head.apply(clip.embed_images(x)), clip)
    if "zero-shot" in endpoints:
        zs = engines.load(open_entry(model_name), settings.engine_options(catalog.entry(model_name)))
        forwards["zero-shot"] = (zs.embed_images, zs)
    out = {}
    for endpoint, (forward, engine) in forwards.items():
        cfg = engine.cfg
        best: dict[str, Any] = {"images_per_s": 0.0}
        batch1_ms = None
        for bs in batch_sizes:
            batch = np.random.default_rng(0).integers(0, 256, (bs, cfg.height, cfg.width, 3), dtype=np.uint8)
            forward(batch)  # warm-up
            n, start = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - start < seconds:
                forward(batch)
                n += 1
            elapsed = time.perf_counter() - start
            rate = n * bs / elapsed
            if bs == 1:
                batch1_ms = round(1000 * elapsed / n, 2)
            if rate > best["images_per_s"]:
                best = {"images_per_s": round(rate, 2), "batch_size": bs}
        out[endpoint] = {**best, "batch1_ms": batch1_ms, "device": engine.device, "engine": engine.backend,
                         "precision": engine.precision}
        logger.info("ceiling %s: %.1f img/s at batch %d (%s, %s)", endpoint, best["images_per_s"],
                    best["batch_size"], engine.backend, engine.precision)
    return out


def summarise(service: dict, naive: dict, top: dict, litserve: dict | None = None) -> dict[str, dict[str, Any]]:
    """The ratios the README and notes quote."""
    summary = {}
    for endpoint, rows in service.items():
        by_level = {r["concurrency"]: r for r in rows}
        naive_by_level = {r["concurrency"]: r for r in naive.get(endpoint, [])}
        best = max(r["images_per_s"] for r in rows)
        entry: dict[str, Any] = {"best_images_per_s": best}
        entry["throughput_ratio_vs_naive"] = {
            c: round(by_level[c]["images_per_s"] / naive_by_level[c]["images_per_s"], 2)
            for c in by_level if c in naive_by_level and naive_by_level[c]["images_per_s"]}
        peer = {r["concurrency"]: r for r in (litserve or {}).get(endpoint, [])}
        if peer:
            entry["throughput_ratio_vs_litserve"] = {
                c: round(by_level[c]["images_per_s"] / peer[c]["images_per_s"], 2)
                for c in by_level if c in peer and peer[c]["images_per_s"]}
            entry["p50_ratio_vs_litserve"] = {c: round(by_level[c]["p50_ms"] / peer[c]["p50_ms"], 2)
                                              for c in by_level if c in peer and peer[c]["p50_ms"]}
        if 1 in by_level and 1 in naive_by_level:
            entry["overhead_ms_at_c1"] = round(by_level[1]["p50_ms"] - naive_by_level[1]["p50_ms"], 1)
        if endpoint in top:
            entry["fraction_of_ceiling"] = round(best / top[endpoint]["images_per_s"], 3)
            if 1 in by_level and top[endpoint].get("batch1_ms"):  # HTTP, decoding, resizing and the runner hop
                entry["added_ms_over_bare_model_at_c1"] = round(by_level[1]["p50_ms"] - top[endpoint]["batch1_ms"], 1)
        summary[endpoint] = entry
    return summary


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Benchmark: {report['label']}", "", f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']}. Images: {report['images']}.", "",
             f"Models: {report['models']}.", "",
             f"Service settings (from the environment; `--serve` passes them on): {report.get('settings', {})}.", ""]
    for endpoint, rows in report["service"].items():
        lines += [f"## {endpoint}", "", "| system | concurrency | images/s | p50 ms | p95 ms | p99 ms | errors | mean batch |",
                  "|---|---|---|---|---|---|---|---|"]
        for system in ("service", "naive", "litserve"):
            for r in report.get(system, {}).get(endpoint, []):
                lines.append(f"| {system} | {r['concurrency']} | {r['images_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
                             f"{r['p99_ms']} | {r['errors']} | {r.get('mean_batch', '')} |")
        if endpoint in report["ceiling"]:
            c = report["ceiling"][endpoint]
            lines.append(f"| ceiling (bare model, {c.get('engine', 'torch')} {c.get('precision', '')}) "
                         f"| batch {c['batch_size']} | {c['images_per_s']} | | | | | |")
        s = report["summary"][endpoint]
        lines += ["", f"Service / naive throughput by concurrency: {s['throughput_ratio_vs_naive']}. "
                  f"Per-request overhead vs naive at concurrency 1 (p50): {s.get('overhead_ms_at_c1')} ms. "
                  f"Best service throughput / ceiling: {s.get('fraction_of_ceiling')}."]
        if s.get("throughput_ratio_vs_litserve"):
            lines += ["", f"Service / LitServe throughput by concurrency: {s['throughput_ratio_vs_litserve']}; "
                      f"p50 latency service / LitServe: {s['p50_ratio_vs_litserve']}."]
        if s.get("added_ms_over_bare_model_at_c1") is not None:
            lines += ["", f"Service p50 at concurrency 1 minus one bare batch-1 forward "
                      f"({report['ceiling'][endpoint]['batch1_ms']} ms): {s['added_ms_over_bare_model_at_c1']} ms "
                      "(HTTP, JPEG decoding, resizing and the runner hop)."]
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    plot(out / "plot.png", report)


def plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = list(report["service"])
    fig, axes = plt.subplots(2, len(endpoints), figsize=(5 * len(endpoints), 7), squeeze=False)
    for col, endpoint in enumerate(endpoints):
        for system, style in (("service", "o-"), ("naive", "s--"), ("litserve", "^-.")):
            rows = report.get(system, {}).get(endpoint, [])
            if not rows:
                continue
            xs = [r["concurrency"] for r in rows]
            axes[0][col].plot(xs, [r["images_per_s"] for r in rows], style, label=system)
            axes[1][col].plot(xs, [r["p95_ms"] for r in rows], style, label=system)
        if endpoint in report["ceiling"]:
            axes[0][col].axhline(report["ceiling"][endpoint]["images_per_s"], color="grey", linestyle=":",
                                 label="ceiling (bare model)")
        axes[0][col].set_title(f"{endpoint}: throughput")
        axes[1][col].set_title(f"{endpoint}: p95 latency")
        axes[0][col].set_ylabel("images/s")
        axes[1][col].set_ylabel("ms")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.legend()
    fig.suptitle(report["label"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None, command: tuple[str, ...] = COMMAND) -> int:
    """The benchmark CLI; ``command`` is how the report records the invocation (``python scripts/benchmark.py``)."""
    parser = argparse.ArgumentParser(prog=" ".join(command), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://localhost:3000")
    target.add_argument("--serve", action="store_true", help="start `bentoml serve service:Gateway` for the run")
    target.add_argument("--jobs-only", action="store_true",
                        help="measure the job store instead: SQLite vs PostgreSQL (bench/jobs.py)")
    target.add_argument("--bulk-only", action="store_true",
                        help="measure bulk scoring instead: python -m bulk vs the HTTP routes (bench/bulk.py)")
    target.add_argument("--history", action="store_true",
                        help="latency drift: fresh vs after a burst and idle, per batcher (bench/history.py)")
    target.add_argument("--gate-only", action="store_true",
                        help="what the organism gate costs: /classify with SPECIES_GATE off vs on (bench/gate.py)")
    target.add_argument("--report-only", action="store_true",
                        help="what the photo report costs: /scores vs /score side by side (bench/report.py)")
    target.add_argument("--parity-only", metavar="TAGS",
                        help="parity of --engine-systems with torch fp32 on these store entries, e.g. the "
                             "--dev --full-size towers (bench/parity.py)")
    target.add_argument("--engines", "--precision", dest="engines", action="store_true",
                        help="the service on ENGINE torch/openvino x PRECISION fp32/bf16 side by side "
                             "(bench/precision.py)")
    parser.add_argument("--engines-bare", "--precision-bare", dest="engines_bare", default="", metavar="TAGS",
                        help="--engines: also time these store entries' engines alone (e.g. --dev --full-size ones)")
    parser.add_argument("--engine-systems", default="", metavar="NAMES",
                        help="--engines: only these systems (comma-separated, e.g. torch-fp32,openvino-bf16; "
                             "torch-fp32, the baseline, is always run)")
    parser.add_argument("--history-burst", type=int, default=256, help="--history: burst requests per route")
    parser.add_argument("--history-idle", type=float, default=30, help="--history: idle seconds after the burst")
    parser.add_argument("--jobs", type=int, default=2000, help="--jobs-only: jobs per store, path and level")
    parser.add_argument("--bulk-images", type=int, default=600, help="--bulk-only: images in the collection")
    parser.add_argument("--bulk-tasks", default="aesthetic,species", help="--bulk-only: tasks to measure")
    parser.add_argument("--endpoints", default="classify,score,zero-shot")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--sizes", default="500,1024,2048,4000", help="long sides of the JPEGs, px")
    parser.add_argument("--requests", type=int, default=128, help="requests per level (at least the concurrency)")
    parser.add_argument("--zero-shot-model", default="clip-vit-large-patch14")
    parser.add_argument("--ceiling-batches", default="1,8,32,64")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--no-litserve", action="store_true", help="leave out the LitServe peer")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds per level, alternating service and naive (side by side under the same load)")
    parser.add_argument("--label", default="dev models on this machine")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "latest")
    args = parser.parse_args(argv)
    # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the servers this run paused and started are resumed and
    # stopped instead of being left suspended, holding their memory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    endpoints, levels = args.endpoints.split(","), _ints(args.concurrency)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if args.jobs_only:
        return jobs_only(args, argv, logs, command)
    if args.bulk_only:
        return bulk_only(args, argv, logs, command)
    if args.history:
        return history(args, argv, logs, command)
    if args.engines:
        return engines_side_by_side(args, argv, logs, command)
    if args.parity_only:
        return parity(args, argv, command)
    if args.report_only or args.gate_only:
        return side_cost("report" if args.report_only else "gate", args, argv, logs, command)
    images = make_images(_ints(args.sizes))
    with stopped_at_exit() as servers:  # every system is up for the whole run; the ones not being measured are paused
        if args.serve:
            servers["service"] = start_server(logs / "service.log")
        urls = {"service": servers["service"].url if args.serve else args.url}
        if not args.no_naive:
            servers["naive"] = start_server(logs / "naive.log", command=[
                sys.executable, str(ROOT / "bench" / "naive_app.py"), "--port", "{port}"])
            urls["naive"] = servers["naive"].url
        if not args.no_litserve:  # one LitServe server per model: one inference worker each, none idle-polling
            urls["litserve"] = {}
            for endpoint in endpoints:
                servers[f"litserve:{endpoint}"] = start_server(
                    logs / f"litserve-{endpoint}.log", ready_path="/health", command=[
                        sys.executable, str(ROOT / "bench" / "litserve_app.py"), "--port", "{port}",
                        "--api", litserve_path(endpoint, args.zero_shot_model)])
                urls["litserve"][endpoint] = servers[f"litserve:{endpoint}"].url
        measured = measure(urls, endpoints, levels, args.requests, images, args.zero_shot_model, args.rounds,
                           servers)
    service, naive, litserve = measured["service"], measured.get("naive", {}), measured.get("litserve", {})
    top = ceiling(endpoints, args.zero_shot_model, _ints(args.ceiling_batches), args.ceiling_seconds)
    import torch

    from serving.settings import settings

    report = {
        "label": args.label,
        "models": {"species": settings.tag(catalog.species_model().name),
                   "aesthetic": settings.tag(catalog.aesthetic_tower().name),
                   "zero-shot": settings.tag(args.zero_shot_model)},
        "command": " ".join(shlex.quote(a) for a in [*command, *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                   + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "images": f"{len(images)} JPEGs: {', '.join(PHOTOS)} at long sides {args.sizes} px",
        "settings": {**{name: getattr(settings, name) for name in (
            "gateway_workers", "runner_queue_batches", "torch_compile")},
                     **{f"{prefix.lower()}_max_batch_size": size for prefix, (size, _) in settings.batching.items()}},
        "service": service, "naive": naive, "litserve": litserve, "ceiling": top,
        "summary": summarise(service, naive, top, litserve),
    }
    write_report(args.out, report)
    logger.info("wrote %s", args.out)
    return 0


def _write_side_report(args: argparse.Namespace, argv: list[str] | None, results: dict[str, Any],
                       markdown: Any, command: tuple[str, ...] = COMMAND) -> int:
    """results.json and results.md of a --jobs-only or --bulk-only run."""
    import torch

    report = {"label": args.label, "command": " ".join(shlex.quote(a) for a in [*command, *(argv or sys.argv[1:])]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads",
              **results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "results.md").write_text("\n".join([f"# Benchmark: {report['label']}", "",
                                                    f"Command: `{report['command']}`", "",
                                                    f"Machine: {report['machine']}.", "", *markdown(report)]))
    logger.info("wrote %s", args.out)
    return 0


def jobs_only(args: argparse.Namespace, argv: list[str] | None, logs: Path, command: tuple[str, ...] = COMMAND) -> int:
    from bench import jobs as bench_jobs

    levels = _ints(args.concurrency) if args.concurrency != "1,8,32,128" else [1, 32]
    return _write_side_report(args, argv, bench_jobs.run(levels, args.jobs, args.rounds, args.requests, logs),
                              bench_jobs.markdown, command)


def side_cost(module: str, args: argparse.Namespace, argv: list[str] | None, logs: Path,
              command: tuple[str, ...] = COMMAND) -> int:
    """--report-only (bench/report.py) or --gate-only (bench/gate.py): one photo at each size, side by side."""
    import importlib

    bench_module = importlib.import_module(f"bench.{module}")
    sizes = _ints(args.sizes)
    results = bench_module.run(dict(zip(sizes, make_images(sizes))), args.requests, logs)
    results["images"] = f"{PHOTOS[0]} as JPEG at long sides {args.sizes} px"
    return _write_side_report(args, argv, results, bench_module.markdown, command)


def history(args: argparse.Namespace, argv: list[str] | None, logs: Path, command: tuple[str, ...] = COMMAND) -> int:
    from bench import history as bench_history

    sizes = _ints(args.sizes)
    results = bench_history.run(make_images(sizes), make_images([max(sizes)]), args.requests, args.history_burst,
                                args.history_idle, args.zero_shot_model, logs, args.rounds)
    results["history_desc"] = (f"{args.history_burst} JPEGs of {max(sizes)} px per route on /classify and /score "
                               f"at concurrency 128 with 4 hostile inputs, {args.history_burst} zero-shot jobs at "
                               f"concurrency 128, then {args.history_idle:.0f} s idle; measurements: "
                               f"{args.requests} requests per level in {args.rounds} rounds alternating between "
                               f"the systems, JPEGs of {args.sizes} px")
    return _write_side_report(args, argv, results, bench_history.markdown, command)


def engines_side_by_side(args: argparse.Namespace, argv: list[str] | None, logs: Path,
                         command: tuple[str, ...] = COMMAND) -> int:
    from bench import precision as bench_precision

    systems = bench_precision.chosen(args.engine_systems)
    endpoints = tuple(e for e in args.endpoints.split(",") if e)
    unknown = sorted(set(endpoints) - set(bench_precision.ENDPOINTS))
    if unknown:
        raise SystemExit(f"--endpoints: unknown {', '.join(unknown)}; "
                         f"choose from {', '.join(bench_precision.ENDPOINTS)}")
    results = bench_precision.run(make_images(_ints(args.sizes)), args.requests, args.zero_shot_model, logs,
                                  args.rounds, systems, endpoints)
    results["images"] = f"{', '.join(PHOTOS)} at long sides {args.sizes} px"
    results["models"] = bench_precision.served_models()
    if args.engines_bare:
        results["bare"] = bench_precision.bare(args.engines_bare.split(","), systems=systems)
        results["time_split"] = bench_precision.time_split(results, bench_precision.endpoint_tags(args.zero_shot_model))
    return _write_side_report(args, argv, results, bench_precision.markdown, command)


def bulk_only(args: argparse.Namespace, argv: list[str] | None, logs: Path, command: tuple[str, ...] = COMMAND) -> int:
    from bench import bulk as bench_bulk

    concurrency = _ints(args.concurrency)[-1] if args.concurrency != "1,8,32,128" else 32
    rounds = args.rounds if "--rounds" in (argv or sys.argv[1:]) else 2
    results = bench_bulk.run(args.bulk_tasks.split(","), args.bulk_images, make_images(_ints(args.sizes)), rounds,
                             concurrency, logs)
    results.update(images=f"{', '.join(PHOTOS)} at long sides {args.sizes} px, cycled", rounds=rounds,
                   concurrency=concurrency)
    return _write_side_report(args, argv, results, bench_bulk.markdown, command)


def parity(args: argparse.Namespace, argv: list[str] | None, command: tuple[str, ...] = COMMAND) -> int:
    from bench import parity as bench_parity
    from bench import precision as bench_precision

    sizes = _ints(args.sizes)
    results = {"baseline": bench_precision.BASELINE,
               "images": f"{', '.join(PHOTOS)} as JPEG at long sides {args.sizes} px",
               "parity": bench_parity.run(args.parity_only.split(","), make_images(sizes),
                                          bench_precision.chosen(args.engine_systems), bench_precision.BASELINE)}
    return _write_side_report(args, argv, results, bench_parity.markdown, command)
