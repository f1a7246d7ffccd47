"""A small typed Python client for the service (HTTP, no BentoML needed on the caller's side).

    from vision_client import VisionClient

    with VisionClient("http://localhost:3000") as vc:
        vc.classify(Path("photo.jpg"), top_k=5).predictions[0].species
        vc.score(Path("photo.jpg")).score
        job = vc.submit_zero_shot("open-clip-vit-b32", [Path("photo.jpg")], ["cat", "dog"])
        vc.wait(job.id).result.probabilities
        query = vc.embed_texts(["ein Hund im Schnee"], model="open-clip-vit-b32").embeddings[0]
        image = vc.embed(Path("photo.jpg"), model="open-clip-vit-b32").embedding  # comparable by dot product
"""

from __future__ import annotations

import base64
import mimetypes
import time
from pathlib import Path
from typing import Sequence

import httpx

from serving.schemas import (MAX_WAIT_S, ClassifyResponse, EmbedResponse, JobAccepted, JobStatus, ScoreResponse,
                             TextEmbedResponse, ZeroShotResult)

TASK = "/api/tasks/zero-shot-image-classification"
EMBEDDING_TASKS = "/api/tasks"  # /image-embedding, /text-embedding
Image = bytes | Path


class ServiceError(Exception):
    """An error answer from the service: HTTP status, error code and the detail that says what to change."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def _bytes(image: Image) -> bytes:
    return Path(image).read_bytes() if isinstance(image, Path) else image


def data_uri(image: Image) -> str:
    """An image file or bytes as a base64 data URI (the service sniffs the real format)."""
    mime = (mimetypes.guess_type(str(image))[0] if isinstance(image, Path) else None) or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(_bytes(image)).decode()}"


class VisionClient:
    """Calls /classify, /score, /embed, /embed/text and the job routes; raises ServiceError on 4xx/5xx answers."""

    def __init__(self, url: str = "http://localhost:3000", timeout: float = 120) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout)

    def __enter__(self) -> "VisionClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> dict:
        if response.is_error:
            try:
                body = response.json()
                raise ServiceError(response.status_code, body["error"], body["detail"])
            except (ValueError, KeyError, TypeError):
                raise ServiceError(response.status_code, "http_error", response.text[:500]) from None
        return response.json()

    def classify(self, image: Image, top_k: int = 3) -> ClassifyResponse:
        """Top-k species for a JPEG, PNG or WebP."""
        body = self._check(self.http.post("/classify", content=_bytes(image), params={"top_k": top_k}))
        return ClassifyResponse.model_validate(body)

    def score(self, image: Image) -> ScoreResponse:
        """LAION aesthetic score (0-10)."""
        return ScoreResponse.model_validate(self._check(self.http.post("/score", content=_bytes(image))))

    def embed(self, image: Image, model: str) -> EmbedResponse:
        """The L2-normalised CLIP image embedding (model: a name or alias, e.g. ``open-clip-vit-b32`` or ``b32``)."""
        body = self._check(self.http.post("/embed", content=_bytes(image), params={"model": model}))
        return EmbedResponse.model_validate(body)

    def embed_texts(self, texts: Sequence[str], model: str) -> TextEmbedResponse:
        """L2-normalised CLIP text embeddings, comparable with :meth:`embed`'s of the same model by dot product."""
        body = self._check(self.http.post("/embed/text", json={"model": model, "texts": list(texts)}))
        return TextEmbedResponse.model_validate(body)

    def submit_embedding(self, model: str, images: Sequence[Image] = (), texts: Sequence[str] = ()) -> JobAccepted:
        """Submit one image-embedding job (``images``) or text-embedding job (``texts``); its result has one
        embedding per input. Poll it with :meth:`job` or :meth:`wait`."""
        if bool(images) == bool(texts):
            raise ValueError("give images or texts, not both")
        task, body = (("image-embedding", {"image": [data_uri(i) for i in images]}) if images else
                      ("text-embedding", {"text": list(texts)}))
        return JobAccepted.model_validate(
            self._check(self.http.post(f"{EMBEDDING_TASKS}/{task}/batched/{model}/jobs", json=body)))

    def submit_zero_shot(self, model: str, images: Sequence[Image], classes: Sequence[str],
                         templates: Sequence[str] | None = None) -> JobAccepted:
        """Submit a job: one image gives one probability list, several give a batched job (a list per image)."""
        config = {"templates": list(templates)} if templates else {}
        if len(images) == 1:
            path, body = f"{TASK}/{model}/jobs", {"image": data_uri(images[0])}
        else:
            path, body = f"{TASK}/batched/{model}/jobs", {"image": [data_uri(i) for i in images]}
        body.update(classes=list(classes), config=config)
        return JobAccepted.model_validate(self._check(self.http.post(path, json=body)))

    def job(self, job_id: str, wait: float = 0) -> JobStatus:
        """A job's status (of any task: ids are unique), with its result once complete; ``wait`` (up to 30 s) lets
        the server hold the answer until the job is complete or failed."""
        response = self.http.get(f"{TASK}/jobs/{job_id}", params={"wait": wait} if wait else None,
                                 timeout=self.http.timeout.read + wait if self.http.timeout.read else None)
        return JobStatus.model_validate(self._check(response))

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued job (now ``cancelled``) or a running one (``running`` until its runner call returns)."""
        return JobStatus.model_validate(self._check(self.http.delete(f"{TASK}/jobs/{job_id}")))

    def wait(self, job_id: str, timeout: float = 300) -> JobStatus:
        """The job once complete or failed; the server holds each request up to 30 s, so there is no polling delay."""
        deadline = time.monotonic() + timeout
        while (status := self.job(job_id, wait=min(MAX_WAIT_S, max(0.0, deadline - time.monotonic())))).status in (
                "starting", "running"):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {status.status} after {timeout}s")
        return status

    def zero_shot(self, model: str, image: Image, classes: Sequence[str],
                  templates: Sequence[str] | None = None) -> ZeroShotResult:
        """Probabilities for one image right away, without a job."""
        body = {"model": model, "image": data_uri(image), "classes": list(classes),
                "config": {"templates": list(templates)} if templates else None}
        return ZeroShotResult.model_validate(self._check(self.http.post("/zero_shot", json=body)))

    def models(self) -> list[dict]:
        """The zero-shot models the server runs."""
        return self._check(self.http.get(f"{TASK}/models/details"))["models"]
