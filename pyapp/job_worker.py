"""The job worker: leases due jobs from ``pgwallet.jobs`` one at a time and runs each with its kind's handler.

A handler is ``handler(client, job, worker_name)``. The built-in ones call the job's SQL body
(``investment_execution`` -> ``pgwallet.run_investment_execution``, ``dividend`` -> ``pgwallet.run_dividend``):
one transaction that does the work AND finishes the job, so they return the finished :class:`Job`.
Any other handler (Python code) returns a result mapping (or None) and the worker completes the job
with it. A handler that raises fails the attempt (``fail_job`` with the error's text): the job comes
back after the backoff, or ends failed once its attempts are used up. A lost lease (another worker took
the job over, or it was cancelled) is logged and left alone.

Like the payout worker: woken by ``LISTEN pgwallet_jobs`` (``enqueue_job`` and ``retry_job`` notify),
polling every ``poll_interval`` seconds anyway, rescuing expired leases once per poll interval; ``stop()``
(SIGTERM / Ctrl-C) lets the current job finish; ``once=True`` returns when no job is due. A worker
killed mid-job leaves its job leased: the lease expires, another worker's rescue puts it back in the
queue and runs it; a job body run twice moves money once. Its connection checks every second that the
client is still there (``client_connection_check_interval``), so a killed worker's transaction is
rolled back (and its locks released) at once instead of when the server next writes to it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from psycopg.conninfo import make_conninfo

from pyapp.client import Client
from pyapp.errors import DatabaseError, InvalidStateTransition, PgWalletError, invalid
from pyapp.jobs import Job
from pyapp.settings import plain_url
from pyapp.worker import ListeningWorker

CHANNEL = "pgwallet_jobs"
log = logging.getLogger("pgwallet.jobs")

Handler = Callable[[Client, Job, str], Any]

#: The kinds whose body is SQL: one transaction does the work and finishes the job.
HANDLERS: dict[str, Handler] = {
    "investment_execution": lambda client, job, worker: client.run_investment_execution(job.job_id, worker),
    "dividend": lambda client, job, worker: client.run_dividend(job.job_id, worker),
}


class JobWorker(ListeningWorker):
    """``JobWorker(url).run()``: runs due jobs of ``kinds`` (default: every kind it has a handler for).

    ``handlers`` adds or replaces handlers by kind; ``on_job`` sees each job once its attempt is over
    (succeeded, queued again, failed or deferred).
    """

    channel = CHANNEL
    unit = "job"

    def __init__(self, url: str, *, kinds: Iterable[str] | None = None, handlers: Mapping[str, Handler] | None = None,
                 poll_interval: float = 2.0, lease_seconds: int = 30, name: str | None = None,
                 on_job: Callable[[Job], None] | None = None) -> None:
        #: seen in pg_stat_activity.application_name (DBAs see which process holds which connection)
        self.application_name = f"pgwallet job worker {os.getpid()}"
        super().__init__(make_conninfo(plain_url(url), application_name=self.application_name,
                                       options="-c client_connection_check_interval=1000"), poll_interval, log)
        self.handlers = {**HANDLERS, **(handlers or {})}
        self.kinds = sorted(set(kinds) if kinds is not None else set(self.handlers))
        missing = [k for k in self.kinds if k not in self.handlers]
        if not self.kinds or missing:
            raise invalid("kinds", f"no handler for {', '.join(missing)}" if missing else "must name a kind")
        #: the lease holder's name: unique per worker, even several in one process
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.on_job = on_job
        self.client = Client(self.url, min_size=1, max_size=1)

    def run(self, *, once: bool = False) -> int:
        """Run jobs until stopped (or, with ``once``, until none is due); return how many attempts ran."""
        ran = 0
        next_rescue = 0.0
        try:
            self.client.open(wait=True)
            while not self.stopping:
                try:
                    if time.monotonic() >= next_rescue:  # once per poll interval, not once per job
                        self.client.rescue_expired_jobs()
                        next_rescue = time.monotonic() + self.poll_interval
                    jobs = self.client.fetch_jobs(self.name, self.kinds, 1, self.lease_seconds)
                except DatabaseError as exc:  # connection lost, server restarting
                    log.warning("database unavailable (%s): retrying in %.1f s", exc, self.poll_interval)
                    self._stop.wait(self.poll_interval)
                    continue
                if not jobs:
                    if once:
                        break
                    self._wait_for_work()
                    continue
                for job in jobs:
                    done = self.run_job(job)
                    ran += 1
                    if done is not None and self.on_job is not None:
                        self.on_job(done)
        finally:
            self._close_listener()
            self.client.close()
        return ran

    def run_job(self, job: Job) -> Job | None:
        """One attempt of a leased job; returns the job after it (None when the lease was lost)."""
        try:
            outcome = self.handlers[job.kind](self.client, job, self.name)
            if isinstance(outcome, Job):
                return outcome
            return self.client.complete_job(job.job_id, self.name, outcome)
        except InvalidStateTransition as exc:
            log.warning("job %s: lease lost (%s)", job.job_id, exc)
            return None
        except Exception as exc:  # the attempt failed: the job comes back after the backoff, or fails
            error = str(exc) if isinstance(exc, PgWalletError) else f"{type(exc).__name__}: {exc}"
            log.warning("job %s (%s) attempt %s failed: %s", job.job_id, job.kind, job.attempts, error)
            try:
                return self.client.fail_job(job.job_id, self.name, error[:10_000] or type(exc).__name__)
            except PgWalletError as lost:  # the lease was lost meanwhile, or the database is away
                log.warning("job %s: could not record the failure (%s)", job.job_id, lost)
                return None
