"""Job metrics on BentoML's ``/metrics`` (its Prometheus registry, in multiprocess mode: one file per worker).

Created on first use, inside the worker process, after BentoML has pointed ``PROMETHEUS_MULTIPROC_DIR`` at its
folder (created earlier, they would be invisible to ``/metrics``).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

from jobs.model import FINAL, RUNNING, STARTING, Job

STATUSES = (STARTING, RUNNING, *FINAL)
# Queue waits and run times: from a few ms (an idle GPU) to minutes (a long queue).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@functools.cache
def _metrics() -> SimpleNamespace:
    import prometheus_client as prom

    return SimpleNamespace(
        jobs=prom.Gauge("vision_jobs", "Jobs in the job store by status (retained finished jobs included), read "
                        "from the store at most every 5 s", ["status"], multiprocess_mode="livemostrecent"),
        queue_wait=prom.Histogram("vision_job_queue_wait_seconds", "From submission to the first attempt's start",
                                  ["task", "model"], buckets=BUCKETS),
        run_time=prom.Histogram("vision_job_run_seconds", "Inference time of one attempt", ["task", "model"],
                                buckets=BUCKETS),
        attempts=prom.Counter("vision_job_attempts", "Attempts started", ["task", "model"]),
        retries=prom.Counter("vision_job_retries", "Attempts put back in the queue (reason: error or overload)",
                             ["task", "model", "reason"]),
        finished=prom.Counter("vision_job_finished", "Jobs this worker finished, by outcome",
                              ["task", "model", "status"]),
        cancellations=prom.Counter("vision_job_cancellations", "Cancellations accepted (state: queued or running)",
                                   ["state"]),
    )


def set_counts(counts: dict[str, int]) -> None:
    for status in STATUSES:
        _metrics().jobs.labels(status).set(counts.get(status, 0))


def started(job: Job) -> None:
    m = _metrics()
    m.attempts.labels(job.task, job.model).inc()
    if job.attempts == 1:  # both times from the store's clock: the claim (or leased submit) set updated_at
        m.queue_wait.labels(job.task, job.model).observe(max(0.0, job.updated_at - job.created_at))


def ran(job: Job, seconds: float) -> None:
    _metrics().run_time.labels(job.task, job.model).observe(seconds)


def retried(job: Job, reason: str) -> None:
    _metrics().retries.labels(job.task, job.model, reason).inc()


def finished(job: Job, status: str) -> None:
    _metrics().finished.labels(job.task, job.model, status).inc()


def cancelled(state: str) -> None:
    _metrics().cancellations.labels(state).inc()
