"""Storms over real parallel connections: double spends, replays, opposite transfers, settle races.

Every test ends with the ledger invariants checked (the ``client`` fixture's teardown).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import pytest
from conftest import Ledger

from pyapp import AsyncClient, Client, errors

T = TypeVar("T")


async def storm(url: str, connections: int, calls: list[Callable[[AsyncClient], Awaitable[T]]]) -> list[Any]:
    """Run ``calls`` at once over ``connections`` open connections; return results or errors."""
    async with AsyncClient(url, min_size=connections, max_size=connections) as client:
        async def run(call: Callable[[AsyncClient], Awaitable[T]]) -> Any:
            try:
                return await call(client)
            except errors.PgWalletError as exc:
                return exc

        return await asyncio.gather(*(run(c) for c in calls))


def test_double_spend_storm_200_debits_on_100(ledger: Ledger, db_url: str) -> None:
    a, shop = ledger.funded(100), ledger.funded(0, kind="merchant")
    calls = [lambda c, i=i: c.transfer(a, shop, 1, f"spend-{i}") for i in range(200)]
    results = asyncio.run(storm(db_url, 200, calls))
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"Transfer": 100, "InsufficientFunds": 100}
    assert ledger.balance(a) == 0 and ledger.balance(shop) == 100


def test_opposite_transfers_never_deadlock(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(10_000), ledger.funded(10_000)
    calls = []
    for i in range(500):
        calls.append(lambda c, i=i: c.transfer(a, b, 7, f"ab-{i}"))
        calls.append(lambda c, i=i: c.transfer(b, a, 7, f"ba-{i}"))
    results = asyncio.run(storm(db_url, 40, calls))
    assert [r for r in results if isinstance(r, Exception)] == []
    assert (ledger.balance(a), ledger.balance(b)) == (10_000, 10_000)


def test_replay_storm_one_key_one_transfer(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(1000), ledger.funded(0)
    calls = [lambda c: c.transfer(a, b, 250, "the-one-key") for _ in range(50)]
    results = asyncio.run(storm(db_url, 50, calls))
    assert not [r for r in results if isinstance(r, Exception)]
    assert sum(not r.replayed for r in results) == 1
    first = next(r for r in results if not r.replayed)
    assert {(r.operation_id, r.transfer_ids, r.amount, r.created_at) for r in results} == {
        (first.operation_id, first.transfer_ids, first.amount, first.created_at)}
    assert ledger.balance(b) == 250


def test_replay_storm_with_changed_payloads(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(1000), ledger.funded(0)
    calls = [lambda c, i=i: c.transfer(a, b, 1 + i % 2, "contested") for i in range(40)]
    results = asyncio.run(storm(db_url, 40, calls))
    winners = [r for r in results if not isinstance(r, Exception) and not r.replayed]
    assert len(winners) == 1
    for r in results:
        if isinstance(r, Exception):
            assert isinstance(r, errors.DuplicateRequest)
        else:
            assert r.amount == winners[0].amount
    assert ledger.balance(b) == winners[0].amount


def test_capture_racing_void_has_one_winner(ledger: Ledger) -> None:
    c = ledger.client
    user, performer = ledger.funded(100_000), ledger.funded(0, kind="performer")
    rounds = 40
    holds = [c.place_hold(user, performer, 100, f"h{i}").hold_id for i in range(rounds)]
    outcomes: Counter[str] = Counter()
    with Client(c.pool.conninfo, min_size=2, max_size=2) as other, ThreadPoolExecutor(2) as pool:
        for i, hold in enumerate(holds):
            barrier = threading.Barrier(2)

            def capture(hold: int = hold, i: int = i, barrier: threading.Barrier = barrier) -> str:
                barrier.wait()
                try:
                    return c.capture_hold(hold, f"c{i}").status
                except errors.InvalidStateTransition:
                    return "lost"

            def void(hold: int = hold, i: int = i, barrier: threading.Barrier = barrier) -> str:
                barrier.wait()
                try:
                    return other.void_hold(hold, f"v{i}").status
                except errors.InvalidStateTransition:
                    return "lost"

            got = sorted(f.result() for f in [pool.submit(capture), pool.submit(void)])
            assert got in (["captured", "lost"], ["lost", "voided"])
            outcomes[got[0] if got[0] != "lost" else got[1]] += 1
            assert c.get_hold(hold).status == (got[0] if got[0] != "lost" else got[1])
    captured = outcomes["captured"]
    assert captured + outcomes["voided"] == rounds
    assert ledger.balance(performer) == 100 * captured
    assert c.get_account(user).held == 0 and ledger.balance(user) == 100_000 - 100 * captured


def test_hold_double_spend_storm(ledger: Ledger, db_url: str) -> None:
    user, performer = ledger.funded(1000), ledger.funded(0, kind="performer")
    calls = [lambda c, i=i: c.place_hold(user, performer, 100, f"h-{i}") for i in range(60)]
    results = asyncio.run(storm(db_url, 60, calls))
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"Hold": 10, "InsufficientFunds": 50}
    account = ledger.client.get_account(user)
    assert (account.held, account.available) == (1000, 0)


def test_collector_storm_with_concurrent_debits(ledger: Ledger, db_url: str) -> None:
    """Many payers into one revenue account while refunds leave it: never below zero, exact total."""
    c = ledger.client
    bar = c.open_account("EUR", "revenue").id
    cards = [ledger.funded(1000) for _ in range(20)]
    calls: list[Callable[[AsyncClient], Awaitable[Any]]] = []
    for i in range(400):
        calls.append(lambda cl, i=i: cl.transfer(cards[i % 20], bar, 10, f"pay-{i}"))
        if i % 4 == 0:
            calls.append(lambda cl, i=i: cl.transfer(bar, cards[i % 20], 30, f"refund-{i}"))
    results = asyncio.run(storm(db_url, 40, calls))
    errs = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(e, errors.InsufficientFunds) for e in errs)
    paid = sum(1 for r in results if not isinstance(r, Exception) and r.credit_account_id == bar) * 10
    refunded = sum(1 for r in results if not isinstance(r, Exception) and r.debit_account_id == bar) * 30
    assert paid == 4000
    assert ledger.balance(bar) == paid - refunded >= 0
    assert sum(ledger.balance(card) for card in cards) == 20 * 1000 - paid + refunded


def test_sync_client_threads_share_one_pool(ledger: Ledger) -> None:
    c = ledger.client
    a, b = ledger.funded(50), ledger.funded(0)

    def spend(i: int) -> bool:
        try:
            c.transfer(a, b, 1, f"t{i}")
            return True
        except errors.InsufficientFunds:
            return False

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(spend, range(80))) == 50
    assert ledger.balance(a) == 0


def test_payers_into_a_collector_do_not_wait_for_each_other(ledger: Ledger, db_url: str) -> None:
    """An open transaction that paid the bar holds a slot; another payer still goes through at once.

    The same scene with an ordinary payee account blocks (lock_timeout fires): the test can fail.
    """
    c = ledger.client
    bar = c.open_account("EUR", "revenue").id
    shop = ledger.funded(0, kind="merchant")
    first, second = ledger.funded(100), ledger.funded(100)
    for payee, must_wait in ((bar, False), (shop, True)):
        with psycopg.connect(db_url) as open_tx, psycopg.connect(db_url, autocommit=True) as other:
            open_tx.execute("select pgwallet.transfer(%s, %s, 1, %s)", (first, payee, f"open-{payee}"))
            other.execute("set lock_timeout = '1s'")
            if must_wait:
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    other.execute("select pgwallet.transfer(%s, %s, 1, %s)", (second, payee, f"next-{payee}"))
            else:
                other.execute("select pgwallet.transfer(%s, %s, 1, %s)", (second, payee, f"next-{payee}"))
            open_tx.rollback()
    assert ledger.balance(bar) == 1 and ledger.balance(shop) == 0
