"""Runtime settings, read from environment variables (one place, documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass

SPECIES_MODEL_NAME = "eva02-inat21"
AESTHETIC_CLIP_NAME = "clip-vit-b16-openai"
AESTHETIC_HEAD_NAME = "laion-aesthetic-vit-b16"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not an integer; unset it or give a whole number") from exc


@dataclass(frozen=True)
class Settings:
    """Values the service reads at start-up. Each field names its environment variable."""

    species_model: str  # SPECIES_MODEL: store tag, e.g. "eva02-inat21:latest" or "eva02-inat21:dev"
    species_max_batch_size: int  # SPECIES_MAX_BATCH_SIZE
    species_max_latency_ms: int  # SPECIES_MAX_LATENCY_MS: budget for a request waiting in a batch
    aesthetic_clip_model: str  # AESTHETIC_CLIP_MODEL: store tag of the CLIP ViT-B/16 image tower
    aesthetic_head_model: str  # AESTHETIC_HEAD_MODEL: store tag of the LAION head
    aesthetic_max_batch_size: int  # AESTHETIC_MAX_BATCH_SIZE
    aesthetic_max_latency_ms: int  # AESTHETIC_MAX_LATENCY_MS
    max_image_pixels: int  # MAX_IMAGE_PIXELS: decoded width*height above this is refused (413)
    gateway_workers: int  # GATEWAY_WORKERS: CPU processes decoding images
    device: str  # DEVICE: "auto", "cpu" or "cuda"

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            species_model=os.environ.get("SPECIES_MODEL", f"{SPECIES_MODEL_NAME}:latest"),
            species_max_batch_size=_int("SPECIES_MAX_BATCH_SIZE", 32),
            species_max_latency_ms=_int("SPECIES_MAX_LATENCY_MS", 1000),
            aesthetic_clip_model=os.environ.get("AESTHETIC_CLIP_MODEL", f"{AESTHETIC_CLIP_NAME}:latest"),
            aesthetic_head_model=os.environ.get("AESTHETIC_HEAD_MODEL", f"{AESTHETIC_HEAD_NAME}:latest"),
            aesthetic_max_batch_size=_int("AESTHETIC_MAX_BATCH_SIZE", 64),
            aesthetic_max_latency_ms=_int("AESTHETIC_MAX_LATENCY_MS", 1000),
            max_image_pixels=_int("MAX_IMAGE_PIXELS", 50_000_000),
            gateway_workers=_int("GATEWAY_WORKERS", 1),
            device=os.environ.get("DEVICE", "auto"),
        )


settings = Settings.from_env()
