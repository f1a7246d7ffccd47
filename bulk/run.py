"""The bulk run: plan the stages from the store entries, stream the inputs through Ray Data, write parts."""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from bulk.inputs import list_inputs
from bulk.output import Parts
from bulk.stages import ClipStage, SpeciesStage, decode_batch, embedding_column
import catalog
from capabilities import taxa
from capabilities.aesthetic import clamp_score
from capabilities.report import report as photo_report
from model_store import DEV, open_entry, taxonomy
from serving.schemas import Measures, PhotoReport
from serving.settings import settings

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIXES = ("BENTOML_HOME", "DEVICE", "ENGINE", "PRECISION", "TORCH_COMPILE", "MAX_IMAGE_PIXELS", "HF_", "OMP_",
                *(m.setting for m in catalog.MODELS), *(f"{b.prefix}_" for b in catalog.batchings()))


@dataclass
class Stage:
    name: str  # "species", or a CLIP tower's alias ("b16", "l14", ...)
    cls: type
    kwargs: dict[str, Any]
    preprocess: dict[str, Any]
    batch_size: int


@dataclass
class Plan:
    stages: list[Stage] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)
    report_stage: str | None = None  # the aesthetic stage, whose decode the photo report measures
    taxonomy: Any = None  # the species model's stored taxonomy (model_store.taxonomy.Taxonomy), when it has one
    drafts: dict[str, int] = field(default_factory=dict)  # stages decoded at another scale than their own


def make_plan(species: bool, aesthetic: bool, embeddings: list[str], top_k: int, report: bool = False) -> Plan:
    """The stages for the chosen tasks, from the same catalog entries, store entries and settings as the
    service. The photo report needs the aesthetic score, so it brings the aesthetic task."""
    plan = Plan(description={"tasks": [], "models": {}})
    aesthetic = aesthetic or report
    tasks, models = plan.description["tasks"], plan.description["models"]
    if species:
        model = catalog.species_model()
        entry = open_entry(model.name)
        plan.stages.append(Stage("species", SpeciesStage, {"model": model.name, "tag": entry.tag, "top_k": top_k},
                                 entry.meta.require_preprocess().model_dump(mode="json"), settings.batch(model)[0]))
        tasks.append(f"species(top_k={top_k})")
        models["species"] = entry.describe()
        plan.taxonomy = taxonomy.read_stored(entry.path)
    scored = catalog.aesthetic_tower()
    gate = species and settings.species_gate == "on" and "text" in (open_entry(scored.name).meta.towers or ())
    towers = [scored.name] if aesthetic or gate else []
    towers += [n for n in embeddings if n not in towers]
    for name in towers:
        model = catalog.entry(name)
        alias = model.alias or name
        entry = open_entry(name)
        head = None
        if aesthetic and model.head:
            head = open_entry(model.head)
            models["aesthetic_head"] = head.describe()
            tasks.append("aesthetic")
            if report:
                tasks.append("report")
                plan.report_stage = alias
        if name in embeddings:
            tasks.append(f"embedding({alias})")
        kwargs = {"stage": alias, "model": name, "tag": entry.tag, "head": head.entry.name if head else None,
                  "head_tag": head.tag if head else None, "embedding": name in embeddings,
                  "gate": gate and name == scored.name}
        if kwargs["gate"]:
            tasks.append("organism-gate")
            from capabilities.species import species_draft

            species_cfg = open_entry(catalog.species_model().name).meta.require_preprocess()
            plan.drafts["species"] = species_draft(species_cfg, entry.meta.require_preprocess())
        plan.stages.append(Stage(alias, ClipStage, kwargs, entry.meta.require_preprocess().model_dump(mode="json"),
                                 settings.batch(model)[0]))
        models[alias] = entry.describe()
    return plan


REPORT_TYPES = {int: pa.int32(), float: pa.float64(), list[str]: pa.list_(pa.string())}


def report_columns(measures: np.ndarray, raw: np.ndarray, bad: np.ndarray) -> dict[str, pa.Array]:
    """The photo report's fields as columns (those /scores answers; aesthetic_score is the aesthetic task's), from
    each row's measures and head output, combined as the service combines them."""
    reports = [None if b else photo_report(Measures.model_validate_json(m), clamp_score(float(r)))
               for m, r, b in zip(measures, raw, bad)]
    fields = {k: f.annotation for k, f in PhotoReport.model_fields.items() if k != "aesthetic_score"}
    return {k: pa.array([None if r is None else getattr(r, k) for r in reports], REPORT_TYPES[kind])
            for k, kind in fields.items()}


def species_columns(batch: dict[str, np.ndarray], bad: np.ndarray, taxa_: Any,
                    gate_organism: np.ndarray | None) -> dict[str, pa.Array]:
    """The species answer's trust fields, as /classify gives them: ``species_common_names``, ``species_lineage``
    (of the first species), ``species_status`` (with the organism gate's answer when it ran), ``rollup_rank``,
    ``rollup_name``, ``rollup_score``."""
    limits = taxa.Thresholds.from_settings(settings)
    rows = []
    for i, b in enumerate(bad):
        if b:
            rows.append(None)
            continue
        ranks = [SimpleNamespace(rank=r, name=str(n), score=float(p)) for r, n, p in zip(
            reversed(taxa_.ranks), batch["species_rank_names"][i], batch["species_rank_scores"][i])] if taxa_ else []
        top = SimpleNamespace(labels=[str(x) for x in batch["species"][i]], ranks=ranks,
                              scores=[float(x) for x in batch["species_scores"][i]],
                              indices=[int(x) for x in batch["species_indices"][i] if x >= 0] if taxa_ else [])
        found = taxa.predictions(top, len(top.labels), taxa_)
        rolled = taxa.rollup(top, taxa_, limits.rollup_min)
        gate = None if gate_organism is None else taxa.Gate(organism=float(gate_organism[i]),
                                                             not_organism=1.0 - float(gate_organism[i]))
        rows.append((found, taxa.status(top.scores, gate, limits), rolled))
    return {
        "species_common_names": pa.array([None if r is None else [p.common_name for p in r[0]] for r in rows],
                                         pa.list_(pa.string())),
        "species_lineage": pa.array([None if r is None else r[0][0].lineage for r in rows], pa.list_(pa.string())),
        "species_status": pa.array([None if r is None else r[1] for r in rows], pa.string()),
        "rollup_rank": pa.array([None if r is None or r[2] is None else r[2].rank for r in rows], pa.string()),
        "rollup_name": pa.array([None if r is None or r[2] is None else r[2].name for r in rows], pa.string()),
        "rollup_score": pa.array([None if r is None or r[2] is None else r[2].score for r in rows], pa.float64()),
    }


def _text(values: np.ndarray) -> pa.Array:
    return pa.array([str(v) if v else None for v in values], pa.string())


def to_table(batch: dict[str, np.ndarray], plan: Plan) -> pa.Table:
    """One output batch as rows: path, error, error_detail and each task's columns (null on error rows)."""
    bad = np.array([bool(e) for e in batch["error"]])
    columns: dict[str, pa.Array] = {"path": pa.array([str(p) for p in batch["path"]], pa.string()),
                                    "error": _text(batch["error"]), "error_detail": _text(batch["error_detail"])}
    for stage in plan.stages:
        if stage.name == "species":
            columns["species"] = pa.array([None if b else v.tolist() for v, b in zip(batch["species"], bad)],
                                          pa.list_(pa.string()))
            columns["species_scores"] = pa.array([None if b else v.tolist() for v, b in
                                                  zip(batch["species_scores"], bad)], pa.list_(pa.float32()))
            columns.update(species_columns(batch, bad, plan.taxonomy, batch.get("gate_organism")))
            continue
        if stage.kwargs.get("gate") and "species_rank_names" in batch:
            gate = np.asarray(batch["gate_organism"], np.float64)
            columns["gate_organism"] = pa.array(gate, pa.float64(), mask=bad)
        if "aesthetic_raw" in batch and stage.kwargs["head"]:
            raw = np.asarray(batch["aesthetic_raw"], np.float32)
            columns["aesthetic_score"] = pa.array([clamp_score(float(r)) for r in raw], pa.float32(), mask=bad)
            columns["aesthetic_raw"] = pa.array(raw, pa.float32(), mask=bad)
            if "report_measures" in batch:
                columns.update(report_columns(batch["report_measures"], raw, bad))
        if stage.kwargs["embedding"]:
            emb = np.asarray(batch[embedding_column(stage.name)], np.float32)
            columns[embedding_column(stage.name)] = pa.FixedSizeListArray.from_arrays(
                pa.array(emb.reshape(-1)), emb.shape[1], mask=pa.array(bad))
    return pa.table(columns)


def _runtime_env(remote: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    runtime: dict[str, Any] = {"env_vars": env}
    if remote:  # ship this project's code; the packages and the model store must be on the nodes
        runtime["working_dir"] = str(ROOT)
        runtime["excludes"] = [".venv/", ".git/", "var/", "test-artifacts/", "docs/", "*.parquet"]
    return runtime


@dataclass
class Resources:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    threads: int
    decode_cpus: float  # per decoding task


def plan_resources(cluster: dict[str, float], stages: int, actors: int | None, gpus_per_actor: float | None,
                   cpus_per_actor: float | None) -> Resources:
    """Actor pool sizes and shares: with GPUs, each stage's actors take a share of them (a whole GPU where there
    are enough) and a CPU each, and decoding tasks a CPU each. On CPUs alone, models and decoding share every
    core: the actors reserve a token share and run as many torch threads as there are CPUs per stage, and the
    decoding tasks are sized so that one per CPU fits beside them (Ray counts CPUs as logical resources)."""
    cpus, gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    if gpus > 0:
        share = gpus_per_actor or (1.0 if gpus >= stages else math.floor(gpus / stages * 1000) / 1000)
        count = actors or max(1, int(gpus // (stages * share)))
        return Resources(count, cpus_per_actor or 1.0, share, max(1, int(cpus_per_actor or 1)), 1.0)
    count = actors or 1
    share = cpus_per_actor or 0.1
    left = max(0.0, cpus - stages * count * share)
    decode = max(0.05, math.floor(left / max(1.0, cpus) * 100) / 100)
    return Resources(count, share, 0.0, max(1, int(cpus // (stages * count))), decode)


def _decode_task_args(num_cpus: float) -> dict[str, Any]:
    return {"num_cpus": num_cpus}


def _rates(marks: list[tuple[float, int]], total: int, started: float,
           end: float | None = None) -> dict[str, float | None]:
    """Start-up (until the first result) and the steady rate: the second half of the results over the time
    they took, when Ray, the actors and the models have long been up."""
    end = time.monotonic() if end is None else end
    if not marks:
        return {"startup_s": None, "steady_images_per_s": None}
    half = next(((t, n) for t, n in marks if n >= total / 2), marks[-1])
    steady = (total - half[1]) / (end - half[0]) if total > half[1] and end > half[0] else None
    return {"startup_s": round(marks[0][0] - started, 2),
            "steady_images_per_s": round(steady, 2) if steady else None}


def _batches(ds: Any) -> Iterator[dict[str, np.ndarray]]:
    yield from ds.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=1)


def run(source: str, out: str, *, species: bool, aesthetic: bool, embeddings: list[str], top_k: int = 3,
        report: bool = False,
        column: str = "path", extensions: tuple[str, ...] = ("jpg", "jpeg", "png", "webp"), resume: bool = False,
        part_rows: int = 1000, decode_batch_size: int = 16, ray_address: str | None = None,
        num_cpus: int | None = None, actors: int | None = None, gpus_per_actor: float | None = None,
        cpus_per_actor: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Score ``source`` into Parquet parts under ``out``; the summary of the run (also ``out/_summary.json``)."""
    import ray
    from tqdm import tqdm

    started = time.monotonic()
    plan = make_plan(species, aesthetic, embeddings, top_k, report)
    parts = Parts(out, plan.description, resume)
    inputs = list_inputs(source, column, extensions)
    done = parts.done() & set(inputs) if resume else set()
    todo = [p for p in inputs if p not in done]
    summary: dict[str, Any] = {"source": source, "out": out, "inputs": len(inputs), "already_done": len(done),
                               "processed": 0, "ok": 0, "errors": {}, "models": plan.description["models"],
                               "tasks": plan.description["tasks"]}
    dev = [k for k, m in plan.description["models"].items() if m["variant"] == DEV]
    if dev:
        logger.warning("DEV models (random weights, meaningless scores) for: %s", ", ".join(dev))
    errors: Counter[str] = Counter()
    if todo:
        ray.init(address=ray_address, num_cpus=None if ray_address else num_cpus, include_dashboard=False,
                 runtime_env=_runtime_env(remote=bool(ray_address)), logging_level=logging.WARNING,
                 configure_logging=False)
        try:
            data_context = ray.data.DataContext.get_current()
            data_context.enable_progress_bars = False
            res = plan_resources(ray.cluster_resources(), len(plan.stages), actors, gpus_per_actor, cpus_per_actor)
            summary["resources"] = {**res.__dict__, "cluster": {k: ray.cluster_resources().get(k, 0)
                                                                for k in ("CPU", "GPU")}}
            blocks = max(1, min(math.ceil(len(todo) / decode_batch_size), 10_000))
            ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
            # Decoding runs in CPU tasks of its own: a ray_remote_args_fn keeps Ray Data from fusing it into the
            # first model's actors, which would serialise decoding behind inference in one process.
            ds = ds.map_batches(decode_batch, batch_size=decode_batch_size, batch_format="numpy",
                                num_cpus=res.decode_cpus,
                                ray_remote_args_fn=functools.partial(_decode_task_args, res.decode_cpus),
                                fn_kwargs={"cfgs": {s.name: s.preprocess for s in plan.stages},
                                           "max_pixels": settings.max_image_pixels,
                                           "report_stage": plan.report_stage, "drafts": plan.drafts})
            for stage in plan.stages:
                ds = ds.map_batches(stage.cls, batch_size=stage.batch_size, batch_format="numpy",
                                    fn_constructor_kwargs={**stage.kwargs, "num_threads": res.threads},
                                    compute=ray.data.ActorPoolStrategy(size=res.actors),
                                    num_cpus=res.cpus_per_actor, num_gpus=res.gpus_per_actor or None)
            pending: list[pa.Table] = []
            rows = 0
            marks: list[tuple[float, int]] = []  # (when a batch arrived, rows before it)
            with tqdm(total=len(todo), unit="img", desc="bulk", disable=not progress, file=sys.stderr,
                      mininterval=1.0, smoothing=0.1) as bar:
                try:
                    for batch in _batches(ds):
                        marks.append((time.monotonic(), summary["processed"]))
                        table = to_table(batch, plan)
                        pending.append(table)
                        rows += table.num_rows
                        summary["processed"] += table.num_rows
                        errors.update(e for e in batch["error"] if e)
                        bar.update(table.num_rows)
                        if rows >= part_rows:
                            parts.write(pa.concat_tables(pending))
                            pending, rows = [], 0
                finally:  # also on Ctrl-C: the rows already scored are kept
                    if pending:
                        parts.write(pa.concat_tables(pending))
            summary.update(_rates(marks, summary["processed"], started))
            logger.debug("Ray Data stats:\n%s", ds.stats())
        finally:
            if not ray_address or ray.is_initialized():
                ray.shutdown()
    seconds = time.monotonic() - started
    summary.update(ok=summary["processed"] - sum(errors.values()), errors=dict(errors), seconds=round(seconds, 2),
                   images_per_s=round(summary["processed"] / seconds, 2) if seconds else None, parts=len(parts.parts))
    parts.write_summary(summary)
    return summary
