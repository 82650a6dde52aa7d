"""Tip-grid purchases: immediate (a pass-through queue item) or queued (settled by the queue), exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from conftest import snapshot
from queue_stage import Stage

from pyapp import Client, errors


@pytest.fixture
def stage(client: Client) -> Iterator[Stage]:
    yield Stage(client)


def menu(stage: Stage, performer: int, price: int = 100, **kwargs: object) -> int:
    return stage.client.create_tip_menu_item(performer, "flash", price, **kwargs).tip_menu_item_id  # type: ignore[arg-type]


def successes(listener: psycopg.Connection[tuple[object, ...]]) -> list[dict[str, object]]:
    return [json.loads(n.payload) for n in listener.notifies(timeout=0.5)]


def test_immediate_purchase_pays_at_once_and_notifies(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(500)
    item = menu(stage, performer, 200)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen purchased_item_success")
        bought = c.purchase_tip_grid_item(user, performer, item, idempotency_key="buy-1")
        got = successes(listener)
    assert (bought.status, bought.execution_mode, bought.settled, bought.price) == ("SUCCESS", "IMMEDIATE", True, 200)
    assert bought.notified_at is not None and bought.position is None
    assert (bought.success, bought.type, bought.target) == (True, "tip_grid", performer)
    assert [(g["purchased_item_id"], g["queue_item_id"]) for g in got] == [(bought.purchased_item_id,
                                                                            bought.queue_item_id)]
    queued = c.get_queue_item(bought.queue_item_id)
    assert (queued.status, queued.pass_through, queued.source_feature, queued.source_event_id) == (
        "FINISHED", True, "tip_grid", str(bought.purchased_item_id))
    assert (stage.balance(user), stage.balance(performer), stage.balance(stage.fees)) == (300, 160, 40)


def test_queued_purchase_waits_then_succeeds_once(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(500)
    ahead = stage.enqueue(performer, stage.user(), 10)
    item = menu(stage, performer, 100, expected_duration_seconds=45)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen purchased_item_success")
        bought = c.purchase_tip_grid_item(user, performer, item, "QUEUED", idempotency_key="buy-q")
        assert (bought.status, bought.execution_mode, bought.settled) == ("PENDING", "QUEUED", False)
        assert (bought.position, bought.total_in_queue, bought.estimated_wait_seconds) == (2, 2, 60)
        assert successes(listener) == []
        assert stage.available(user) == 400 and stage.balance(performer) == 0
        c.start_item(ahead, "s0")
        c.complete_item(ahead, "c0")
        c.start_item(bought.queue_item_id, "s1")
        assert c.get_purchased_item(bought.purchased_item_id).status == "PENDING"
        c.complete_item(bought.queue_item_id, "c1")
        c.complete_item(bought.queue_item_id, "c1")  # a replay changes nothing
        got = successes(listener)
    assert [g["purchased_item_id"] for g in got] == [bought.purchased_item_id]
    after = c.get_purchased_item(bought.purchased_item_id)
    assert (after.status, after.settled, after.notified_at is not None) == ("SUCCESS", True, True)
    assert (stage.balance(user), stage.balance(performer)) == (400, 8 + 80)


@pytest.mark.parametrize("how", ["abandon", "refund", "sweep"])
def test_queued_purchase_refunded_with_its_item(stage: Stage, db_url: str, how: str) -> None:
    c = stage.client
    performer, user = stage.performer(start_timeout_seconds=1), stage.user(500)
    bought = c.purchase_tip_grid_item(user, performer, menu(stage, performer), "QUEUED", idempotency_key="b")
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen purchased_item_success")
        if how == "abandon":
            c.abandon_item(bought.queue_item_id, "left the show", "a")
        elif how == "refund":
            c.refund_item(bought.queue_item_id, "r")
        else:
            listener.execute("update pgwallet.queue_items set created_at = created_at - interval '2 seconds'")
            assert c.expire_stale_queue_items().abandoned == 1
        assert successes(listener) == []
    after = c.get_purchased_item(bought.purchased_item_id)
    assert (after.status, after.settled, after.refunded_at is not None) == ("REFUNDED", False, True)
    assert (bought.success, after.success, after.target) == (True, False, performer)
    assert (stage.balance(user), stage.available(user), stage.balance(performer)) == (500, 500, 0)


def test_purchase_refusals_change_nothing(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, other, user = stage.performer(), stage.performer(), stage.user(50)
    item, theirs, hidden = menu(stage, performer, 10), menu(stage, other, 10), menu(stage, performer, 10)
    expensive = menu(stage, performer, 51)
    assert not c.set_tip_menu_item_active(hidden, False).active
    before = snapshot(db_url)
    cases: list[tuple[type[errors.PgWalletError], str, dict[str, object]]] = [
        (errors.NotFound, "tip_menu_item_id", {"tip_menu_item_id": 10**12}),
        (errors.InvalidRequest, "tip_menu_item_id", {"tip_menu_item_id": theirs}),
        (errors.InvalidRequest, "tip_menu_item_id", {"tip_menu_item_id": hidden}),
        (errors.InsufficientFunds, "user_id", {"tip_menu_item_id": expensive}),
        (errors.AccountNotFound, "user_id", {"user_id": 10**12}),
        (errors.InvalidRequest, "execution_mode", {"execution_mode": "LATER"}),
    ]
    for error, field, change in cases:
        call = {"user_id": user, "performer_id": performer, "tip_menu_item_id": item,
                "idempotency_key": stage.key(), **change}
        for mode in ("IMMEDIATE", "QUEUED"):
            with pytest.raises(error) as refused:
                c.purchase_tip_grid_item(**{"execution_mode": mode, **call})  # type: ignore[arg-type]
            assert refused.value.field == field, (change, refused.value)
    assert snapshot(db_url) == before


def test_purchase_replay_and_changed_payload(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(500)
    item = menu(stage, performer)
    first = c.purchase_tip_grid_item(user, performer, item, "QUEUED", idempotency_key="once")
    again = c.purchase_tip_grid_item(user, performer, item, "QUEUED", idempotency_key="once")
    assert again == type(first)(**{**first.__dict__, "replayed": True})
    with pytest.raises(errors.DuplicateRequest) as refused:
        c.purchase_tip_grid_item(user, performer, item, idempotency_key="once")
    assert refused.value.field == "idempotency_key"
    assert stage.available(user) == 400


def test_queue_full_refuses_queued_purchases_only(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(max_open=1), stage.user(500)
    item = menu(stage, performer)
    c.purchase_tip_grid_item(user, performer, item, "QUEUED", idempotency_key="1")
    with pytest.raises(errors.QueueFull):
        c.purchase_tip_grid_item(user, performer, item, "QUEUED", idempotency_key="2")
    assert c.purchase_tip_grid_item(user, performer, item, idempotency_key="3").status == "SUCCESS"


def test_tip_menu(stage: Stage) -> None:
    c = stage.client
    performer = stage.performer()
    a = c.create_tip_menu_item(performer, "flash", 100)
    b = c.create_tip_menu_item(performer, "dance", 250, expected_duration_seconds=300, active=False)
    assert [(m.title, m.price, m.active) for m in c.get_tip_menu(performer)] == [("flash", 100, True),
                                                                               ("dance", 250, False)]
    assert c.set_tip_menu_item_active(b.tip_menu_item_id, True).active
    assert a.expected_duration_seconds == 60
    with pytest.raises(errors.NotFound) as refused:
        c.create_tip_menu_item(c.open_account("TOKEN", "performer").id, "x", 1)
    assert refused.value.field == "performer_id"
    with pytest.raises(errors.NotFound) as refused:
        c.set_tip_menu_item_active(10**12, True)
    assert refused.value.field == "tip_menu_item_id"
    with pytest.raises(errors.NotFound):
        c.get_purchased_item(10**12)
    with pytest.raises(errors.NotFound):
        c.get_tip_menu(10**12)


def test_a_queue_item_key_is_never_used_twice(stage: Stage) -> None:
    """A purchase's queue item has key tip_grid/<purchase key>: that namespace is the purchases' own, so a
    direct item cannot take it first (and jam the purchase), and no key ever makes a second item."""
    c = stage.client
    performer, user = stage.performer(), stage.user(500)
    item = menu(stage, performer)
    with pytest.raises(errors.InvalidRequest) as refused:
        c.create_queue_item(performer, user, 10, "direct", "tip_grid/k1")
    assert refused.value.field == "idempotency_key"
    c.purchase_tip_grid_item(user, performer, item, "QUEUED", idempotency_key="k1")
    with pytest.raises(errors.InvalidRequest):
        c.create_queue_item(performer, user, 10, "direct", "tip_grid/k1")
    c.create_queue_item(performer, user, 10, "direct", "k1")  # the purchase's key is free in the queue's scope
    assert stage.available(user) == 500 - 100 - 10
