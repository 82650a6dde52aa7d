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
