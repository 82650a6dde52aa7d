"""Every call ends in a known outcome: done, refused, retryable (nothing was sent), or in doubt (sent, answer
lost: replay the key). Real connections are killed with pg_terminate_backend, the way a crash, a failover or
a pooler would kill them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from conftest import Ledger, Server, refused, snapshot

from pyapp import AsyncClient, Client, errors, migrations


def backend_waiting_on_a_lock(url: str, timeout: float = 10.0) -> int:
    """The pid of the backend of this database that waits for a row lock (the call under test)."""
    dbname = url.rsplit("/", 1)[1]
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("select pid from pg_stat_activity where datname = %s and wait_event_type = 'Lock'",
                               (dbname,)).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.02)
    raise AssertionError("no backend waits for the lock")


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", (pid,))


def locked_account(url: str, account_id: int) -> psycopg.Connection[Any]:
    """A connection holding the row lock of ``account_id`` in an open transaction (calls on it wait)."""
    conn = psycopg.connect(url)
    conn.execute("select 1 from pgwallet.accounts where id = %s for update", (account_id,))
    return conn


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(call())
        except Exception as exc:
            box.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_a_call_killed_after_it_was_sent_is_in_doubt_and_a_replay_settles_it(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100), ledger.funded(0)
    lock = locked_account(db_url, a)
    with Client(db_url, max_size=1) as client:
        thread, box = in_thread(lambda: client.transfer(a, b, 10, "lost-answer"))
        terminate(db_url, backend_waiting_on_a_lock(db_url))
        thread.join()
        lock.rollback()
        lock.close()
        error = box[0]
        assert isinstance(error, errors.OutcomeUnknown), error
        assert (error.code, error.http_status, error.in_doubt, error.retryable) == ("OUTCOME_UNKNOWN", 503, True, True)
        assert error.to_dict()["in_doubt"] is True
        # this one had not committed: the replay runs it, once
        done = client.transfer(a, b, 10, "lost-answer")
        assert not done.replayed and ledger.balance(b) == 10
        assert client.transfer(a, b, 10, "lost-answer").replayed and ledger.balance(b) == 10


def test_a_committed_call_whose_answer_was_lost_replays_its_first_result(ledger: Ledger, db_url: str,
                                                                       pg_server: Server) -> None:
    """A commit waiting for a synchronous standby that never answers has committed locally: killing the
    backend then loses an answer to a call that happened. The replay says so (replayed=True)."""
    a, b = ledger.funded(100), ledger.funded(0)
    admin = pg_server.url("postgres")
    durable = db_url + "?options=" + quote("-c synchronous_commit=on")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("alter system set synchronous_standby_names = 'pgwallet_test_nobody'")
        conn.execute("select pg_reload_conf()")
    try:
        with Client(durable, max_size=1, statement_timeout=None) as client:
            thread, box = in_thread(lambda: client.transfer(a, b, 10, "committed-lost"))
            dbname = db_url.rsplit("/", 1)[1]
            with psycopg.connect(admin, autocommit=True) as conn:
                deadline = time.monotonic() + 10
                while not (row := conn.execute("select pid from pg_stat_activity where datname = %s and "
                                               "wait_event = 'SyncRep'", (dbname,)).fetchone()):
                    assert time.monotonic() < deadline, "the commit never waited for the standby"
                    time.sleep(0.02)
                conn.execute("select pg_terminate_backend(%s)", (row[0],))
            thread.join()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("alter system reset synchronous_standby_names")
            conn.execute("select pg_reload_conf()")
    assert isinstance(box[0], errors.OutcomeUnknown), box[0]
    with Client(db_url, max_size=1) as client:
        replay = client.transfer(a, b, 10, "committed-lost")
    assert replay.replayed and ledger.balance(b) == 10  # it had happened, once


def test_retries_resolve_an_in_doubt_call_by_itself(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100), ledger.funded(0)
    lock = locked_account(db_url, a)
    with Client(db_url, max_size=1, retries=3) as client:
        thread, box = in_thread(lambda: client.transfer(a, b, 10, "self-healing"))
        terminate(db_url, backend_waiting_on_a_lock(db_url))
        backend_waiting_on_a_lock(db_url)  # the retry, on a new connection, waits in its turn
        lock.rollback()
        lock.close()
        thread.join()
    assert not isinstance(box[0], Exception) and box[0].amount == 10
    assert ledger.balance(b) == 10


def test_a_call_without_a_key_is_never_sent_twice(client: Client, db_url: str) -> None:
    """create_staff has no idempotency key: a lost answer stays in doubt even with retries."""
    spec = type(client).create_staff.spec
    assert not spec.repeatable and type(client).transfer.spec.repeatable and type(client).get_card.spec.repeatable


def test_nothing_sent_is_retryable_and_not_in_doubt(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100), ledger.funded(0)
    with Client(db_url, max_size=1, timeout=0.5) as client:
        with client.pool.connection():  # the only connection is busy: the call waits, then gives up
            error = refused(db_url, errors.DatabaseError, lambda: client.transfer(a, b, 1, "busy"))
        assert (error.code, error.in_doubt, error.retryable) == ("DATABASE_ERROR", False, True)
        assert client.transfer(a, b, 1, "busy").amount == 1  # the same call, a moment later


def test_a_closed_client_says_so(db_url: str) -> None:
    client = Client(db_url).open()
    client.close()
    with pytest.raises(errors.DatabaseError) as closed:
        client.get_account(1)
    assert "closed" in (closed.value.detail or "") and not closed.value.in_doubt
    client.open()
    with pytest.raises(errors.AccountNotFound):
        client.get_account(10**12)
    client.close()


def kill_idle_connections(url: str) -> int:
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                           "where datname = %s and state = 'idle' and pid <> pg_backend_pid()", (dbname,)).fetchone()
    assert row is not None
    return int(row[0])


def test_pooled_connections_a_restart_killed_are_replaced_not_failed(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100), ledger.funded(0)
    with Client(db_url, min_size=4, max_size=4) as client:
        client.pool.wait()
        assert kill_idle_connections(db_url) >= 4
        for n in range(8):  # none of them fails: each dead connection is found before a call is sent on it
            client.transfer(a, b, 1, f"after-restart-{n}")

    async def calls() -> None:
        async with AsyncClient(db_url, min_size=4, max_size=4) as aclient:
            await aclient.get_account(a)
            kill_idle_connections(db_url)
            await asyncio.sleep(0.2)
            for n in range(8):
                await aclient.transfer(a, b, 1, f"async-after-restart-{n}")

    asyncio.run(calls())
    assert ledger.balance(b) == 16


def test_one_async_client_serves_one_event_loop_after_another(ledger: Ledger, db_url: str) -> None:
    """A serverless function keeps its client at module level and runs asyncio.run per invocation."""
    a, b = ledger.funded(100), ledger.funded(0)
    aclient = AsyncClient(db_url, max_size=2)
    for n in range(3):
        done = asyncio.run(aclient.transfer(a, b, 1, f"invocation-{n}"))
        assert done.amount == 1
    assert ledger.balance(b) == 3


def test_a_call_stuck_behind_a_lock_times_out_and_changes_nothing(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100), ledger.funded(0)
    lock = locked_account(db_url, a)
    try:
        with Client(db_url, max_size=1, statement_timeout=0.3) as client:
            started = time.monotonic()
            error = refused(db_url, errors.StatementTimeout, lambda: client.transfer(a, b, 1, "stuck"))
            assert time.monotonic() - started < 5 and error.retryable and not error.in_doubt

        async def call() -> None:
            async with AsyncClient(db_url, max_size=1, statement_timeout=0.3) as aclient:
                await aclient.transfer(a, b, 1, "stuck-async")

        refused(db_url, errors.StatementTimeout, lambda: asyncio.run(call()))
    finally:
        lock.rollback()
        lock.close()


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[str]:
    name = "pgwallet_outcomes_empty"
    janitor = pg_server.janitor(name)
    janitor.drop()
    janitor.init()
    try:
        yield pg_server.url(name)
    finally:
        janitor.drop()


@pytest.mark.parametrize(("change", "says", "retryable"), [
    (lambda s: s.url("pgwallet_no_such_database"), "unknown database", False),
    (lambda s: s.url("postgres").replace(f"{s.user}@", "pgwallet_no_such_role@"), "authentication failed", False),
    (lambda s: s.url("postgres").replace(f":{s.port}/", ":1/"), "refused", True),
])
def test_a_connection_failure_says_what_failed_and_where(pg_server: Server, change: Callable[[Server], str],
                                                         says: str, retryable: bool) -> None:
    url = change(pg_server)
    with pytest.raises(errors.DatabaseError) as sync_error:
        Client(url, timeout=3).open(wait=True)
    assert says in (sync_error.value.detail or "") and sync_error.value.retryable is retryable
    host = "127.0.0.1" if "127.0.0.1" in url else pg_server.host
    assert host in (sync_error.value.detail or "")

    async def call() -> None:
        await AsyncClient(url, timeout=3).get_account(1)

    with pytest.raises(errors.DatabaseError) as async_error:
        asyncio.run(call())
    assert says in (async_error.value.detail or "") or retryable


def test_an_unmigrated_database_says_run_migrate(empty_db: str) -> None:
    with Client(empty_db) as client, pytest.raises(errors.NotMigrated) as sync_error:
        client.get_account(1)
    assert sync_error.value.http_status == 503 and "pgwallet migrate" in str(sync_error.value)

    async def call() -> None:
        async with AsyncClient(empty_db) as aclient:
            await aclient.transfer(1, 2, 3, "k")

    with pytest.raises(errors.NotMigrated):
        asyncio.run(call())


def test_migrate_takes_a_multi_host_url(empty_db: str, pg_server: Server) -> None:
    """Clients follow a failover with a multi-host URL; migrate takes the same URL and finds the primary."""
    multi = (f"postgresql://{pg_server.user}@127.0.0.1:1,{pg_server.host}:{pg_server.port}/"
             f"{empty_db.rsplit('/', 1)[1]}?target_session_attrs=read-write")
    assert migrations.migrate(multi)[-1] == migrations.status(empty_db)[-1].id
    assert all(s.applied for s in migrations.status(multi))
    with Client(multi) as client:
        assert client.check_invariants() == []
    assert snapshot(empty_db)


def test_the_statement_timeout_joins_the_urls_own_options(db_url: str) -> None:
    with Client(db_url + "?options=" + quote("-c lock_timeout=1234"), max_size=1) as client, \
            client.pool.connection() as conn:
        settings = conn.execute("select current_setting('lock_timeout') as l, "
                                "current_setting('statement_timeout') as s").fetchone()
    assert settings == {"l": "1234ms", "s": "30s"}

    async def show() -> tuple[str, str]:  # the async client takes the same URL (libpq's own parameters too)
        url = db_url + "?connect_timeout=3&options=" + quote("-c lock_timeout=1234")
        async with AsyncClient(url, max_size=1) as aclient, aclient.pool.acquire() as conn:
            row = await conn.fetchrow("select current_setting('lock_timeout'), current_setting('statement_timeout')")
            return row[0], row[1]

    assert asyncio.run(show()) == ("1234ms", "30s")


def test_the_cli_says_what_failed_and_migrates_through_a_multi_host_url(empty_db: str, pg_server: Server) -> None:
    """As a real process: one line naming the reason and the host, no traceback; migrate takes the URL
    clients use for failover."""
    import subprocess

    from test_cli import PGWALLET

    down = subprocess.run([str(PGWALLET), "--database-url", "postgresql://postgres@127.0.0.1:1/x", "account",
                           "show", "1"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "DATABASE_ERROR" in down.stderr and "127.0.0.1:1" in down.stderr and "refused" in down.stderr
    multi = (f"postgresql://{pg_server.user}@127.0.0.1:1,{pg_server.host}:{pg_server.port}/"
             f"{empty_db.rsplit('/', 1)[1]}?target_session_attrs=read-write")
    migrated = subprocess.run([str(PGWALLET), "--database-url", multi, "migrate"], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    assert migrated.returncode == 0 and migrated.stdout.strip().endswith("procedures installed"), migrated.stderr
    unmigrated = subprocess.run([str(PGWALLET), "--database-url", pg_server.url("postgres"), "account", "show",
                                 "1"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert unmigrated.returncode == 1 and "NOT_MIGRATED" in unmigrated.stderr and "Traceback" not in unmigrated.stderr
