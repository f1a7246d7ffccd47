"""The Ray Data stages: decoding in CPU tasks, then one actor class per model.

Decoding and preprocessing are the service's own (:mod:`serving.imaging`); the actors load their store entries'
inference engines (:mod:`engines`), the same ones the service's runners call, so bulk rows equal the service's
answers for the same images.
Rows that could not be decoded keep their error and zero pixels, which the actors skip.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bulk.inputs import read_bytes
from engines.thread import InferenceThread
from serving.errors import ServiceError
from capabilities.report import measure
from serving.imaging import PreprocessConfig, decode_image_sized, draft_size, preprocess

logger = logging.getLogger(__name__)


def pixels_column(stage: str) -> str:
    return f"pixels_{stage}"


def decode_batch(batch: dict[str, np.ndarray], cfgs: dict[str, dict[str, Any]], max_pixels: int,
                 report_stage: str | None = None, drafts: dict[str, int] | None = None) -> dict[str, Any]:
    """Read, decode and preprocess each path once per draft size: ``path``, ``error``/``error_detail`` (empty
    when fine) and, per stage, ``pixels_<stage>`` uint8 ``(N, H, W, 3)``. With ``report_stage``, also the photo
    report's measures (``report_measures``, JSON) from that stage's decode, as the service takes them."""
    configs = {stage: PreprocessConfig.model_validate(cfg) for stage, cfg in cfgs.items()}
    by_draft: dict[int, list[str]] = {}
    for stage, cfg in configs.items():  # ``drafts``: a stage decoded at another scale, as the service decodes it
        by_draft.setdefault((drafts or {}).get(stage, draft_size(cfg)), []).append(stage)
    paths = [str(p) for p in batch["path"]]
    n = len(paths)
    errors, details = [""] * n, [""] * n
    pixels = {s: np.zeros((n, c.height, c.width, 3), np.uint8) for s, c in configs.items()}
    measures = np.array([""] * n, dtype=object)
    for i, location in enumerate(paths):
        try:
            data = read_bytes(location)
        except Exception as exc:  # missing, permission, network: the file's problem, recorded on its row
            errors[i], details[i] = "unreadable", f"Cannot read {location}: {type(exc).__name__}: {exc}"[:500]
            continue
        if not data:
            errors[i], details[i] = "empty_file", "The file is empty (0 bytes)."
            continue
        try:
            for side, stages in by_draft.items():
                img, size = decode_image_sized(data, max_pixels, side)
                for stage in stages:
                    pixels[stage][i] = preprocess(img, configs[stage])
                if report_stage in stages:
                    measures[i] = measure(img, size).model_dump_json()
        except ServiceError as err:  # the service's codes; its details speak of request bodies
            errors[i], details[i] = err.error, err.detail.replace("The body is", "The file is")
    return {"path": np.array(paths, dtype=object), "error": np.array(errors, dtype=object),
            "error_detail": np.array(details, dtype=object), **{pixels_column(s): p for s, p in pixels.items()},
            **({"report_measures": measures} if report_stage else {})}


def _engines(name: str, paths: dict[str, str], num_threads: int) -> tuple[InferenceThread, dict[str, Any]]:
    """(the one thread for all of this actor's inference work, the engine of each catalog entry in ``paths``):
    Ray Data calls an actor's ``__call__`` on another thread than its constructor, and a second thread calling
    torch on CPU costs each forward its own OpenMP team (see :class:`engines.thread.InferenceThread`). Each
    engine is the one its store entry names, as in the service's runners."""
    import catalog
    import engines
    from model_store import open_entry
    from serving.settings import settings

    thread = InferenceThread(name)
    if num_threads > 0:
        thread.call(_set_threads, num_threads)
    return thread, {entry: thread.call(engines.load, open_entry(entry, tag),
                                       settings.engine_options(catalog.entry(entry), threads=num_threads))
                    for entry, tag in paths.items()}


def _set_threads(n: int) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, n))


class SpeciesStage:
    """Actor: top-k species of the decoded rows, as ``species`` (labels) and ``species_scores``; with a stored
    taxonomy also ``species_indices`` and the best group of each rank over the full softmax (``species_rank_names``,
    ``species_rank_scores``, genus first), as the service's runner computes them."""

    def __init__(self, model: str, tag: str, top_k: int, num_threads: int) -> None:
        from model_store import open_entry, taxonomy

        self.thread, found = _engines("species", {model: tag}, num_threads)
        self.engine = found[model]
        self.top_k = top_k
        taxa = taxonomy.read_stored(open_entry(model, tag).path)
        self.groups = taxonomy.Groups(taxa) if taxa is not None else None
        # one string width for every block: Ray Data turns the (N, k) array into a tensor column of that width,
        # and blocks of different widths cannot be combined into the next stage's batches
        self.label_dtype = f"<U{max(len(label) for label in self.engine.labels)}"
        self.group_dtype = f"<U{max((len(n) for names in self.groups.names for n in names), default=1)}" \
            if self.groups else "<U1"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import engines

        pixels = batch.pop(pixels_column("species"))
        ok = np.flatnonzero(batch["error"] == "")
        n, ranks = len(pixels), len(self.groups.ranks) if self.groups else 0
        labels = [[""] * self.top_k for _ in range(n)]
        scores = np.full((n, self.top_k), np.nan, np.float32)
        indices = np.full((n, self.top_k), -1, np.int64)
        rank_names = np.full((n, ranks), "", self.group_dtype)
        rank_scores = np.full((n, ranks), np.nan, np.float64)
        if len(ok):
            if self.groups is None:
                top, idx = self.thread.call(self.engine.classify, pixels[ok], self.top_k)
                best = [[] for _ in ok]
            else:
                probs = self.thread.call(self.engine.probabilities, pixels[ok])
                top, idx = engines.top_k(probs, self.top_k)
                best = self.groups.best(probs)
            if len(top) != len(ok):
                raise RuntimeError(f"species model returned {len(top)} results for {len(ok)} images")
            for i, s, row, groups in zip(ok, top, idx, best):
                labels[i], scores[i], indices[i] = [self.engine.labels[j] for j in row], s, row
                rank_names[i] = [name for _, name, _ in groups]
                rank_scores[i] = [score for _, _, score in groups]
        return {**batch, "species": np.array(labels, dtype=self.label_dtype), "species_scores": scores,
                "species_indices": indices, "species_rank_names": rank_names, "species_rank_scores": rank_scores}


class ClipStage:
    """Actor: one CLIP image tower for the decoded rows: its embedding as ``embedding_<alias>``, for a tower with a
    head (the ViT-B/16 with the LAION head) ``aesthetic_raw``, and with ``gate`` the organism gate's organism
    probability (``gate_organism``), as the service's species answers compute it."""

    def __init__(self, stage: str, model: str, tag: str, head: str | None, head_tag: str | None, embedding: bool,
                 num_threads: int, gate: bool = False) -> None:
        paths = {model: tag, **({head: head_tag} if head else {})}
        self.thread, found = _engines(stage, paths, num_threads)
        self.tower, self.head = found[model], found.get(head)
        self.stage, self.embedding = stage, embedding
        self.gate = None
        if gate:
            from capabilities import taxa
            from model_store import open_entry

            prompts = self.thread.call(self.tower.embed_texts, list(taxa.GATE_PROMPTS))
            self.gate = (prompts, open_entry(model, tag).meta.logit_scale or 100.0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        pixels = batch.pop(pixels_column(self.stage))
        ok = np.flatnonzero(batch["error"] == "")
        vectors, raw = self.thread.call(self._infer, pixels[ok] if len(ok) else np.zeros_like(pixels[:1]))
        out: dict[str, Any] = dict(batch)
        if len(vectors) != max(len(ok), 1):
            raise RuntimeError(f"{self.stage} model returned {len(vectors)} embeddings for {len(ok)} images")
        if raw is not None:
            out["aesthetic_raw"] = np.full(len(pixels), np.nan, np.float32)
            out["aesthetic_raw"][ok] = raw[:len(ok)]
        if self.embedding:
            out[embedding_column(self.stage)] = np.zeros((len(pixels), vectors.shape[1]), np.float32)
            out[embedding_column(self.stage)][ok] = vectors[:len(ok)]
        if self.gate is not None:
            from capabilities import taxa

            out["gate_organism"] = np.full(len(pixels), np.nan, np.float64)
            out["gate_organism"][ok] = [taxa.gate(v, *self.gate).organism for v in vectors[:len(ok)]]
        return out

    def _infer(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings (and head outputs) of a batch; a batch with no decoded image runs one black image, so the
        columns keep their width."""
        vectors = self.tower.embed_images(pixels)
        return vectors, (self.head.apply(vectors) if self.head is not None else None)


def embedding_column(stage: str) -> str:
    return "embedding_" + stage.replace("-", "_")
