"""Runtime settings, read from environment variables (one place, documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import catalog

if TYPE_CHECKING:
    from engines import EngineOptions


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not an integer; unset it or give a whole number") from exc


def _seconds(name: str, default: int) -> int:
    """A whole number of seconds above 0."""
    value = _int(name, default)
    if value <= 0:
        raise ValueError(f"{name}={value}: give a number of seconds above 0, or unset it for {default}")
    return value


def _share(name: str, default: float) -> float:
    """A probability threshold from 0 to 1."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ValueError(f"{name}={raw!r} must be a number from 0 to 1; unset it for {default}")
    return value


def _str(name: str, default: str) -> str:
    """An environment variable; unset or empty means the default."""
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Settings:
    """Values the service reads at start-up. Each field names its environment variable."""

    # Per catalog entry, its store tag from the entry's setting (SPECIES_MODEL, AESTHETIC_CLIP_MODEL, ...; default
    # "<name>:latest"), and per batching group (SPECIES, AESTHETIC, ZERO_SHOT) its <PREFIX>_MAX_BATCH_SIZE and
    # <PREFIX>_MAX_LATENCY_MS (the budget for a request waiting to start): see catalog.py.
    model_tags: Mapping[str, str]
    batching: Mapping[str, tuple[int, int]]
    zero_shot_text_cache: int  # ZERO_SHOT_TEXT_CACHE: class embeddings kept per model (LRU)
    zero_shot_max_classes: int  # ZERO_SHOT_MAX_CLASSES: classes per request
    zero_shot_max_class_chars: int  # ZERO_SHOT_MAX_CLASS_CHARS: characters per class name
    zero_shot_max_templates: int  # ZERO_SHOT_MAX_TEMPLATES: prompt templates per request
    zero_shot_max_batch_images: int  # ZERO_SHOT_MAX_BATCH_IMAGES: images per batched job
    species_rollup_min: float  # SPECIES_ROLLUP_MIN: summed probability a rank needs to be the roll-up
    species_identified_min: float  # SPECIES_IDENTIFIED_MIN: top species probability for "identified"
    species_identified_margin: float  # SPECIES_IDENTIFIED_MARGIN: ... and its lead over the second
    species_possible_min: float  # SPECIES_POSSIBLE_MIN: probability for matchStrength "possible" (else "weak")
    species_gate: str  # SPECIES_GATE: on (the organism gate runs on the aesthetic tower) or off
    species_gate_min: float  # SPECIES_GATE_MIN: non-organism probability that makes the answer "not_organism"
    embed_max_texts: int  # EMBED_MAX_TEXTS: texts per /embed/text request or batched text-embedding job
    embed_max_text_chars: int  # EMBED_MAX_TEXT_CHARS: characters per text (tokens past the context are cut)
    max_batch_images: int  # MAX_BATCH_IMAGES: images per /classify/batch or /score/batch request
    max_data_uri_bytes: int  # MAX_DATA_URI_BYTES: length of one image data URI
    job_store_url: str  # JOB_STORE_URL: sqlite:///path (one host) or postgresql://... (every replica); JOB_STORE_PATH
    job_store_pool_size: int  # JOB_STORE_POOL_SIZE: PostgreSQL connections per gateway worker (at most)
    job_store_timeout_ms: int  # JOB_STORE_TIMEOUT_MS: PostgreSQL statement timeout, and the wait for a pool connection
    job_retention_s: int  # JOB_RETENTION_S: finished jobs stay readable this long
    job_concurrency: int  # JOB_CONCURRENCY: jobs each gateway worker runs at once
    job_lease_s: int  # JOB_LEASE_S: a running job whose worker stops renewing this long is resumed elsewhere
    job_max_attempts: int  # JOB_MAX_ATTEMPTS: tries before a job is marked failed
    max_body_bytes: int  # MAX_BODY_BYTES: request bodies above this get 413 before they are read
    api_key: str  # API_KEY: when set, required as "Authorization: Bearer <key>" or "X-API-Key" (not on health routes)
    gateway_max_concurrency: int  # GATEWAY_MAX_CONCURRENCY: requests in flight per gateway worker before 429
    max_image_pixels: int  # MAX_IMAGE_PIXELS: decoded width*height above this is refused (413)
    gateway_workers: int  # GATEWAY_WORKERS: CPU processes decoding images
    request_timeout_s: int  # REQUEST_TIMEOUT_S: a request's limit in the gateway and in each runner
    runner_queue_batches: int  # RUNNER_QUEUE_BATCHES: full batches each gateway worker may have in a runner at once
    runner_batcher: str  # RUNNER_BATCHER: "idle-aware" (serving/batching.py) or "bentoml" (BentoML's own batcher)
    device: str  # DEVICE: "auto", "cpu" or "cuda"
    engine: str  # ENGINE: "auto" (unset: OpenVINO on a CPU where installed, else torch), "torch", "openvino"
    precisions: dict[str, str]  # <PREFIX>_PRECISION (SPECIES, AESTHETIC, ZERO_SHOT): PRECISION for one runner
    precision: str  # PRECISION: "auto" (unset: bf16 on CUDA and on CPUs with native bf16, else fp32), "fp32", "bf16"
    torch_compile: str  # TORCH_COMPILE: "off", or a torch.compile mode for the image towers ("reduce-overhead", ...)
    runner_gpus: str  # RUNNER_GPUS: GPUs each runner declares: "auto" (1 / number of runners when CUDA is visible, else none) or a number

    def tag(self, name: str) -> str:
        """The store tag of the catalog entry ``name``."""
        return self.model_tags[name]

    def precision_of(self, entry: catalog.ModelEntry) -> str:
        """The precision setting of ``entry``'s runner: its ``<PREFIX>_PRECISION``, else ``PRECISION`` (a head
        follows the tower it runs with)."""
        owner = entry if entry.batching else next((m for m in catalog.MODELS if m.head == entry.name), entry)
        return (self.precisions.get(owner.batching.prefix, "") if owner.batching else "") or self.precision

    def engine_options(self, entry: catalog.ModelEntry, threads: int = 0) -> "EngineOptions":
        """How ``entry`` is loaded, by its runner, bulk or the benchmark: DEVICE, ENGINE, TORCH_COMPILE, and
        PRECISION or its runner's own."""
        from engines import EngineOptions

        return EngineOptions(device=self.device, precision=self.precision_of(entry), compile=self.torch_compile,
                             threads=threads, engine=self.engine)

    def batch(self, entry: catalog.ModelEntry) -> tuple[int, int]:
        """(max batch size, max latency in ms) of ``entry``'s runner."""
        assert entry.batching is not None, f"{entry.name} has no runner of its own"
        return self.batching[entry.batching.prefix]

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            model_tags={m.name: _str(m.setting, f"{m.name}:latest") for m in catalog.MODELS},
            batching={b.prefix: (_int(f"{b.prefix}_MAX_BATCH_SIZE", b.max_batch_size),
                                 _int(f"{b.prefix}_MAX_LATENCY_MS", b.max_latency_ms)) for b in catalog.batchings()},
            zero_shot_text_cache=_int("ZERO_SHOT_TEXT_CACHE", 8192),
            zero_shot_max_classes=_int("ZERO_SHOT_MAX_CLASSES", 256),
            zero_shot_max_class_chars=_int("ZERO_SHOT_MAX_CLASS_CHARS", 200),
            zero_shot_max_templates=_int("ZERO_SHOT_MAX_TEMPLATES", 32),
            zero_shot_max_batch_images=_int("ZERO_SHOT_MAX_BATCH_IMAGES", 32),
            species_rollup_min=_share("SPECIES_ROLLUP_MIN", 0.8),
            species_identified_min=_share("SPECIES_IDENTIFIED_MIN", 0.5),
            species_identified_margin=_share("SPECIES_IDENTIFIED_MARGIN", 0.2),
            species_possible_min=_share("SPECIES_POSSIBLE_MIN", 0.1),
            species_gate=_str("SPECIES_GATE", "on"),
            species_gate_min=_share("SPECIES_GATE_MIN", 0.6),
            embed_max_texts=_int("EMBED_MAX_TEXTS", 64),
            embed_max_text_chars=_int("EMBED_MAX_TEXT_CHARS", 2000),
            max_batch_images=_int("MAX_BATCH_IMAGES", 32),
            max_data_uri_bytes=_int("MAX_DATA_URI_BYTES", 16_000_000),
            max_body_bytes=_int("MAX_BODY_BYTES", 32_000_000),
            api_key=_str("API_KEY", ""),
            gateway_max_concurrency=_int("GATEWAY_MAX_CONCURRENCY", 1024),
            job_store_url=_str("JOB_STORE_URL", "sqlite:///" + _str("JOB_STORE_PATH", "var/jobs.sqlite")),
            job_store_pool_size=_int("JOB_STORE_POOL_SIZE", 8),
            job_store_timeout_ms=_int("JOB_STORE_TIMEOUT_MS", 5000),
            job_retention_s=_int("JOB_RETENTION_S", 86_400),
            job_concurrency=_int("JOB_CONCURRENCY", 64),
            job_lease_s=_int("JOB_LEASE_S", 15),
            job_max_attempts=_int("JOB_MAX_ATTEMPTS", 5),
            max_image_pixels=_int("MAX_IMAGE_PIXELS", 50_000_000),
            gateway_workers=_int("GATEWAY_WORKERS", 1),
            request_timeout_s=_seconds("REQUEST_TIMEOUT_S", 120),
            runner_queue_batches=_int("RUNNER_QUEUE_BATCHES", 2),
            runner_batcher=_str("RUNNER_BATCHER", "idle-aware"),
            device=_str("DEVICE", "auto"),
            engine=_str("ENGINE", ""),
            precision=_str("PRECISION", ""),
            precisions={b.prefix: os.environ[f"{b.prefix}_PRECISION"] for b in catalog.batchings()
                        if os.environ.get(f"{b.prefix}_PRECISION")},
            torch_compile=_str("TORCH_COMPILE", "off"),
            runner_gpus=_str("RUNNER_GPUS", "auto"),
        )


settings = Settings.from_env()
