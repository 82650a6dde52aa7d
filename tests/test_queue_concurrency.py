"""Queue storms over real parallel connections: a full queue, concurrent starts, settle races, replays.

Every test ends with the ledger invariants checked (the ``client`` fixture's teardown), the queue's
included (an item's hold follows it, a fee is paid once, a purchase follows its item).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from queue_stage import Stage
from test_concurrency import storm

from pyapp import AsyncClient, Client, errors


@pytest.fixture
def stage(client: Client) -> Iterator[Stage]:
    yield Stage(client)


def test_twenty_enqueues_at_depth_49_one_accepted(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer = stage.performer()  # at most 50 open items
    filler = stage.user(49 * 10)
    for _ in range(49):
        stage.enqueue(performer, filler, 10)
    users = [stage.user(100) for _ in range(20)]
    calls = [lambda cl, u=u: cl.create_queue_item(performer, u, 100, "a song", f"late-{u}",
                                                  acting_user=stage.owners[u]) for u in users]
    results = asyncio.run(storm(db_url, 20, calls))
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"QueueItem": 1, "QueueFull": 19}
    winner = next(r for r in results if not isinstance(r, Exception))
    assert (winner.position, winner.total_in_queue) == (50, 50)
    assert c.get_queue_depth(performer).depth == 50
    for user, result in zip(users, results, strict=True):
        account = c.get_account(user)
        assert account.held == (0 if isinstance(result, errors.QueueFull) else 100)
        assert account.balance == 100  # no hold left behind, no money moved


def test_ten_concurrent_starts_one_started(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    items = [stage.enqueue(performer, user, 10) for _ in range(10)]
    results = asyncio.run(storm(db_url, 10, [lambda cl, i=i: cl.start_item(i, f"s-{i}") for i in items]))
    assert Counter(type(r).__name__ for r in results) == {"QueueItem": 1, "AlreadyProcessing": 9}
    assert c.get_queue_depth(performer).started == 1
    started = next(r for r in results if not isinstance(r, Exception))
    assert c.get_performer_queue(performer)[0].item_id == started.item_id
    # and ten starts of the one item: one wins, the others find it STARTED
    other = stage.performer()
    item = stage.enqueue(other, user, 10)
    results = asyncio.run(storm(db_url, 10, [lambda cl, n=n: cl.start_item(item, f"same-{n}") for n in range(10)]))
    assert Counter(type(r).__name__ for r in results) == {"QueueItem": 1, "InvalidStateTransition": 9}


def test_complete_racing_abandon_or_refund_200_times(stage: Stage, db_url: str) -> None:
    c = stage.client
    fee_bps = 2000
    users = [stage.user(10_000) for _ in range(20)]
    items: list[tuple[int, int, int]] = []  # (item, performer, user)
    for n in range(200):
        performer = stage.performer(fee_bps=fee_bps)
        user = users[n % 20]
        item = stage.enqueue(performer, user, 100 + n)
        c.start_item(item, f"s-{item}")
        items.append((item, performer, user))
    calls: list[Callable[[AsyncClient], Awaitable[Any]]] = []
    for n, (item, _, _) in enumerate(items):
        calls.append(lambda cl, i=item: cl.complete_item(i, f"c-{i}"))
        if n % 2:
            calls.append(lambda cl, i=item: cl.abandon_item(i, "left", f"a-{i}"))
        else:
            calls.append(lambda cl, i=item: cl.refund_item(i, f"r-{i}", reason="staff"))
    results = asyncio.run(storm(db_url, 40, calls))
    assert all(not isinstance(r, Exception) or isinstance(r, errors.InvalidStateTransition) for r in results)
    wins = Counter(r.item_id for r in results if not isinstance(r, Exception))
    assert wins == {item: 1 for item, _, _ in items}  # exactly one winner per item
    outcome = Counter(r.status for r in results if not isinstance(r, Exception))
    assert sum(outcome.values()) == 200 and set(outcome) <= {"FINISHED", "ABANDONED", "REFUNDED"}
    fees = 0
    for n, (item, performer, _) in enumerate(items):
        got = c.get_queue_item(item)
        tokens, fee = 100 + n, (100 + n) * fee_bps // 10_000
        assert got.settled and got.status in ("FINISHED", "ABANDONED" if n % 2 else "REFUNDED")
        assert stage.balance(performer) == (tokens - fee if got.status == "FINISHED" else 0)
        fees += fee if got.status == "FINISHED" else 0
    assert stage.balance(stage.fees) == fees
    paid = sum(100 + n for n, (item, _, _) in enumerate(items) if c.get_queue_item(item).status == "FINISHED")
    assert sum(stage.balance(u) for u in users) == 20 * 10_000 - paid
    assert all(c.get_account(u).held == 0 for u in users)
    assert sum(stage.balance(u) for u in users) + sum(stage.balance(p) for _, p, _ in items) + fees == 200_000


def test_replay_storm_one_key_one_item(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(1000)
    calls = [lambda cl: cl.create_queue_item(performer, user, 100, "a song", "the-one-key",
                                             acting_user=stage.owners[user]) for _ in range(30)]
    results = asyncio.run(storm(db_url, 30, calls))
    assert not [r for r in results if isinstance(r, Exception)]
    assert sum(not r.replayed for r in results) == 1 and len({r.item_id for r in results}) == 1
    assert c.get_queue_depth(performer).depth == 1 and stage.available(user) == 900


def test_purchases_and_sweeps_racing_completions(stage: Stage, db_url: str) -> None:
    """Queued purchases over many performers, then the performers finish their started items while sweeps
    abandon the stale waiting ones and refund the overrun started ones: each purchase ends SUCCESS exactly
    when its item finished, REFUNDED otherwise, and the fee is paid for the finished ones only."""
    c = stage.client
    performers = [stage.performer(start_timeout_seconds=1) for _ in range(10)]
    menus = [c.create_tip_menu_item(p, "flash", 50).tip_menu_item_id for p in performers]
    users = [stage.user(1000) for _ in range(10)]
    buys = [lambda cl, n=n: cl.purchase_tip_grid_item(users[n % 10], performers[n % 10], menus[n % 10], "QUEUED",
                                                      idempotency_key=f"buy-{n}",
                                                      acting_user=stage.owners[users[n % 10]]) for n in range(40)]
    bought = asyncio.run(storm(db_url, 20, buys))
    assert not [b for b in bought if isinstance(b, Exception)]
    heads = [c.get_performer_queue(p)[0].item_id for p in performers]
    for head in heads:
        c.start_item(head, f"s-{head}")
    with c.pool.connection() as conn:  # every item is stale now: waiting too long, or performed too long
        conn.execute("update pgwallet.queue_items set created_at = created_at - interval '5 seconds', "
                     "started_at = started_at - interval '1 hour'")
    calls: list[Callable[[AsyncClient], Awaitable[Any]]] = [
        lambda cl, h=h: cl.complete_item(h, f"c-{h}") for h in heads]
    calls += [lambda cl: cl.expire_stale_queue_items(limit=7) for _ in range(8)]
    results = asyncio.run(storm(db_url, 18, calls))
    assert all(not isinstance(r, Exception) or isinstance(r, errors.InvalidStateTransition) for r in results)
    finished = sum(1 for r in results if getattr(r, "status", None) == "FINISHED")
    swept = c.expire_stale_queue_items()  # whatever the racing sweeps skipped (locked rows)
    refunded = sum(r.refunded for r in [*results, swept] if hasattr(r, "refunded"))
    assert sum(r.abandoned for r in [*results, swept] if hasattr(r, "abandoned")) == 30
    assert finished + refunded == 10
    statuses = Counter(c.get_purchased_item(b.purchased_item_id).status for b in bought)
    assert statuses == Counter({"SUCCESS": finished, "REFUNDED": 40 - finished})  # zero counts compare equal
    assert stage.balance(stage.fees) == 10 * finished
    assert sum(stage.balance(p) for p in performers) == 40 * finished
