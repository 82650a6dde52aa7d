"""PgBouncer in transaction mode (Debian's pgbouncer; `make test-faults` installs it when missing and root):
both clients, prepared statements off, pass the ledger's storms through it: 200 debits of 1 on 100, 500
transfers each way between two accounts, 50 replays of one key."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from faults.cluster import Bouncer, Cluster
from faults.conftest import make_database
from pyapp import AsyncClient, Client, errors

pytestmark = pytest.mark.faults


@pytest.fixture
def bouncer(base: Path) -> Iterator[tuple[Bouncer, str]]:
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        pytest.skip("pgbouncer is not installed (make test-faults installs it with apt-get when run as root)")
    server = Cluster.init(base, "behind-pgbouncer", {"fsync": "off", "synchronous_commit": "off"})
    server.start()
    try:
        direct = make_database(server)
        bouncer = Bouncer.start(server, "pgwallet", base)
        try:
            yield bouncer, direct
        finally:
            bouncer.stop()
    finally:
        server.stop()


def accounts(direct: str, *amounts: int) -> list[int]:
    with Client(direct, max_size=1) as c:
        world = c.open_system_account("EUR", "system").id
        opened = []
        for n, amount in enumerate(amounts):
            account = c.open_account("EUR", "user_wallet").id
            if amount:
                c.fund_account(world, account, amount, f"fund-{account}-{n}")
            opened.append(account)
    return opened


def balances(direct: str, *ids: int) -> list[int]:
    with Client(direct, max_size=1) as c:
        return [c.get_account(i).balance for i in ids]


def sync_storm(url: str, calls: list[Callable[[Client], Any]]) -> list[Any]:
    client = Client(url, max_size=40, prepared_statements=False, statement_timeout=None)
    start = threading.Barrier(len(calls))

    def one(call: Callable[[Client], Any]) -> Any:
        start.wait()
        try:
            return call(client)
        except errors.PgWalletError as exc:
            return exc

    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(one, calls))
    finally:
        client.close()


def async_storm(url: str, calls: list[Callable[[AsyncClient], Any]]) -> list[Any]:
    async def run() -> list[Any]:
        async with AsyncClient(url, max_size=40, prepared_statements=False, statement_timeout=None) as client:
            async def one(call: Callable[[AsyncClient], Any]) -> Any:
                try:
                    return await call(client)
                except errors.PgWalletError as exc:
                    return exc
            return list(await asyncio.gather(*(one(c) for c in calls)))
    return asyncio.run(run())


STORMS = {"sync": sync_storm, "async": async_storm}


@pytest.mark.parametrize("driver", sorted(STORMS))
def test_storms_through_pgbouncer_in_transaction_mode(bouncer: tuple[Bouncer, str], driver: str) -> None:
    pooler, direct = bouncer
    url, storm = pooler.url("pgwallet"), STORMS[driver]
    # 200 debits of 1 on an account holding 100: exactly 100 go through
    payer, payee = accounts(direct, 100, 0)
    results = storm(url, [lambda c, i=i: c.transfer(payer, payee, 1, f"{driver}-debit-{i}") for i in range(200)])
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, errors.InsufficientFunds) for r in refused), refused[:3]
    assert (len(results) - len(refused), balances(direct, payer, payee)) == (100, [0, 100])
    # 500 each way between two accounts: no deadlock, nothing lost
    a, b = accounts(direct, 10_000, 10_000)
    calls = [lambda c, i=i: c.transfer(a, b, 7, f"{driver}-ab-{i}") for i in range(500)]
    calls += [lambda c, i=i: c.transfer(b, a, 7, f"{driver}-ba-{i}") for i in range(500)]
    results = storm(url, calls)
    assert not [r for r in results if isinstance(r, Exception)]
    assert balances(direct, a, b) == [10_000, 10_000]
    # 50 replays of one key: one transfer, 49 replays of it
    x, y = accounts(direct, 1_000, 0)
    results = storm(url, [lambda c: c.transfer(x, y, 250, f"{driver}-the-one-key") for _ in range(50)])
    assert not [r for r in results if isinstance(r, Exception)]
    assert sum(not r.replayed for r in results) == 1 and len({r.operation_id for r in results}) == 1
    assert balances(direct, x, y) == [750, 250]
    with Client(direct, max_size=1) as c:
        assert c.check_invariants() == []
    print(f"pgbouncer ({driver}): 200 debits on 100 -> 100 accepted; 1000 crossing transfers, none failed; "
          "50 replays of one key -> 1 transfer")
