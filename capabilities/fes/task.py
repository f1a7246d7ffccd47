"""What a task served through the FES job routes provides (:class:`Task`)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from jobs import Job


class Task(Protocol):
    """One feature-extraction-server task (``zero-shot-image-classification``, ``image-embedding``,
    ``text-embedding``) over the catalog models that run it."""

    name: str  # the FES task name, kebab case

    def models(self) -> list[str]:
        """The models that run this task."""

    def check_model(self, model: str) -> str:
        """The model's canonical name (snake case accepted), or a 404 ServiceError that lists the models."""

    def request(self, batched: bool) -> type[BaseModel]:
        """The JSON body of a submission (one input, or a list)."""

    async def inputs(self, model: str, body: BaseModel, batched: bool) -> tuple[np.ndarray, list[str], list[str]]:
        """Validate a submission and prepare what the job stores: (inputs, classes, templates)."""

    async def execute(self, job: Job, inputs: np.ndarray) -> Any:
        """Run a job on its stored inputs; the JSON result to store."""

    def view(self, result: Any, batched: bool, per_image: bool) -> BaseModel | list[BaseModel]:
        """A stored result as the status routes answer it (``per_image``: one item per input)."""

    async def now(self, model: str, body: BaseModel) -> BaseModel:
        """One input's answer without a job (FES's legacy route); ``model`` is canonical."""

    async def ready(self) -> None:
        """Return once the task's runners answer."""

    async def runner_state(self, model: str) -> str:
        """``running`` when the model's runner answers, else ``starting``."""

    async def details(self) -> dict[str, Any]:
        """This service's own listing of the task's models (store tags, variants, caches)."""
