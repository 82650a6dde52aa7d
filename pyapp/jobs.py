"""Specs of the durable job queue (``sql/procedures/50_jobs.sql``): enqueue, lease, finish, retry, purge.

A job is queued once per ``(kind, idempotency_key)``. Workers (``pyapp.job_worker``, ``pgwallet jobs
work``) lease due jobs with ``fetch_jobs``, run them, and finish each with ``complete_job`` or
``fail_job``; only the lease holder may finish a job. Failed attempts come back after an exponential
backoff (2, 4, 8 s by default) until ``max_attempts``; expired leases are rescued by
``rescue_expired_jobs``. See ``docs/investments.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pyapp.procedures import BATCH, ID, KEY, OBJECT, Rule, _text, one_of, procedure
from pyapp.results import Result

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
KIND_PATTERN = r"[a-z][a-z0-9_.:-]{0,62}"


def _kind(value: Any) -> str | None:
    import re

    if not isinstance(value, str) or not re.fullmatch(KIND_PATTERN, value):
        return "must be 1 to 63 characters: a-z first, then a-z, 0-9, _ . : -"
    return None


def _kinds(value: Any) -> str | None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not 1 <= len(value) <= 100:
        return "must be a list of 1 to 100 kinds, or None for every kind"
    return next((f"each kind {broken}" for broken in map(_kind, value) if broken), None)


def _whole(lo: int, hi: int) -> Rule:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number ({lo} to {hi})"
        return None if lo <= value <= hi else f"must be {lo} to {hi}"

    return Rule("integer", check)


def _moment(value: Any) -> str | None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        return "must be a datetime with a time zone"
    return None


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


KIND = Rule("text", _kind)
KINDS = Rule("text[]", _kinds)
WORKER = Rule("text", _text(1, 200))
ERROR_TEXT = Rule("text", _text(1, 10_000))
STATUS = one_of(*JOB_STATUSES)
ATTEMPTS = _whole(1, 100)
FETCH_LIMIT = _whole(1, 1000)
RESCUE_LIMIT = _whole(1, 10_000)
LEASE = _whole(1, 86_400)
MOMENT = Rule("timestamptz", _moment)
FINAL = Rule("boolean", _flag)

JobId = Annotated[int, ID]
Worker = Annotated[str, WORKER]


@dataclass(frozen=True)
class Job(Result):
    """A job: its kind and payload, its status and attempts, its lease and its last error."""

    job_id: int
    kind: str
    payload: dict[str, Any]
    idempotency_key: str
    status: str
    attempts: int
    max_attempts: int
    run_after: datetime
    replayed: bool = False
    deferred: bool = False
    last_error: str | None = None
    result: Any = None
    locked_by: str | None = None
    locked_until: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled: no worker runs it again unless it is retried."""
        return self.status in FINISHED


def jobs_from(value: Any) -> list[Job]:
    return [Job.from_mapping(j) for j in value]


@procedure("pgwallet.enqueue_job")
def enqueue_job(kind: Annotated[str, KIND], payload: Annotated[Mapping[str, Any], OBJECT],
                idempotency_key: Annotated[str, KEY], max_attempts: Annotated[int | None, ATTEMPTS] = None,
                run_after: Annotated[datetime | None, MOMENT] = None) -> Job:
    """Queue a job once per (kind, key): the same key and payload return the first job (replayed)."""
    raise NotImplementedError


@procedure("pgwallet.fetch_jobs", decode=jobs_from)
def fetch_jobs(worker: Worker, kinds: Annotated[Sequence[str] | None, KINDS] = None,
               limit: Annotated[int, FETCH_LIMIT] = 10, lease_seconds: Annotated[int, LEASE] = 30) -> list[Job]:
    """Lease up to ``limit`` due jobs (of ``kinds``, or of every kind) to ``worker`` for ``lease_seconds``."""
    raise NotImplementedError


@procedure("pgwallet.complete_job")
def complete_job(job_id: JobId, worker: Worker, result: Annotated[Mapping[str, Any] | None, OBJECT] = None) -> Job:
    """The lease holder marks its job succeeded (INVALID_STATE_TRANSITION when the lease was lost)."""
    raise NotImplementedError


@procedure("pgwallet.fail_job")
def fail_job(job_id: JobId, worker: Worker, error: Annotated[str, ERROR_TEXT],
             final: Annotated[bool | None, FINAL] = None) -> Job:
    """The lease holder reports a failed attempt: queued again after the backoff, or failed when the
    attempts are used up (or ``final``)."""
    raise NotImplementedError


@procedure("pgwallet.rescue_expired_jobs", shape="scalar")
def rescue_expired_jobs(limit: Annotated[int, RESCUE_LIMIT] = 100) -> int:
    """Running jobs whose lease expired go back to the queue (or fail, attempts used up); how many."""
    raise NotImplementedError


@procedure("pgwallet.retry_job")
def retry_job(job_id: JobId) -> Job:
    """Queue a failed or cancelled job again, with a fresh set of attempts."""
    raise NotImplementedError


@procedure("pgwallet.cancel_job")
def cancel_job(job_id: JobId) -> Job:
    """Cancel a queued, running or failed job (a succeeded one is refused)."""
    raise NotImplementedError


@procedure("pgwallet.get_job")
def get_job(job_id: JobId) -> Job:
    """One job."""
    raise NotImplementedError


@procedure("pgwallet.list_jobs", decode=jobs_from)
def list_jobs(status: Annotated[str | None, STATUS] = None, kind: Annotated[str | None, KIND] = None,
              limit: Annotated[int, FETCH_LIMIT] = 50, before_id: Annotated[int | None, ID] = None) -> list[Job]:
    """Jobs, newest first (``before_id``: the next page)."""
    raise NotImplementedError


@procedure("pgwallet.purge_jobs", shape="scalar")
def purge_jobs(batch_size: Annotated[int, BATCH] = 1000) -> int:
    """Delete up to ``batch_size`` finished jobs past their retention; call until it returns 0."""
    raise NotImplementedError


class JobProcedures:
    """The job queue, as methods of both clients (see ``pyapp.api``)."""

    enqueue_job = enqueue_job
    fetch_jobs = fetch_jobs
    complete_job = complete_job
    fail_job = fail_job
    rescue_expired_jobs = rescue_expired_jobs
    retry_job = retry_job
    cancel_job = cancel_job
    get_job = get_job
    list_jobs = list_jobs
    purge_jobs = purge_jobs
