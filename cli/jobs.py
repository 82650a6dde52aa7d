"""Job commands: run workers, list, show, retry, cancel, purge (``pgwallet jobs ...``).

``pgwallet jobs work`` runs the due jobs of the kinds it handles (investment executions and dividends)
until SIGTERM or Ctrl-C, which let the current job finish; ``--once`` stops when no job is due.
"""

from __future__ import annotations

import sys
import time

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, stamped, worker_logging, yes_option
from pyapp.errors import invalid
from pyapp.job_worker import HANDLERS, JobWorker
from pyapp.jobs import JOB_STATUSES, Job


def describe_job(job: Job) -> str:
    text = (f"job {job.job_id} ({job.kind}, key {job.idempotency_key}) {job.status}: attempt "
            f"{job.attempts}/{job.max_attempts}")
    if job.status == "queued":
        text += f", runs after {job.run_after.isoformat(timespec='seconds')}"
    if job.status == "running":
        text += f", leased by {job.locked_by} until {job.locked_until.isoformat(timespec='seconds')}"  # type: ignore[union-attr]
    if job.last_error:
        text += f"; last error: {job.last_error}"
    return text + (" (replayed)" if job.replayed else "")


@click.group()
def jobs() -> None:
    """Durable jobs (investment executions, dividends): work, list, show, retry, cancel, purge."""


@jobs.command("work")
@click.option("--kinds", default=None, metavar="KIND,...",
              help=f"Only these kinds (default: every kind with a handler: {', '.join(sorted(HANDLERS))}).")
@click.option("--once", is_flag=True, help="Stop when no job is due, instead of waiting for new ones.")
@click.option("--poll", "poll_interval", default=2.0, show_default=True, type=float,
              help="Seconds between looks for due jobs when no notification comes.")
@click.option("--lease", "lease_seconds", default=30, show_default=True, type=int,
              help="Seconds a job stays this worker's before another worker may rescue it.")
@json_option
@pass_app
def jobs_work(app: AppContext, kinds: str | None, once: bool, poll_interval: float, lease_seconds: int,
              as_json: bool) -> None:
    """Run due jobs until stopped (SIGTERM or Ctrl-C: after the current job)."""
    if not 1 <= lease_seconds <= 86_400:
        raise invalid("lease_seconds", "must be 1 to 86400")
    chosen = [k.strip() for k in kinds.split(",") if k.strip()] if kinds is not None else None
    out = sys.stderr if as_json else sys.stdout
    worker_logging()

    def on_job(job: Job) -> None:
        click.echo(stamped(describe_job(job)), file=out)

    worker = JobWorker(app.url, kinds=chosen, poll_interval=poll_interval, lease_seconds=lease_seconds,
                       on_job=on_job)
    restore = worker.install_signal_handlers()
    started = time.monotonic()
    try:
        ran = worker.run(once=once)
    finally:
        restore()
    seconds = time.monotonic() - started
    emit({"ran": ran, "seconds": round(seconds, 3), "worker": worker.name}, as_json,
         f"worker stopped: {ran:,} jobs run in {seconds:.1f} s")


@jobs.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), default=None, help="Only jobs in this status.")
@click.option("--kind", default=None, help="Only jobs of this kind.")
@click.option("--limit", default=50, show_default=True, type=int, help="How many (1 to 1000).")
@click.option("--before", "before_id", default=None, type=int, help="Jobs older than this job id (next page).")
@json_option
@pass_app
def jobs_list(app: AppContext, status: str | None, kind: str | None, limit: int, before_id: int | None,
              as_json: bool) -> None:
    """Jobs, newest first."""
    found = app.client.list_jobs(status=status, kind=kind, limit=limit, before_id=before_id)
    emit(found, as_json, "\n".join(describe_job(j) for j in found) or "no job")


@jobs.command("show")
@click.argument("job_id", type=int)
@json_option
@pass_app
def jobs_show(app: AppContext, job_id: int, as_json: bool) -> None:
    """One job: status, attempts, lease, last error, result."""
    job = app.client.get_job(job_id)
    emit(job, as_json, describe_job(job) + (f"\nresult: {job.result}" if job.result is not None else ""))


@jobs.command("retry")
@click.argument("job_id", type=int)
@json_option
@pass_app
def jobs_retry(app: AppContext, job_id: int, as_json: bool) -> None:
    """Queue a failed or cancelled job again, with a fresh set of attempts."""
    emit(job := app.client.retry_job(job_id), as_json, describe_job(job))


@jobs.command("cancel")
@click.argument("job_id", type=int)
@yes_option
@json_option
@pass_app
def jobs_cancel(app: AppContext, job_id: int, yes: bool, as_json: bool) -> None:
    """Cancel a queued, running or failed job."""
    confirm(f"Cancel job {job_id}?", yes)
    emit(job := app.client.cancel_job(job_id), as_json, describe_job(job))


@jobs.command("purge")
@click.option("--batch-size", default=1000, show_default=True, type=int, help="Rows per transaction.")
@json_option
@pass_app
def jobs_purge(app: AppContext, batch_size: int, as_json: bool) -> None:
    """Delete finished jobs past their retention (24 h succeeded, 7 days failed) and old rate-limit hits."""
    purged = {"jobs": 0, "rate_limit_hits": 0}
    while n := app.client.purge_jobs(batch_size):
        purged["jobs"] += n
    while n := app.client.purge_rate_limit_hits(batch_size):
        purged["rate_limit_hits"] += n
    emit(purged, as_json, f"purged {purged['jobs']:,} jobs and {purged['rate_limit_hits']:,} rate-limit hits")


COMMANDS = (jobs,)
