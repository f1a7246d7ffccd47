"""What the organism gate costs on ``/classify`` (``benchmark.py --gate-only``): two ``bentoml serve`` (dev
models), ``SPECIES_GATE=off`` and ``on``, measured side by side at concurrency 1, request by request alternating
between them on the same JPEGs; the p50 of each and their ratio (target: the gate adds at most 15 %)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

logger = logging.getLogger(__name__)
SYSTEMS = ("off", "on")


def run(images: dict[int, bytes], requests: int, logs: Path) -> dict[str, Any]:
    from tests.support.local_server import own_home, start_server, stopped_at_exit

    with stopped_at_exit() as servers:
        for gate in SYSTEMS:
            servers[gate] = start_server(logs / f"gate-{gate}.log", env={
                "BENTOML_HOME": own_home(logs / f"home-{gate}"), "SPECIES_GATE": gate})
        rows = {}
        with httpx.Client(timeout=120) as client:
            for side, data in images.items():
                times: dict[str, list[float]] = {gate: [] for gate in SYSTEMS}
                for i in range(requests + 3):
                    for gate in SYSTEMS:
                        start = time.perf_counter()
                        response = client.post(f"{servers[gate].url}/classify", content=data,
                                               headers={"Content-Type": "image/jpeg"})
                        elapsed = (time.perf_counter() - start) * 1000
                        response.raise_for_status()
                        assert (response.json()["gate"] is None) == (gate == "off")
                        if i >= 3:  # warm-up
                            times[gate].append(elapsed)
                off, on = (float(np.median(times[g])) for g in SYSTEMS)
                rows[str(side)] = {"off_p50_ms": round(off, 2), "on_p50_ms": round(on, 2), "ratio": round(on / off, 3)}
    return {"classify": rows, "requests": requests}


def markdown(report: dict[str, Any]) -> list[str]:
    lines = [f"## /classify at concurrency 1, {report['requests']} alternating pairs per size", "",
             "| long side px | SPECIES_GATE=off p50 ms | on p50 ms | on / off |", "|---:|---:|---:|---:|"]
    lines += [f"| {side} | {r['off_p50_ms']} | {r['on_p50_ms']} | {r['ratio']} |"
              for side, r in report["classify"].items()]
    return lines + [""]
