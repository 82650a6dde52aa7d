"""Investments under real parallel connections, and a real job worker process killed mid-job.

Rate limits never let more calls through than configured, a wallet never pays for more executions than
it can cover, replays never queue a second job, and a killed worker's job is finished by another
worker with the money moved once. The ledger invariants are checked by the ``client`` fixture.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
from invest_stage import Stage
from test_cli import PGWALLET

from pyapp import Client, errors
from pyapp.job_worker import JobWorker


def parallel(url: str, count: int, call: Callable[[Client, int], Any]) -> list[Any]:
    """``call(client, i)`` for i in range(count), each on its own connection, released together."""
    clients = [Client(url, min_size=1, max_size=1).open(wait=True) for _ in range(count)]
    start = threading.Barrier(count)

    def one(i: int) -> Any:
        start.wait()
        try:
            return call(clients[i], i)
        except errors.PgWalletError as exc:
            return exc

    try:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for c in clients:
            c.close()


def test_twenty_concurrent_calls_under_a_limit_of_five(client: Client, db_url: str) -> None:
    stage = Stage(client, db_url)
    wallet, product = stage.wallet(), stage.product.product_id
    owner = stage.owners[wallet]
    results = parallel(db_url, 20, lambda c, i: c.create_investment(wallet, product, 10 + i, f"storm-{i}",
                                                                     acting_user=owner))
    accepted = [r for r in results if not isinstance(r, Exception)]
    limited = [r for r in results if isinstance(r, errors.RateLimited)]
    assert len(accepted) == 5 and len(limited) == 15, results
    assert all(r.retry_after is not None and r.retry_after > 0 for r in limited)
    assert stage.sql("select count(*) from pgwallet.rate_limit_hits where subject = %s", str(wallet)) == [(5,)]
    assert stage.sql("select count(*) from pgwallet.investments where wallet_account_id = %s", wallet) == [(5,)]


def test_executions_a_wallet_cannot_cover_are_refused_each_once(client: Client, db_url: str) -> None:
    """A double-spend storm: 10 executions of 300 queued at once on a wallet of 1,000, run by 3 workers."""
    stage = Stage(client, db_url)
    client.set_rate_limit("create_investment", 100, 3600)
    wallet = stage.wallet(1000)
    investments = [stage.invest(wallet, 300).investment_id for _ in range(10)]
    tickets = parallel(db_url, 10, lambda c, i: c.execute_investment(investments[i], f"exec-{i}",
                                                                     acting_user=stage.owners[wallet]))
    assert all(t.status == "queued" for t in tickets) and len({t.job_id for t in tickets}) == 10
    workers = [JobWorker(db_url, poll_interval=0.05) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        assert sum(pool.map(lambda w: w.run(once=True), workers)) == 10
    statuses = [client.get_investment(i).status for i in investments]
    assert statuses.count("executed") == 3 and statuses.count("failed") == 7
    assert stage.balance(wallet) == 100 and stage.balance(stage.product.account_id) == 900
    failed = [client.get_job(t.job_id) for t in tickets if client.get_job(t.job_id).status == "failed"]
    assert all(j.attempts == 1 and (j.last_error or "").startswith("INSUFFICIENT_FUNDS") for j in failed)


def test_a_replay_storm_queues_one_job(client: Client, db_url: str) -> None:
    stage = Stage(client, db_url)
    wallet = stage.wallet(1000)
    investment = stage.invest(wallet, 250).investment_id
    tickets = parallel(db_url, 20, lambda c, i: c.execute_investment(investment, "same-key",
                                                                     acting_user=stage.owners[wallet]))
    assert not any(isinstance(t, Exception) for t in tickets), tickets
    assert len({t.job_id for t in tickets}) == 1 and sum(not t.replayed for t in tickets) == 1
    product = stage.product.product_id
    created = parallel(db_url, 20, lambda c, i: c.create_investment(wallet, product, 5, "create-same-key",
                                                                     acting_user=stage.owners[wallet]))
    assert len({c.investment_id for c in created}) == 1 and sum(not c.replayed for c in created) == 1
    # one hit per accepted call: the first create, the execution, the storm's one create
    assert stage.sql("select action, count(*) from pgwallet.rate_limit_hits where subject = %s group by 1 "
                     "order by 1", str(wallet)) == [("create_investment", 2), ("execute_investment", 1)]
    stage.work()
    assert stage.balance(wallet) == 750


def test_a_worker_killed_mid_job_is_taken_over_and_money_moves_once(client: Client, db_url: str) -> None:
    """A real ``pgwallet jobs work`` process runs an execution whose body waits on a lock this test holds;
    the process is killed with SIGKILL; its lease expires; a second worker finishes the job."""
    stage = Stage(client, db_url)
    wallet = stage.wallet(1000)
    ticket = stage.execute(stage.invest(wallet, 400).investment_id)
    env = {**os.environ, "DATABASE_URL": db_url}
    blocker = psycopg.connect(db_url)
    blocker.execute("select 1 from pgwallet.accounts where id = %s for update", (wallet,))  # the body waits here
    watcher = psycopg.connect(db_url, autocommit=True)
    proc = subprocess.Popen([str(PGWALLET), "jobs", "work", "--lease", "2", "--poll", "0.1"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    name = f"pgwallet job worker {proc.pid}"

    def backends(waiting: bool = False) -> int:
        row = watcher.execute("select count(*) from pg_stat_activity where application_name = %s"
                              + (" and wait_event_type = 'Lock'" if waiting else ""), (name,)).fetchone()
        return int(row[0]) if row else 0

    deadline = time.monotonic() + 30
    while not backends(waiting=True) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backends(waiting=True) == 1  # the body is running, blocked inside the transfer
    running = client.get_job(ticket.job_id)
    assert (running.status, running.attempts) == ("running", 1) and running.locked_by
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err
    # the server notices the dead client within a second (client_connection_check_interval) and rolls
    # its transaction back, even while it waits on a lock
    deadline = time.monotonic() + 10
    while backends() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends() == 0
    blocker.rollback()
    blocker.close()
    assert stage.balance(wallet) == 1000 and client.get_job(ticket.job_id).status == "running"  # leased, not done
    assert running.locked_until is not None
    while datetime.now(UTC) <= running.locked_until:
        time.sleep(0.1)  # the dead worker's lease runs out (same machine, same clock)
    watcher.close()
    second = subprocess.run([str(PGWALLET), "jobs", "work", "--once"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    assert "worker stopped: 1 jobs run" in second.stdout
    done = client.get_job(ticket.job_id)
    assert (done.status, done.attempts) == ("succeeded", 2)
    assert done.last_error == f"lease expired (worker {running.locked_by})"
    assert stage.balance(wallet) == 600 and stage.balance(stage.product.account_id) == 400
    assert stage.sql("select count(*) from pgwallet.transfers where kind = 'investment'") == [(1,)]
