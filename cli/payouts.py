"""Payout commands: create a challenge's payout job from a CSV, watch it, retry, cancel, run workers.

``pgwallet payouts create --challenge C --pool ACCOUNT --fee-bps N --winners FILE.csv`` returns at once;
``pgwallet payouts work`` (one or more, anywhere) pays the job in batches. Progress is a bar per job on
a terminal and plain log lines otherwise (pipes, CI, systemd).
"""

from __future__ import annotations

import csv
import io
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, BinaryIO, TextIO

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, stamped, worker_logging, yes_option
from pyapp.client import Client
from pyapp.errors import InvalidRequest, invalid
from pyapp.money import format_minor, to_minor
from pyapp.pacing import DEFAULT_RATIO
from pyapp.payout_worker import PayoutWorker
from pyapp.payouts import JOB_STATUSES, PayoutBatch, PayoutJob

Say = Callable[[str], None]


# -- reading the winners -----------------------------------------------------------------------------


_ACCOUNT = re.compile(r"[1-9][0-9]{0,17}")
_SHARE = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?")
MAX_WINNERS = 1_000_000


def read_winners(data: bytes, exponent: int) -> list[dict[str, int]]:
    """Winners from a CSV file as spreadsheets save it: UTF-8 (with or without a BOM), any line ends, ``,``
    ``;`` or tab between fields (read from the header), quoted fields. The header names ``account_id`` (or
    ``account``) and either ``share`` (whole or decimal numbers, scaled to whole weights) or ``amount``
    (decimals in the currency, converted exactly). Every refusal names the line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid("winners", f"the file is not UTF-8 text (byte {exc.start}): save it as CSV UTF-8") from None
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise invalid("winners", "the file is empty: it needs a header (account_id,share or account_id,amount)")
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
        account_col = next((header.index(f) for f in ("account_id", "account") if f in header), None)
        forms = [f for f in ("share", "amount") if f in header]
        if account_col is None or len(forms) != 1:
            raise invalid("winners", "line 1: the header names account_id and one of share or amount"
                          + (" (not both: they would disagree)" if len(forms) == 2 else ""))
        form, value_col = forms[0], header.index(forms[0])
        rows: list[tuple[int, str]] = []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise invalid("winners", f"line {line}: {len(row)} fields, the header has {len(header)}")
            account, value = row[account_col].strip(), row[value_col].strip()
            if not _ACCOUNT.fullmatch(account):
                raise invalid("winners", f"line {line}: account_id must be a positive whole number, "
                                         f"not {account!r:.30}")
            if form == "share" and not _SHARE.fullmatch(value):
                raise invalid("winners", f"line {line}: share must be a number such as 3 or 0.25, not {value!r:.30}")
            rows.append((int(account), value))
            if len(rows) > MAX_WINNERS:
                raise invalid("winners", f"line {line}: at most {MAX_WINNERS:,} winners in one job")
    except csv.Error as exc:
        raise invalid("winners", f"line {reader.line_num}: {exc}") from None
    if not rows:
        raise invalid("winners", "the file has a header but no winner: nothing to pay (the challenge id stays free)")
    if form == "amount":
        winners = []
        for n, (account_id, value) in enumerate(rows):
            try:
                winners.append({"account_id": account_id, "amount": to_minor(value, exponent, field="winners")})
            except InvalidRequest as exc:
                raise invalid("winners", f"row {n + 1} (account {account_id}): amount {exc.detail}") from None
        return winners
    shares = [Decimal(v) for _, v in rows]
    places = max((-int(s.as_tuple().exponent) for s in shares), default=0)
    scale = Decimal(10) ** max(places, 0)
    return [{"account_id": a, "share": int(s * scale)} for (a, _), s in zip(rows, shares, strict=True)]


# -- showing progress -------------------------------------------------------------------------------


def describe_job(job: PayoutJob, exponent: int) -> str:
    def money(value: int) -> str:
        return format_minor(value, exponent)

    text = (f"payout job {job.job_id} (challenge {job.challenge_id}) {job.status}: "
            f"{job.paid_winners:,}/{job.total_winners:,} paid, {job.failed_winners:,} failed, "
            f"{job.cancelled_winners:,} cancelled ({job.progress_percent:g}%); pool {money(job.total_pool)} "
            f"{job.currency} from account {job.pool_account_id}, fee {money(job.platform_fee)}, "
            f"paid {money(job.paid_amount)} of {money(job.payout_total)}")
    if job.error:
        text += f"; error: {job.error}"
    return text + (" (replayed)" if job.replayed else "")


def show_job(app: AppContext, job: PayoutJob, as_json: bool, headline: str | None = None) -> None:
    """The job as JSON, or described in the pool's currency (after a headline, when given)."""
    text = describe_job(job, app.client.get_account(job.pool_account_id).exponent)
    emit(job, as_json, f"{headline}\n{text}" if headline else text)


class Progress:
    """One progress bar per job on a terminal; otherwise a plain line per batch (at most one a second
    per job, and always the last one)."""

    def __init__(self, out: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.interactive = self.out.isatty() if interactive is None else interactive
        self.bars: dict[int, Any] = {}
        self.done: dict[int, int] = {}
        self.last_line: dict[int, float] = {}
        self.lock = threading.Lock()

    def update(self, job: PayoutJob) -> None:
        with self.lock:
            finished = job.total_winners - job.pending_winners
            if self.interactive:
                bar = self.bars.get(job.job_id)
                if bar is None:
                    bar = click.progressbar(length=max(job.total_winners, 1), label=f"job {job.job_id}",
                                            file=self.out, show_pos=True, show_percent=True)
                    bar.__enter__()
                    self.bars[job.job_id] = bar
                bar.update(finished - self.done.get(job.job_id, 0))
                self.done[job.job_id] = finished
                if job.finished:
                    bar.__exit__(None, None, None)
                    click.echo(f"job {job.job_id} {job.status}", file=self.out)
                    del self.bars[job.job_id]
                return
            now = time.monotonic()
            if job.finished or now - self.last_line.get(job.job_id, 0.0) >= 1.0:
                self.last_line[job.job_id] = now
                click.echo(stamped(f"job {job.job_id}: {job.status}, {job.paid_winners}/{job.total_winners} paid, "
                                   f"{job.failed_winners} failed, {job.progress_percent:g}%"), file=self.out)

    def close(self) -> None:
        with self.lock:
            for bar in self.bars.values():
                bar.__exit__(None, None, None)
            self.bars.clear()


# -- commands ---------------------------------------------------------------------------------------


@click.group()
def payouts() -> None:
    """Batched payouts of challenge results: create, status, retry, cancel, work."""


@payouts.command("create")
@click.option("--challenge", "challenge_id", required=True, help="The challenge (paid once).")
@click.option("--pool", "pool_account_id", required=True, type=int, help="The prize pool's account.")
@click.option("--fee-bps", "fee_bps", default=0, show_default=True, type=int,
              help="Platform fee in basis points of the pool (250 = 2.5%).")
@click.option("--winners", "winners_file", required=True, type=click.File("rb"),
              help="CSV with a header: account_id,share or account_id,amount ('-' for stdin); a spreadsheet's "
                   "CSV (BOM, CRLF, ; or tab) is fine.")
@click.option("--total", default=None, help="The pool to pay out (a decimal). Default: the pool's available balance.")
@click.option("--fee-account", "fee_account_id", default=None, type=int,
              help="Where the fee goes. Default: it stays in the pool account.")
@click.option("--key", "idempotency_key", default=None, help="Idempotency key; default: a new one (printed).")
@yes_option
@json_option
@pass_app
def payouts_create(app: AppContext, challenge_id: str, pool_account_id: int, fee_bps: int, winners_file: BinaryIO,
                   total: str | None, fee_account_id: int | None, idempotency_key: str | None, yes: bool,
                   as_json: bool) -> None:
    """Create the payout job of a challenge; it returns at once (workers pay it)."""
    pool = app.client.get_account(pool_account_id)
    winners = read_winners(winners_file.read(64 * MAX_WINNERS), pool.exponent)
    if total is None and pool.available <= 0:
        raise click.UsageError(f"pool account {pool_account_id} has {format_minor(pool.available, pool.exponent)} "
                               f"{pool.currency} available: fund it first, or give --total")
    total_pool = to_minor(total, pool.exponent, field="total") if total is not None else pool.available
    confirm(f"Pay {format_minor(total_pool, pool.exponent)} {pool.currency} from account {pool_account_id} "
            f"to {len(winners):,} winners of challenge {challenge_id}?", yes)
    key = idempotency_key or str(uuid.uuid4())
    job = app.client.create_payout_job(challenge_id, pool_account_id, total_pool, fee_bps, winners, key,
                                       fee_account_id=fee_account_id)
    emit({"job": job, "idempotency_key": key}, as_json, f"{describe_job(job, pool.exponent)} (key {key})")


@payouts.command("list")
@click.option("--status", default=None, type=click.Choice(JOB_STATUSES))
@click.option("--limit", default=50, show_default=True, type=int)
@click.option("--before", "before_job_id", default=None, type=int, help="The last job id seen, for the next page.")
@json_option
@pass_app
def payouts_list(app: AppContext, status: str | None, limit: int, before_job_id: int | None, as_json: bool) -> None:
    """Payout jobs, newest first (of one --status)."""
    found = app.client.list_payout_jobs(status, limit, before_job_id)
    exponents: dict[str, int] = {}
    for job in found:
        if job.currency not in exponents:
            exponents[job.currency] = app.client.get_account(job.pool_account_id).exponent
    emit(found, as_json, "\n".join(describe_job(j, exponents[j.currency]) for j in found) or "no payout job")


@payouts.command("failed")
@click.argument("job_id", type=int)
@click.option("--limit", default=100, show_default=True, type=int)
@json_option
@pass_app
def payouts_failed(app: AppContext, job_id: int, limit: int, as_json: bool) -> None:
    """The failed entries of JOB_ID and why (fix them, then `pgwallet payouts retry JOB_ID`)."""
    found = app.client.list_failed_payout_entries(job_id, limit)
    emit(found, as_json, "\n".join(f"entry {f.entry_id}: account {f.account_id}, {f.error} ({f.attempts} attempts)"
                                   for f in found) or f"job {job_id} has no failed entry")


@payouts.command("status")
@click.argument("job_id", type=int)
@click.option("--watch", is_flag=True, help="Follow the job with a live progress bar until it is finished.")
@click.option("--interval", default=0.5, show_default=True, type=float, help="Seconds between looks (--watch).")
@json_option
@pass_app
def payouts_status(app: AppContext, job_id: int, watch: bool, interval: float, as_json: bool) -> None:
    """Status, counters and progress of JOB_ID."""
    job = app.client.get_payout_job_status(job_id)
    if watch and not as_json:
        progress = Progress()
        try:
            while True:
                progress.update(job)
                if job.finished:
                    break
                time.sleep(interval)
                job = app.client.get_payout_job_status(job_id)
        finally:
            progress.close()
    elif watch:
        while not job.finished:
            time.sleep(interval)
            job = app.client.get_payout_job_status(job_id)
    show_job(app, job, as_json)


@payouts.command("retry")
@click.argument("job_id", type=int)
@json_option
@pass_app
def payouts_retry(app: AppContext, job_id: int, as_json: bool) -> None:
    """Make the failed entries of JOB_ID pending again (after unfreezing the winners, say)."""
    job = app.client.retry_failed_payout_entries(job_id)
    show_job(app, job, as_json, f"{job.retried:,} entries to pay again")


@payouts.command("pause")
@click.argument("job_id", type=int)
@json_option
@pass_app
def payouts_pause(app: AppContext, job_id: int, as_json: bool) -> None:
    """Pause JOB_ID: workers stop paying it (after the batches in flight); `payouts resume` goes on."""
    job = app.client.pause_payout_job(job_id)
    show_job(app, job, as_json)


@payouts.command("resume")
@click.argument("job_id", type=int)
@json_option
@pass_app
def payouts_resume(app: AppContext, job_id: int, as_json: bool) -> None:
    """Resume a paused JOB_ID: the workers pay its pending entries again."""
    job = app.client.resume_payout_job(job_id)
    show_job(app, job, as_json)


@payouts.command("cancel")
@click.argument("job_id", type=int)
@yes_option
@json_option
@pass_app
def payouts_cancel(app: AppContext, job_id: int, yes: bool, as_json: bool) -> None:
    """Cancel JOB_ID: its pending and failed entries are cancelled, their money released in the pool."""
    confirm(f"Cancel payout job {job_id}?", yes)
    job = app.client.cancel_payout_job(job_id)
    show_job(app, job, as_json, f"{job.cancelled:,} entries cancelled")


@payouts.command("work")
@click.option("--batch-size", default=500, show_default=True, type=int, help="Entries per batch (1 to 10000).")
@click.option("--once", is_flag=True, help="Stop when no job has work left, instead of waiting for new ones.")
@click.option("--poll", "poll_interval", default=2.0, show_default=True, type=float,
              help="Seconds between looks for new jobs when no notification comes.")
@click.option("--give-way", default=DEFAULT_RATIO, show_default=True, type=float,
              help="While other money moves, rest this many times as long as each batch took (0: never rest).")
@json_option
@pass_app
def payouts_work(app: AppContext, batch_size: int, once: bool, poll_interval: float, give_way: float,
                 as_json: bool) -> None:
    """Pay payout jobs in batches until stopped (SIGTERM or Ctrl-C: after the current batch)."""
    if not 1 <= batch_size <= 10_000:
        raise invalid("batch_size", "must be 1 to 10000")
    if not 0 <= give_way <= 100:
        raise invalid("give_way", "must be 0 to 100")
    worker_logging()
    progress = Progress(sys.stderr if as_json else sys.stdout)

    def on_batch(batch: PayoutBatch) -> None:
        progress.update(batch)

    worker = PayoutWorker(app.url, batch_size=batch_size, poll_interval=poll_interval, on_batch=on_batch,
                          give_way=give_way)
    restore = worker.install_signal_handlers()
    started = time.monotonic()
    try:
        processed = worker.run(once=once)
    finally:
        restore()
        progress.close()
    seconds = time.monotonic() - started
    emit({"processed": processed, "seconds": round(seconds, 3)}, as_json,
         f"worker stopped: {processed:,} entries processed in {seconds:.1f} s")


# -- the demo ---------------------------------------------------------------------------------------


def demo_challenge(c: Client, url: str, run: str, say: Say, winners: int = 10_000, workers: int = 2) -> None:
    """A challenge with ``winners`` winners paid by ``workers`` workers, progress shown as it goes."""
    import psycopg

    say(f"== batched payouts: a challenge with {winners:,} winners")
    world = c.open_system_account("EUR", "system", name=f"challenge funding {run}")
    pool = c.open_account("EUR", "pool", name=f"prize pool {run}")
    fees = c.open_account("EUR", "fees", name=f"challenge fees {run}")
    c.fund_account(world.id, pool.id, 50_000_00, f"{run}-fund-pool")
    with psycopg.connect(url, autocommit=True) as conn:  # one statement opens every winner's wallet
        ids = [int(r[0]) for r in conn.execute(
            "select (pgwallet.open_account('EUR', 'user_wallet', %s)->>'id')::bigint "
            "from generate_series(1, %s)", (f"winner {run}", winners))]
    frozen = ids[7]
    c.set_account_status(frozen, "frozen")
    started = time.perf_counter()
    job = c.create_payout_job(f"challenge-{run}", pool.id, 50_000_00, 250,
                              [{"account_id": a, "share": 1 + i % 3} for i, a in enumerate(ids)], f"{run}-payout",
                              fee_account_id=fees.id)
    say(f"-- job created in {(time.perf_counter() - started) * 1000:.0f} ms: " + describe_job(job, 2))
    say(f"-- {workers} workers pay it in batches of 500 (one winner is frozen: it fails alone)")
    step = [0]

    def show(batch: PayoutBatch) -> None:
        tenth = int(batch.progress_percent // 10)
        if tenth > step[0] or batch.finished:
            step[0] = tenth
            say(f"   {batch.progress_percent:5.1f}%  {batch.paid_winners:,} paid, {batch.failed_winners} failed")

    started = time.perf_counter()
    pool_workers = [PayoutWorker(url, batch_size=500, on_batch=show, job_id=job.job_id) for _ in range(workers)]
    threads = [threading.Thread(target=w.run, kwargs={"once": True}) for w in pool_workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    done = c.get_payout_job_status(job.job_id)
    say(f"-- paid in {seconds:.2f} s ({done.processed_winners / seconds:,.0f} entries/s): " + describe_job(done, 2))
    say("-- unfreeze the winner, retry: the last entry is paid")
    c.set_account_status(frozen, "active")
    c.retry_failed_payout_entries(job.job_id)
    PayoutWorker(url, job_id=job.job_id).run()
    say("   " + describe_job(c.get_payout_job_status(job.job_id), 2))
    account = c.get_account(pool.id)
    say(f"   pool: balance {format_minor(account.balance, 2)}, held {format_minor(account.held, 2)}; "
        f"fees {format_minor(c.get_account(fees.id).balance, 2)}")


COMMANDS = (payouts,)
