"""vitrivr's feature-extraction-server (FES) API over this service's tasks: durable jobs and their REST routes.

- :mod:`~capabilities.fes.task`: :class:`Task`, what each task provides (zero-shot classification in
  :mod:`capabilities.zero_shot`, image and text embeddings in :mod:`capabilities.retrieval`);
- :mod:`~capabilities.fes.jobs`: :class:`Jobs`, requests of every task as durable jobs (:mod:`jobs`);
- :mod:`~capabilities.fes.rest`: their REST routes in FES's layout, mounted under ``/api``.
"""

from capabilities.fes.jobs import Jobs
from capabilities.fes.rest import bind, rest
from capabilities.fes.task import Task

__all__ = ["Jobs", "Task", "bind", "rest"]
