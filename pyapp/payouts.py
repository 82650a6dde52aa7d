"""Specs of batched payouts (``sql/procedures/40_payouts.sql``): a challenge's pool paid to its winners.

``create_payout_job`` returns at once; workers (``pyapp.payout_worker``, ``pgwallet payouts work``)
call ``process_payout_batch`` until the job is done. Amounts are whole minor units; shares are whole
numbers (weights), split exactly by largest remainder in the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pyapp.procedures import AMOUNT, ID, KEY, LIMIT, Rule, one_of, procedure
from pyapp.results import Result

MAX_WINNERS = 1_000_000
#: the database reads ids, shares and amounts as at most 18 digits
JSON_WHOLE_MAX = 10**18 - 1
JOB_STATUSES = ("queued", "running", "paused", "completed", "completed_with_errors", "failed", "cancelled")
FINISHED = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})


_SHAPE = "each winner is {account_id, share} or {account_id, amount}"


def _winners(value: Any) -> str | None:
    """A list of ``{"account_id", "share"}`` or of ``{"account_id", "amount"}``, one form, each account once.

    Written for speed (a 100,000-winner list is checked in tens of milliseconds): plain loops, exact
    ``type(...) is int`` (which also refuses bools)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) > MAX_WINNERS:
        return f"must be a list of at most {MAX_WINNERS:,} winners"
    if not value:
        return None
    first = value[0]
    if not isinstance(first, Mapping):
        return _SHAPE
    form = "share" if "share" in first else "amount"
    keys = {"account_id", form}
    lo, top = (0 if form == "share" else 1), JSON_WHOLE_MAX
    accounts: list[int] = []
    for winner in value:
        if not isinstance(winner, Mapping) or winner.keys() != keys:
            return _SHAPE + ", all of one form"
        account, part = winner["account_id"], winner[form]
        if type(account) is not int or not 1 <= account <= top:
            return "each account_id is a positive whole number (at most 18 digits)"
        if type(part) is not int or not lo <= part <= top:
            return ("each share is a whole number >= 0" if form == "share"
                    else "each amount is a positive whole number of minor units") + " (at most 18 digits)"
        accounts.append(account)
    if len(set(accounts)) != len(accounts):
        return "must name each account once"
    return None


def _whole(lo: int, hi: int, what: str) -> Rule:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number ({what})"
        return None if lo <= value <= hi else f"must be {what}"

    return Rule("integer", check)


def _challenge(value: Any) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        return "must be a string of 1 to 200 characters"
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


WINNERS = Rule("jsonb", _winners)
CHALLENGE = Rule("text", _challenge)
FEE_BPS = _whole(0, 10_000, "0 to 10000 basis points")
PAYOUT_BATCH = _whole(1, 10_000, "1 to 10000")

JobId = Annotated[int, ID]


@dataclass(frozen=True)
class PayoutJob(Result):
    """A job's status and counters. ``processed_winners`` = paid + failed; ``progress_percent`` also
    counts cancelled entries as done."""

    job_id: int
    challenge_id: str
    status: str
    pool_account_id: int
    currency: str
    total_pool: int
    platform_fee_bps: int
    platform_fee: int
    payout_total: int
    total_winners: int
    processed_winners: int
    paid_winners: int
    failed_winners: int
    cancelled_winners: int
    pending_winners: int
    paid_amount: int
    progress_percent: float
    replayed: bool
    fee_account_id: int | None = None
    hold_id: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    paused_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """No worker will touch the job again unless it is retried."""
        return self.status in FINISHED


@dataclass(frozen=True)
class PayoutBatch(PayoutJob):
    """The job after one batch, with what this batch did, and the two counters a worker paces itself
    by (``operations_seen - batches_seen`` grows with every money movement that is not a batch)."""

    processed: int = 0
    paid: int = 0
    failed: int = 0
    operations_seen: int = 0
    batches_seen: int = 0


@dataclass(frozen=True)
class PayoutRetry(PayoutJob):
    retried: int = 0


@dataclass(frozen=True)
class PayoutCancel(PayoutJob):
    cancelled: int = 0


@procedure("pgwallet.create_payout_job")
def create_payout_job(challenge_id: Annotated[str, CHALLENGE], pool_account_id: Annotated[int, ID],
                      total_pool: Annotated[int, AMOUNT], platform_fee_bps: Annotated[int, FEE_BPS],
                      winners: Annotated[Sequence[Mapping[str, int]], WINNERS],
                      idempotency_key: Annotated[str, KEY],
                      fee_account_id: Annotated[int | None, ID] = None) -> PayoutJob:
    """Create the payout job of a challenge and return at once; workers pay the winners.

    ``winners``: ``[{"account_id": 7, "share": 3}, ...]`` (split exactly, largest remainder) or
    ``[{"account_id": 7, "amount": 1250}, ...]`` (adding up to the pool minus the fee). The fee
    (``platform_fee_bps`` of ``total_pool``, rounded down) goes to ``fee_account_id``, or stays in the
    pool when it is omitted. A draw (no winners, or every share 0) completes at once and moves nothing.
    """
    raise NotImplementedError


@procedure("pgwallet.process_payout_batch")
def process_payout_batch(job_id: JobId, batch_size: Annotated[int, PAYOUT_BATCH] = 500) -> PayoutBatch:
    """Pay up to ``batch_size`` pending entries of the job in one transaction (workers call this)."""
    raise NotImplementedError


@procedure("pgwallet.next_payout_job", shape="scalar")
def next_payout_job() -> int | None:
    """The id of a job with work left (preferring one no batch is paying right now), or None."""
    raise NotImplementedError


@procedure("pgwallet.retry_failed_payout_entries")
def retry_failed_payout_entries(job_id: JobId) -> PayoutRetry:
    """Make the job's failed entries pending again (e.g. after unfreezing the winners)."""
    raise NotImplementedError


@procedure("pgwallet.cancel_payout_job")
def cancel_payout_job(job_id: JobId) -> PayoutCancel:
    """Cancel the job's pending and failed entries and release their part of the pool's hold."""
    raise NotImplementedError


@procedure("pgwallet.pause_payout_job")
def pause_payout_job(job_id: JobId) -> PayoutJob:
    """Stop paying the job (after the batches in flight) until ``resume_payout_job``; nothing is released."""
    raise NotImplementedError


@procedure("pgwallet.resume_payout_job")
def resume_payout_job(job_id: JobId) -> PayoutJob:
    """Put a paused job back to work and wake the workers."""
    raise NotImplementedError


@procedure("pgwallet.get_payout_job_status")
def get_payout_job_status(job_id: JobId) -> PayoutJob:
    """The job's status, counters and progress."""
    raise NotImplementedError


@dataclass(frozen=True)
class FailedEntry(Result):
    """A winner the job could not pay, and why (fix it, then ``retry_failed_payout_entries``)."""

    entry_id: int
    job_id: int
    account_id: int
    amount: int
    error: str | None
    attempts: int
    processed_at: datetime | None = None


def _jobs(rows: Any) -> list[PayoutJob]:
    return [PayoutJob.from_mapping(r) for r in rows]


def _failed(rows: Any) -> list[FailedEntry]:
    return [FailedEntry.from_mapping(r) for r in rows]


@procedure("pgwallet.list_payout_jobs", decode=_jobs)
def list_payout_jobs(status: Annotated[str | None, one_of(*JOB_STATUSES)] = None,
                     limit: Annotated[int, LIMIT] = 50,
                     before_job_id: Annotated[int | None, ID] = None) -> list[PayoutJob]:
    """Payout jobs, newest first (of one status when given); pass the last ``job_id`` seen for the next page."""
    raise NotImplementedError


@procedure("pgwallet.list_failed_payout_entries", decode=_failed)
def list_failed_payout_entries(job_id: JobId, limit: Annotated[int, LIMIT] = 100,
                               after_entry_id: Annotated[int | None, ID] = None) -> list[FailedEntry]:
    """The job's failed entries with their errors, in entry order."""
    raise NotImplementedError


class PayoutProcedures:
    """Batched payouts, as methods of both clients (see ``pyapp.api``)."""

    create_payout_job = create_payout_job
    process_payout_batch = process_payout_batch
    next_payout_job = next_payout_job
    retry_failed_payout_entries = retry_failed_payout_entries
    cancel_payout_job = cancel_payout_job
    pause_payout_job = pause_payout_job
    resume_payout_job = resume_payout_job
    get_payout_job_status = get_payout_job_status
    list_payout_jobs = list_payout_jobs
    list_failed_payout_entries = list_failed_payout_entries
