"""Batch settlement (``complete_items``): several items of a performer finished in one call, each paid once.

Every test ends with the ledger invariants checked (the ``client`` fixture's teardown), the queue's included.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from conftest import snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from queue_stage import Stage
from test_concurrency import storm

from pyapp import AsyncClient, Client, errors


@pytest.fixture
def stage(client: Client) -> Iterator[Stage]:
    yield Stage(client)


def test_a_batch_finishes_created_and_started_items_once(stage: Stage) -> None:
    c = stage.client
    performer, alice, bob = stage.performer(fee_bps=1000), stage.user(1000), stage.user(1000)
    first, second, third = stage.enqueue(performer, alice, 100), stage.enqueue(performer, bob, 200), \
        stage.enqueue(performer, alice, 300)
    later = stage.enqueue(performer, bob, 50)  # not in the batch: stays queued, moves up
    c.start_item(first, "s1")
    done = c.complete_items(performer, [third, first, second], "batch-1")
    assert (done.performer_id, done.replayed) == (performer, False)
    assert [(i.item_id, i.status, i.settled, i.fee) for i in done.items] == [
        (first, "FINISHED", True, 10), (second, "FINISHED", True, 20), (third, "FINISHED", True, 30)]
    assert all(i.started_at is not None and i.finished_at is not None for i in done.items)
    assert (stage.balance(performer), stage.balance(stage.fees)) == (540, 60)
    assert (stage.balance(alice), stage.balance(bob), stage.available(bob)) == (600, 800, 750)
    assert c.get_queue_item(later).position == 1 and c.get_queue_depth(performer).depth == 1
    again = c.complete_items(performer, [second, first, third], "batch-1")  # the same set, in any order
    assert again.replayed and again.items == done.items
    with pytest.raises(errors.DuplicateRequest):
        c.complete_items(performer, [first, second], "batch-1")  # a changed payload under the same key
    with pytest.raises(errors.InvalidStateTransition):
        c.complete_item(first, "c1")  # finished once, never twice
    assert stage.balance(performer) == 540


def test_a_tip_purchase_behind_a_batched_item_succeeds(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(500)
    item = c.create_tip_menu_item(performer, "shout-out", 100).tip_menu_item_id
    bought = c.purchase_tip_grid_item(user, performer, item, "QUEUED", idempotency_key="buy")
    c.complete_items(performer, [bought.queue_item_id], "batch")
    after = c.get_purchased_item(bought.purchased_item_id)
    assert (after.status, after.settled, after.success) == ("SUCCESS", True, True)


def test_refusals_name_the_field_and_change_nothing(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, other, user = stage.performer(), stage.performer(), stage.user(1000)
    mine, theirs, gone = stage.enqueue(performer, user), stage.enqueue(other, user), stage.enqueue(performer, user)
    c.abandon_item(gone, "left", "a")
    before = snapshot(db_url)
    cases: list[tuple[type[errors.PgWalletError], str, Callable[[], Any]]] = [
        (errors.InvalidRequest, "item_ids", lambda: c.complete_items(performer, [mine, theirs], "k")),
        (errors.InvalidStateTransition, "item_ids", lambda: c.complete_items(performer, [mine, gone], "k")),
        (errors.NotFound, "item_ids", lambda: c.complete_items(performer, [mine, 10**12], "k")),
        (errors.NotFound, "performer_id", lambda: c.complete_items(user, [mine], "k")),
        (errors.InvalidRequest, "item_ids", lambda: c.complete_items(performer, [], "k")),
        (errors.InvalidRequest, "item_ids", lambda: c.complete_items(performer, [mine, mine], "k")),
        (errors.InvalidRequest, "item_ids", lambda: c.complete_items(performer, list(range(1, 102)), "k")),
        (errors.InvalidRequest, "idempotency_key", lambda: c.complete_items(performer, [mine], "")),
    ]
    for error, field, call in cases:
        with pytest.raises(error) as refused:
            call()
        assert refused.value.field == field, (error, refused.value)
    assert snapshot(db_url) == before
    assert c.get_queue_item(mine).status == "CREATED"  # the valid item of a refused batch was not finished


@pytest.mark.parametrize("ids", [[], [0], [None], [5, 5], list(range(1, 102)), [-3]])
def test_the_database_refuses_bad_id_lists_itself(stage: Stage, db_url: str, ids: list[Any]) -> None:
    performer = stage.performer()
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.DatabaseError) as refused:
        conn.execute("select pgwallet.complete_items(%s, %s::bigint[], 'k')", (performer, ids))
    assert refused.value.sqlstate == "W0001" and (refused.value.diag.message_detail or "").startswith("item_ids: ")


@settings(max_examples=25, deadline=None)
@given(ids=st.one_of(st.lists(st.integers(), max_size=3), st.lists(st.text(max_size=3), min_size=1, max_size=2),
                     st.text(max_size=4), st.integers(), st.none(), st.lists(st.booleans(), min_size=1, max_size=2)))
def test_bad_item_lists_get_a_typed_error_and_change_nothing(client: Client, db_url: str, ids: Any) -> None:
    before = snapshot(db_url)
    with pytest.raises(errors.PgWalletError) as refused:
        client.complete_items(1, ids, "prop")
    assert refused.value.code in ("INVALID_REQUEST", "NOT_FOUND") and refused.value.field in ("item_ids",
                                                                                              "performer_id")
    assert snapshot(db_url) == before


def test_batches_racing_abandons_and_single_completions(stage: Stage, db_url: str) -> None:
    c = stage.client
    users = [stage.user(10_000) for _ in range(5)]
    batches: list[tuple[int, list[int]]] = []
    for n in range(20):
        performer = stage.performer(fee_bps=0)
        items = [stage.enqueue(performer, users[(n + k) % 5], 100) for k in range(4)]
        c.start_item(items[0], f"s-{items[0]}")
        batches.append((performer, items))
    calls: list[Callable[[AsyncClient], Awaitable[Any]]] = []
    for performer, items in batches:
        calls += [lambda cl, p=performer, i=items: cl.complete_items(p, i, f"b-{p}") for _ in range(3)]  # replays
        calls.append(lambda cl, i=items[0]: cl.complete_item(i, f"c-{i}"))
        calls.append(lambda cl, i=items[2]: cl.abandon_item(i, "left", f"a-{i}"))
    results = asyncio.run(storm(db_url, 40, calls))
    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, errors.InvalidStateTransition)]
    assert unexpected == []
    open_items = 0
    outcomes = Counter()
    for performer, items in batches:
        statuses = [c.get_queue_item(i).status for i in items]
        # the batch came first and finished all four, or it was refused and the single calls won
        assert statuses in (["FINISHED"] * 4, ["FINISHED", "CREATED", "ABANDONED", "CREATED"]), statuses
        outcomes["batch" if statuses[1] == "FINISHED" else "singles"] += 1
        assert stage.balance(performer) == 100 * statuses.count("FINISHED")  # each finished item paid once
        open_items += statuses.count("CREATED")
    assert sum(c.get_account(u).held for u in users) == 100 * open_items
    batch_answers = [r for r in results if not isinstance(r, Exception) and hasattr(r, "items")]
    assert len(batch_answers) == 3 * outcomes["batch"]  # a won batch answers its replays too
    assert sum(not r.replayed for r in batch_answers) == outcomes["batch"]
