"""Zero-shot requests: validation of data URIs, class lists and templates, and the probability maths."""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serving.errors import ServiceError
from serving.schemas import MAX_WAIT_S
from serving.settings import settings

DEFAULT_TEMPLATES = ("a photo of a {}.",)
_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.I)


class ZeroShotConfig(BaseModel):
    """Options shared by all images of a request. Unknown keys are accepted and ignored (as by vitrivr's
    feature-extraction-server, whose clients send ``{}``); the known ones are validated."""

    model_config = ConfigDict(extra="ignore")
    templates: list[str] | None = Field(
        default=None, description='Prompt templates, each with one "{}" for the class name; default ["a photo of a {}."]'
    )


class ZeroShotJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="The image as a data URI (data:image/jpeg;base64,...) or bare base64")
    classes: list[str] = Field(description="Class names, in the order the probabilities come back")
    config: ZeroShotConfig = Field(default_factory=ZeroShotConfig)


class BatchedZeroShotJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: list[str] = Field(description="Images as data URIs or bare base64; one probability list per image")
    classes: list[str]
    config: ZeroShotConfig = Field(default_factory=ZeroShotConfig)


def decode_data_uri(uri: str, max_bytes: int | None = None) -> bytes:
    """The bytes of an image given as a base64 ``data:`` URI or as bare base64 (the format is sniffed from the
    bytes later). Raises 400 for malformed input, 413 when too long."""
    max_bytes = settings.max_data_uri_bytes if max_bytes is None else max_bytes
    if len(uri) > max_bytes:
        raise ServiceError(413, "payload_too_large", f"An image data URI is {len(uri)} characters; the limit is {max_bytes}.")
    if uri[:5].lower() == "data:":
        match = _DATA_URI.match(uri)
        if not match:
            raise ServiceError(400, "invalid_data_uri",
                               'Images must be base64 data URIs like "data:image/jpeg;base64,/9j/4AAQ..." or bare base64.')
        payload = uri[match.end():]
    else:
        payload = uri
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(400, "invalid_data_uri", "The image is not valid base64 (a data URI or bare base64).") from None
    if not data:
        raise ServiceError(400, "invalid_data_uri", "The image string holds no bytes.")
    return data


def check_classes(classes: Sequence[str]) -> list[str]:
    """Non-empty, unique, bounded class names, returned as given (order is the answer's order)."""
    limit, chars = settings.zero_shot_max_classes, settings.zero_shot_max_class_chars
    if not classes:
        raise ServiceError(400, "invalid_classes", "Give at least one class name.")
    if len(classes) > limit:
        raise ServiceError(400, "invalid_classes", f"{len(classes)} classes given; the limit is {limit}.")
    for name in classes:
        if not isinstance(name, str) or not name.strip():
            raise ServiceError(400, "invalid_classes", "Class names must be non-empty strings.")
        if len(name) > chars:
            raise ServiceError(400, "invalid_classes", f"A class name has {len(name)} characters; the limit is {chars}.")
    seen: set[str] = set()
    duplicates = [c for c in classes if c in seen or seen.add(c)]
    if duplicates:
        raise ServiceError(400, "invalid_classes", f"Class names must be unique; repeated: {sorted(set(duplicates))[:5]}.")
    return list(classes)


def check_templates(templates: Sequence[str] | None) -> list[str]:
    """Templates with exactly one ``{}`` each; the default when none are given."""
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    limit = settings.zero_shot_max_templates
    if not templates or len(templates) > limit:
        raise ServiceError(400, "invalid_templates", f"Give 1 to {limit} templates, or leave config.templates out.")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1 or len(t) > 300:
            raise ServiceError(400, "invalid_templates",
                               f'Each template needs exactly one "{{}}" for the class name and at most 300 characters; got {t!r:.80}.')
    if len(set(templates)) != len(templates):
        raise ServiceError(400, "invalid_templates", "Templates must be unique.")
    return list(templates)


def probabilities(image_embeddings: np.ndarray, class_embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """``softmax(logit_scale * cos(image, class_i))`` over classes, one row per image, in float64."""
    images = np.asarray(image_embeddings, dtype=np.float64)
    classes = np.asarray(class_embeddings, dtype=np.float64)
    images = images / np.linalg.norm(images, axis=-1, keepdims=True)
    classes = classes / np.linalg.norm(classes, axis=-1, keepdims=True)
    logits = logit_scale * images @ classes.T
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def check_wait(wait: str | float | None) -> float:
    """Seconds a status read may wait for the job to finish: 0 (answer at once) to MAX_WAIT_S."""
    try:
        value = float(0 if wait is None or wait == "" else wait)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value <= MAX_WAIT_S:
        raise ServiceError(400, "invalid_wait", f"wait is how many seconds to hold the request until the job is "
                           f"complete or failed: a number from 0 to {MAX_WAIT_S:g}; got {str(wait)[:50]!r}.")
    return value
