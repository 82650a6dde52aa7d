"""Payouts under real parallel connections and real worker processes killed with SIGKILL.

Every winner must be paid exactly once, the pool's balance and hold must be exact, and the ledger
invariants (checked by the ``client`` fixture's teardown, payout invariants included) must hold.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from conftest import Ledger
from test_concurrency import storm

from pyapp import AsyncClient, Client, errors
from pyapp.payout_worker import PayoutWorker

PGWALLET = Path(sys.executable).parent / "pgwallet"


def open_winners(url: str, count: int) -> list[int]:
    """``count`` wallets opened in one statement (through the public function)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute(
            "select (pgwallet.open_account('EUR', 'user_wallet')->>'id')::bigint from generate_series(1, %s)",
            (count,))]


def paid_exactly_once(url: str, job_id: int) -> None:
    """Every entry completed with exactly one transfer of its amount to its winner; balances match."""
    with psycopg.connect(url) as conn:
        bad = conn.execute("""
            select e.id from pgwallet.payout_entries e
            left join pgwallet.accounts a on a.id = e.account_id
            left join (select t.credit_account_id, count(*) as n from pgwallet.transfers t
                       group by t.credit_account_id) t on t.credit_account_id = e.account_id
            where e.job_id = %s and (e.status <> 'completed' or a.balance <> e.amount or coalesce(t.n, 0) <> 1)
            """, (job_id,)).fetchall()
    assert bad == []


def test_many_workers_on_one_job_pay_each_winner_once(ledger: Ledger, db_url: str) -> None:
    """Four workers on one job while other transfers hit the winners and the pool: no deadlock, exact."""
    c = ledger.client
    pool = ledger.funded(1_000_000, kind="pool")
    people = open_winners(db_url, 3000)
    job = c.create_payout_job("many-workers", pool, 300_000, 0, [{"account_id": p, "share": 1} for p in people], "k")
    workers = [PayoutWorker(db_url, batch_size=100, job_id=job.job_id) for _ in range(4)]
    stop = threading.Event()
    moved = Counter[str]()

    def traffic() -> None:
        """Bar-order-like transfers touching winners (both ways) and the pool, in both lock orders."""
        with Client(db_url, max_size=1) as other:
            i = 0
            while not stop.is_set():
                w = people[random.randrange(len(people))]
                try:
                    other.transfer(pool, w, 1, f"t-{threading.get_ident()}-{i}")
                    other.transfer(w, pool, 1, f"b-{threading.get_ident()}-{i}")
                    moved["ok"] += 1
                except errors.InsufficientFunds:
                    moved["refused"] += 1
                i += 1

    with ThreadPoolExecutor(7) as pool_exec:
        noise = [pool_exec.submit(traffic) for _ in range(3)]
        counts = list(pool_exec.map(lambda w: w.run(), workers))
        stop.set()
        for f in noise:
            f.result()
    done = c.get_payout_job_status(job.job_id)
    assert sum(counts) == 3000 and done.status == "completed" and done.paid_winners == 3000
    assert moved["ok"] > 0
    assert all(n > 0 for n in counts) or len([n for n in counts if n]) >= 2
    with psycopg.connect(db_url) as conn:
        balances = dict(conn.execute("select id, balance from pgwallet.accounts where id = any(%s)",
                                     (people,)).fetchall())
    assert sum(balances.values()) == 300_000 and set(balances.values()) == {100}
    account = c.get_account(pool)
    assert (account.balance, account.held) == (1_000_000 - 300_000, 0)


def batch_waiting_for_the_pool(watch: psycopg.Connection[Any], not_pid: int) -> int:
    """The pid of the backend running a payout batch that is looking for the pool account to be free
    (pay_hold_parts sleeps a millisecond between two SKIP LOCKED looks), other than ``not_pid``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = watch.execute("""
            select pid from pg_stat_activity
            where pid not in (%s, pg_backend_pid()) and wait_event = 'PgSleep'
              and query like '%%process_payout_batch%%'""", (not_pid,)).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.005)
    raise AssertionError("no payout batch came to look for the pool")


def test_batches_of_one_job_overlap_and_queue_only_for_the_debit_side(ledger: Ledger, db_url: str) -> None:
    """A batch left open holds the pool and the hold; a second batch of the same job still takes other
    entries, locks their winners and writes its transfers and entries, and only then waits, for the
    pool alone (without queueing for it). Both commit: 200 winners, each paid once."""
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    people = open_winners(db_url, 400)
    job = c.create_payout_job("overlap", pool, 4000, 0, [{"account_id": p, "share": 1} for p in people], "k")
    second: list[dict[str, Any]] = []

    def run_second() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("set pgwallet.hold_account_lock_wait = '60s'")  # while the test looks at it
            row = conn.execute("select pgwallet.process_payout_batch(%s, 100)", (job.job_id,)).fetchone()
            second.append(row[0] if row else {})

    with psycopg.connect(db_url) as first, psycopg.connect(db_url, autocommit=True) as watch:
        row = first.execute("select pgwallet.process_payout_batch(%s, 100)", (job.job_id,)).fetchone()
        assert row and row[0]["processed"] == 100  # and the transaction stays open
        first_pid = first.info.backend_pid
        thread = threading.Thread(target=run_second)
        thread.start()
        pid = batch_waiting_for_the_pool(watch, first_pid)
        written = {r[0] for r in watch.execute("""
            select c.relname from pg_locks l join pg_class c on c.oid = l.relation
            where l.pid = %s and l.granted and l.mode = 'RowExclusiveLock'""", (pid,))}
        blockers = watch.execute("select pg_blocking_pids(%s)", (pid,)).fetchone()  # no lock wait at all
        first.commit()
        thread.join()
    assert {"transfers", "entries", "payout_entries"} <= written
    assert blockers == ([],)
    assert second and second[0]["processed"] == 100
    status = c.get_payout_job_status(job.job_id)
    assert (status.paid_winners, status.processed_winners) == (200, 200)
    with psycopg.connect(db_url) as conn:
        paid = conn.execute("""select count(*), count(distinct t.credit_account_id), sum(t.amount)
                               from pgwallet.transfers t where t.hold_id = %s""", (job.hold_id,)).fetchone()
    assert paid == (200, 200, 2000)
    assert c.get_account(pool).balance == 100_000 - 2000


def test_a_pool_locked_by_a_transfer_waiting_for_a_winner_rolls_the_batch_back(ledger: Ledger, db_url: str) -> None:
    """The one lock cycle the batch order allows: a transaction holds the pool and wants a winner that a
    batch has locked, while the batch waits for the pool. The batch gives up after its bounded wait (a
    retryable SerializationFailure, nothing paid), the transfer goes through, and a worker then pays
    every winner once."""
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    people = open_winners(db_url, 50)
    job = c.create_payout_job("cycle", pool, 500, 0, [{"account_id": p, "share": 1} for p in people], "k")
    outcome: list[BaseException | None] = []

    def run_batch() -> None:
        with Client(db_url, max_size=1) as batch_client:
            try:
                batch_client.process_payout_batch(job.job_id, 50)
                outcome.append(None)
            except BaseException as exc:  # the test inspects it
                outcome.append(exc)

    with psycopg.connect(db_url) as holder, psycopg.connect(db_url, autocommit=True) as watch:
        holder.execute("select 1 from pgwallet.accounts where id = %s for update", (pool,))
        thread = threading.Thread(target=run_batch)
        thread.start()
        batch_waiting_for_the_pool(watch, holder.info.backend_pid)
        # now the holder wants a winner the batch has locked: a cycle, broken by the batch's bound
        holder.execute("select pgwallet.transfer(%s, %s, 7, 'pool-to-winner')", (pool, people[0]))
        holder.commit()
        thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], errors.SerializationFailure)
    assert outcome[0].retryable and "stayed locked" in str(outcome[0])  # the bound, not the deadlock detector
    status = c.get_payout_job_status(job.job_id)
    assert (status.paid_winners, status.processed_winners) == (0, 0)
    assert c.get_account(people[0]).balance == 7
    assert PayoutWorker(db_url, batch_size=20, job_id=job.job_id).run() == 50
    paid = c.get_payout_job_status(job.job_id)
    assert (paid.status, paid.paid_winners) == ("completed", 50)
    assert c.get_account(people[0]).balance == 17 and c.get_account(people[1]).balance == 10
    account = c.get_account(pool)
    assert (account.balance, account.held) == (100_000 - 500 - 7, 0)


def test_a_worker_gives_way_while_other_money_moves(ledger: Ledger, db_url: str) -> None:
    """Alone, a worker pays batch after batch without a pause; while transfers flow, it sees them
    (through the operation counter) and rests between batches. Both jobs are paid exactly once."""
    c = ledger.client
    pool = ledger.funded(1_000_000, kind="pool")
    people = open_winners(db_url, 1000)
    quiet = c.create_payout_job("quiet", pool, 5000, 0, [{"account_id": p, "share": 1} for p in people[:500]], "q")
    alone = PayoutWorker(db_url, batch_size=5, job_id=quiet.job_id)
    alone.pacing.window = 0.02  # many readings even in a short job
    assert alone.run() == 500
    assert not alone.pacing.busy and alone.pacing.rested == 0
    busy = c.create_payout_job("busy", pool, 5000, 0, [{"account_id": p, "share": 1} for p in people[500:]], "b")
    payer, payee = ledger.funded(10**9), ledger.funded(0)
    stop = threading.Event()
    moved = Counter[str]()

    def traffic() -> None:
        with Client(db_url, max_size=1) as other:
            while not stop.is_set():
                other.transfer(payer, payee, 1, f"traffic-{moved['n']}")
                moved["n"] += 1

    worker = PayoutWorker(db_url, batch_size=5, job_id=busy.job_id)
    worker.pacing.window = 0.02
    flow = threading.Thread(target=traffic)
    flow.start()
    try:
        while moved["n"] < 50 and flow.is_alive():  # the transfers flow before the first batch
            time.sleep(0.005)
        assert worker.run() == 500
    finally:
        stop.set()
        flow.join()
    assert worker.pacing.busy and worker.pacing.rested > 0
    for job in (quiet, busy):
        assert c.get_payout_job_status(job.job_id).status == "completed"
        paid_exactly_once(db_url, job.job_id)
    assert c.get_account(payee).balance == moved["n"]


def test_workers_spread_over_several_jobs(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    people = open_winners(db_url, 600)
    jobs = [c.create_payout_job(f"job-{i}", pool, 6000, 0,
                                [{"account_id": p, "share": 1} for p in people[i * 200:(i + 1) * 200]], f"k{i}")
            for i in range(3)]
    workers = [PayoutWorker(db_url, batch_size=50) for _ in range(3)]
    with ThreadPoolExecutor(3) as ex:
        assert sum(ex.map(lambda w: w.run(once=True), workers)) == 600
    for job in jobs:
        assert c.get_payout_job_status(job.job_id).status == "completed"
        paid_exactly_once(db_url, job.job_id)
    assert c.get_account(pool).balance == 100_000 - 18_000


def test_creation_storm_one_job_per_challenge_and_per_key(ledger: Ledger, db_url: str) -> None:
    pool = ledger.funded(1_000_000, kind="pool")
    people = open_winners(db_url, 50)
    listed = [{"account_id": p, "share": 1} for p in people]
    calls: list[Callable[[AsyncClient], Awaitable[Any]]] = [
        lambda ac, i=i: ac.create_payout_job("contested", pool, 5000, 0, listed, f"key-{i % 10}") for i in range(40)]
    results = asyncio.run(storm(db_url, 40, calls))
    jobs = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, errors.DuplicateRequest) and r.field == "challenge_id" for r in refused)
    assert {j.job_id for j in jobs} == {jobs[0].job_id} and sum(not j.replayed for j in jobs) == 1
    assert len(jobs) == 4  # the winning key's 4 calls: one created, three replayed
    assert ledger.client.get_account(pool).held == 5000


def test_cancel_racing_workers_is_exact(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    people = open_winners(db_url, 2000)
    job = c.create_payout_job("cancel-race", pool, 20_000, 0, [{"account_id": p, "share": 1} for p in people], "k")
    workers = [PayoutWorker(db_url, batch_size=20, job_id=job.job_id) for _ in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    while c.get_payout_job_status(job.job_id).paid_winners < 100:
        time.sleep(0.005)
    cancelled = c.cancel_payout_job(job.job_id)
    for t in threads:
        t.join()
    final = c.get_payout_job_status(job.job_id)
    assert final.status == "cancelled" and final.paid_winners + final.cancelled_winners == 2000
    assert 100 <= final.paid_winners < 2000 and cancelled.cancelled == final.cancelled_winners
    with psycopg.connect(db_url) as conn:
        paid = conn.execute("select coalesce(sum(balance), 0) from pgwallet.accounts where id = any(%s)",
                            (people,)).fetchone()
    assert paid == (final.paid_winners * 10,)
    account = c.get_account(pool)
    assert (account.balance, account.held) == (100_000 - final.paid_winners * 10, 0)
    hold = c.get_hold(job.hold_id or 0)
    assert (hold.status, hold.captured_amount, hold.released_amount) == (
        "captured", final.paid_winners * 10, 20_000 - final.paid_winners * 10)


def test_pause_racing_workers_stops_them_and_resume_pays_each_winner_once(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    people = open_winners(db_url, 2000)
    job = c.create_payout_job("pause-race", pool, 20_000, 0, [{"account_id": p, "share": 1} for p in people], "k")
    workers = [PayoutWorker(db_url, batch_size=20, job_id=job.job_id) for _ in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    while c.get_payout_job_status(job.job_id).paid_winners < 100:
        time.sleep(0.005)
    paused = c.pause_payout_job(job.job_id)  # waits for the batches in flight; later ones pay nothing
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a worker kept paying a paused job"
    assert paused.status == "paused" and 100 <= paused.paid_winners < 2000
    def late_batch(_: int) -> int:
        with Client(db_url, max_size=1) as late_client:
            return late_client.process_payout_batch(job.job_id, 50).processed

    with ThreadPoolExecutor(4) as pool_:
        late = list(pool_.map(late_batch, range(8)))
    assert late == [0] * 8
    still = c.get_payout_job_status(job.job_id)
    assert (still.status, still.paid_winners, still.paid_amount) == ("paused", paused.paid_winners,
                                                                     paused.paid_amount)
    with psycopg.connect(db_url) as conn:
        paid = conn.execute("select coalesce(sum(balance), 0) from pgwallet.accounts where id = any(%s)",
                            (people,)).fetchone()
    assert paid == (paused.paid_amount,)
    c.resume_payout_job(job.job_id)
    workers = [PayoutWorker(db_url, batch_size=50, job_id=job.job_id) for _ in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = c.get_payout_job_status(job.job_id)
    assert (final.status, final.paid_winners, final.paid_amount) == ("completed", 2000, 20_000)
    paid_exactly_once(db_url, job.job_id)


def backend_waiting_for_a_lock(watch: psycopg.Connection[Any], pid: int) -> list[int]:
    """Waits until backend ``pid`` queues in the lock manager; returns the backends it waits for."""
    for _ in range(2000):
        row = watch.execute("select wait_event_type, pg_blocking_pids(pid) from pg_stat_activity where pid = %s",
                            (pid,)).fetchone()
        if row and row[0] == "Lock" and row[1]:
            return list(row[1])
        time.sleep(0.005)
    raise AssertionError(f"backend {pid} never queued for a lock")


def test_cancel_is_not_starved_by_batches_that_keep_coming(ledger: Ledger, db_url: str) -> None:
    """Batches of one job share the job; cancel needs it alone. While cancel waits for the batch in
    flight, a batch that arrives later queues behind the cancel instead of overtaking it (else two
    workers taking turns would hold the cancel off until the job is paid). That later batch then finds
    the job cancelled and pays nobody."""
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    people = open_winners(db_url, 400)
    job = c.create_payout_job("fair-cancel", pool, 4000, 0, [{"account_id": p, "share": 1} for p in people], "k")
    results: dict[str, Any] = {}

    def run(name: str, conn: psycopg.Connection[Any], sql: str) -> None:
        row = conn.execute(sql, (job.job_id,)).fetchone()
        results[name] = row[0] if row else None

    # first is closed first, should an assertion fail: its rollback lets the threads' calls end
    with psycopg.connect(db_url, autocommit=True) as watch, psycopg.connect(db_url, autocommit=True) as canceller, \
            psycopg.connect(db_url, autocommit=True) as later, psycopg.connect(db_url) as first:
        row = first.execute("select pgwallet.process_payout_batch(%s, 100)", (job.job_id,)).fetchone()
        assert row and row[0]["processed"] == 100  # and the transaction stays open
        cancel = threading.Thread(target=run, args=("cancel", canceller, "select pgwallet.cancel_payout_job(%s)"))
        cancel.start()
        assert backend_waiting_for_a_lock(watch, canceller.info.backend_pid) == [first.info.backend_pid]
        batch = threading.Thread(target=run, args=("later", later, "select pgwallet.process_payout_batch(%s, 100)"))
        batch.start()
        assert canceller.info.backend_pid in backend_waiting_for_a_lock(watch, later.info.backend_pid)
        first.commit()
        cancel.join()
        batch.join()
    assert results["cancel"]["cancelled"] == 300
    assert (results["later"]["processed"], results["later"]["status"]) == (0, "cancelled")
    status = c.get_payout_job_status(job.job_id)
    assert (status.status, status.paid_winners, status.cancelled_winners) == ("cancelled", 100, 300)
    account = c.get_account(pool)
    assert (account.balance, account.held) == (100_000 - 1000, 0)


def test_killing_workers_mid_batch_twenty_times_loses_nothing(ledger: Ledger, db_url: str) -> None:
    """Real ``pgwallet payouts work`` processes, each killed with SIGKILL while it pays; a last one
    finishes the job: every winner paid exactly once, the pool's hold and balance exact."""
    c = ledger.client
    total_winners = 20_000
    pool = ledger.funded(10_000_000, kind="pool")
    people = open_winners(db_url, total_winners)
    job = c.create_payout_job("kill-9", pool, 2_000_000, 0, [{"account_id": p, "share": 1} for p in people], "k")
    env = {**os.environ, "DATABASE_URL": db_url}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(PGWALLET), "payouts", "work", "--batch-size", "100", "--poll", "0.2"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    watcher = psycopg.connect(db_url, autocommit=True)

    def connected(proc: subprocess.Popen[bytes]) -> None:
        """Wait until the worker process has its database connection (its signal handlers are set)."""
        deadline = time.monotonic() + 30
        while not watcher.execute("select 1 from pg_stat_activity where application_name = %s",
                                  (f"pgwallet payout worker {proc.pid}",)).fetchone() and time.monotonic() < deadline:
            time.sleep(0.005)

    kills = mid_job = 0
    rng = random.Random(5)
    spare = spawn()  # the next worker starts up while the current one pays: the kills come faster
    while kills < 20:
        proc = spare
        connected(proc)
        before, deadline = c.get_payout_job_status(job.job_id).paid_winners, time.monotonic() + 20
        while c.get_payout_job_status(job.job_id).paid_winners == before and time.monotonic() < deadline:
            time.sleep(0.002)
        spare = spawn()
        time.sleep(rng.uniform(0, 0.01))  # batches run back to back: this lands inside one
        status = c.get_payout_job_status(job.job_id)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
        mid_job += status.pending_winners > 0
    connected(spare)
    watcher.close()
    spare.send_signal(signal.SIGTERM)  # the last one stops cleanly after its batch
    _, err = spare.communicate(timeout=30)
    assert spare.returncode == 0, err
    assert mid_job >= 15  # most kills hit a job with work left
    finisher = subprocess.run([str(PGWALLET), "payouts", "work", "--once", "--json"], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
    assert finisher.returncode == 0, finisher.stderr
    done = c.get_payout_job_status(job.job_id)
    assert (done.status, done.paid_winners, done.failed_winners) == ("completed", total_winners, 0)
    paid_exactly_once(db_url, job.job_id)
    account = c.get_account(pool)
    assert (account.balance, account.held) == (10_000_000 - 2_000_000, 0)
    hold = c.get_hold(job.hold_id or 0)
    assert (hold.status, hold.captured_amount) == ("captured", 2_000_000)
