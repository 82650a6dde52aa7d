"""Cashless storms over real parallel connections (asyncpg pools of up to 100 connections).

- 1,000 concurrent orders of 1.00 on one card holding 500.00, from terminals on several bars: exactly
  500 succeed, the balance ends at 0.00 and never goes negative;
- 100 concurrent replays of one order: one order, identical responses;
- replays with changed payloads, concurrent checkpoint recharges against the balance cap, a block racing
  orders, a replacement racing orders. The invariants are checked at teardown (``client`` fixture).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from test_concurrency import storm

from pyapp import Client, errors
from pyapp.cashless import BarOrder

ONE_EURO = [{"sku": "token", "name": "Token", "quantity": 1, "unit_price": 100}]


def festival(client: Client, balance: int, bars: int = 4) -> tuple[int, list[str]]:
    codes = [client.create_bar(f"bar-{i}", f"Bar {i}").code for i in range(bars)]
    card = client.issue_card("04STORM01")
    if balance:
        client.process_stripe_recharge(card.card_id, balance, "cs_storm_funding")
    return card.card_id, codes


def test_1000_orders_of_1_on_500_exactly_500_succeed(client: Client, db_url: str) -> None:
    card, bars = festival(client, 50_000)
    calls = [lambda c, i=i: c.process_bar_order(card, ONE_EURO, 100, f"t{i % 50}-{i}", bars[i % len(bars)])
             for i in range(1000)]
    results = asyncio.run(storm(db_url, 100, calls))
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"BarOrder": 500, "InsufficientFunds": 500}
    assert client.get_card(card).balance == 0
    # never negative: every entry of the card kept new_balance >= 0, and balances step down one by one
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select min(new_balance), count(*), count(distinct new_balance) from pgwallet.entries "
                            "where account_id = (select account_id from pgwallet.cards where id = %s) "
                            "and amount < 0", (card,)).fetchone()
        orders = conn.execute("select count(*), sum(total_amount) from pgwallet.bar_orders").fetchone()
        revenue = conn.execute("select sum(a.balance) from pgwallet.account_balances a "
                               "join pgwallet.bars b on b.revenue_account_id = a.id").fetchone()
    assert rows == (0, 500, 500)
    assert orders == (500, 50_000)
    assert revenue == (50_000,)
    assert sorted({r.card_balance for r in results if isinstance(r, BarOrder)}) == list(range(0, 50_000, 100))


def test_100_concurrent_replays_of_one_order(client: Client, db_url: str) -> None:
    card, bars = festival(client, 10_000)
    items = [{"sku": "beer", "name": "Beer", "quantity": 2, "unit_price": 450},
             {"sku": "water", "name": "Water", "quantity": 1, "unit_price": 200}]
    calls = [lambda c: c.process_bar_order(card, items, 1100, "flaky-terminal-7", bars[0]) for _ in range(100)]
    results = asyncio.run(storm(db_url, 100, calls))
    assert not [r for r in results if isinstance(r, Exception)]
    assert sum(not r.replayed for r in results) == 1
    first = next(r for r in results if not r.replayed)
    assert {replace(r, replayed=False) for r in results} == {first}
    assert client.get_card(card).balance == 8900
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from pgwallet.bar_orders").fetchone() == (1,)


def test_concurrent_replays_with_changed_payloads(client: Client, db_url: str) -> None:
    card, bars = festival(client, 10_000)
    calls = [lambda c, i=i: c.process_bar_order(card, [{**ONE_EURO[0], "quantity": 1 + i % 2}], 100 * (1 + i % 2),
                                                "contested", bars[0]) for i in range(40)]
    results = asyncio.run(storm(db_url, 40, calls))
    winners = [r for r in results if isinstance(r, BarOrder) and not r.replayed]
    assert len(winners) == 1
    for r in results:
        if isinstance(r, Exception):
            assert isinstance(r, errors.DuplicateRequest)
        else:
            assert r.total_amount == winners[0].total_amount
    assert client.get_card(card).balance == 10_000 - winners[0].total_amount


def test_checkpoint_recharges_never_pass_the_balance_cap(client: Client, db_url: str) -> None:
    card, _ = festival(client, 0)
    staff = client.create_staff("Pat").id
    checkpoint = client.create_checkpoint("Gate").id
    calls = [lambda c, i=i: c.process_checkpoint_recharge(card, 30_000, staff, checkpoint, "cash" if i % 2 else "card",
                                                          f"cp-{i}") for i in range(20)]
    results = asyncio.run(storm(db_url, 20, calls))
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"Recharge": 3, "LimitExceeded": 17}  # 3 x 300.00 fit under 1,000.00, a 4th does not
    assert client.get_card(card).balance == 90_000


def test_block_racing_orders_refuses_every_order_after_it(client: Client, db_url: str) -> None:
    card, bars = festival(client, 50_000)

    async def block(c: Any) -> Any:
        await asyncio.sleep(0.05)
        return await c.set_card_status(card, "blocked", reason="stolen")

    calls = [lambda c, i=i: c.process_bar_order(card, ONE_EURO, 100, f"o-{i}", bars[i % 4]) for i in range(200)]
    results = asyncio.run(storm(db_url, 40, [*calls, block]))
    orders = [r for r in results if isinstance(r, BarOrder)]
    refused = [r for r in results[:-1] if isinstance(r, errors.CardBlocked)]
    assert len(orders) + len(refused) == 200
    assert client.get_card(card).balance == 50_000 - 100 * len(orders)
    assert client.get_card(card).status == "blocked"
    with pytest.raises(errors.CardBlocked):
        client.process_bar_order(card, ONE_EURO, 100, "after-the-block", bars[0])


def test_block_racing_ledger_transfers_refuses_every_debit_after_it(client: Client, db_url: str) -> None:
    """The same race through the generic ledger call: transfers out of the card's account, with a block in
    the middle. Each one is paid or refused with CARD_BLOCKED, the balance is exact, and every transfer
    sent after the block returned is refused."""
    card, _ = festival(client, 50_000)
    account = client.get_card(card).account_id
    shop = client.open_account("EUR", "merchant", "shop").id

    async def block_then_debit(c: Any) -> list[Any]:
        await asyncio.sleep(0.05)
        await c.set_card_status(card, "blocked", reason="stolen")
        later = []
        for i in range(20):
            try:
                later.append(await c.transfer(account, shop, 100, f"after-{i}"))
            except errors.PgWalletError as exc:
                later.append(exc)
        return later

    calls = [lambda c, i=i: c.transfer(account, shop, 100, f"t-{i}") for i in range(200)]
    results = asyncio.run(storm(db_url, 40, [*calls, block_then_debit]))
    paid = [r for r in results[:-1] if not isinstance(r, errors.PgWalletError)]
    refused = [r for r in results[:-1] if isinstance(r, errors.CardBlocked)]
    assert len(paid) + len(refused) == 200
    assert all(isinstance(r, errors.CardBlocked) and r.field == "debit_account_id" for r in results[-1])
    assert client.get_card(card).balance == 50_000 - 100 * len(paid)
    assert client.get_account(shop).balance == 100 * len(paid)


def test_replacement_racing_orders_loses_no_money(client: Client, db_url: str) -> None:
    card, bars = festival(client, 20_000)

    async def replace(c: Any) -> Any:
        await asyncio.sleep(0.05)
        return await c.replace_card(card, "04NEWCARD", "replace-race")

    calls = [lambda c, i=i: c.process_bar_order(card, ONE_EURO, 100, f"o-{i}", bars[i % 4]) for i in range(100)]
    results = asyncio.run(storm(db_url, 30, [*calls, replace]))
    replacement = results[-1]
    assert not isinstance(replacement, Exception)
    orders = [r for r in results if isinstance(r, BarOrder)]
    assert replacement.moved_amount == 20_000 - 100 * len(orders)
    assert client.get_card(replacement.new_card_id).balance == replacement.moved_amount
    assert client.get_card(card).balance == 0
