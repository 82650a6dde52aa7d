"""The performer queue: escrow on intake, FIFO positions, every transition, every error, replays."""

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


def test_create_holds_the_tokens_and_queues_in_order(stage: Stage) -> None:
    c = stage.client
    performer, alice, bob = stage.performer(), stage.user(500), stage.user(500)
    first = c.create_queue_item(performer, alice, 100, "a song", "k1", source_feature="chip_menu",
                                source_event_id="evt-1", description="loud", expected_duration_seconds=90,
                                metadata={"colour": "red"})
    assert (first.status, first.position, first.total_in_queue, first.estimated_wait_seconds) == ("CREATED", 1, 1, 0)
    assert (first.tokens, first.fee, first.pass_through, first.settled) == (100, 20, False, False)
    assert not first.replayed
    assert (first.source_feature, first.source_event_id, first.metadata) == ("chip_menu", "evt-1", {"colour": "red"})
    second = c.create_queue_item(performer, bob, 50, "a dance", "k2", expected_duration_seconds=30)
    assert (second.position, second.total_in_queue, second.estimated_wait_seconds) == (2, 2, 90)
    assert stage.balance(alice) == 500 and stage.available(alice) == 400
    hold = c.get_hold(first.hold_id)
    assert (hold.status, hold.amount, hold.account_id, hold.credit_account_id) == ("open", 100, alice, performer)
    assert c.get_queue_depth(performer).depth == 2
    assert [e.item_id for e in c.get_performer_queue(performer)] == [first.item_id, second.item_id]


def test_full_cycle_pays_performer_minus_fee(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(fee_bps=1500), stage.user(1000)
    item = stage.enqueue(performer, user, 200)
    started = c.start_item(item, "s1")
    assert (started.status, started.position, started.started_at is not None) == ("STARTED", 1, True)
    done = c.complete_item(item, "c1")
    assert (done.status, done.settled, done.position, done.fee) == ("FINISHED", True, None, 30)
    assert done.settlement_transfer_id is not None and done.fee_transfer_id is not None
    assert (stage.balance(user), stage.balance(performer), stage.balance(stage.fees)) == (800, 170, 30)
    assert c.get_account(user).held == 0
    hold = c.get_hold(done.hold_id)
    assert (hold.status, hold.captured_amount, hold.released_amount) == ("captured", 200, 0)


def test_zero_fee_posts_one_leg(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(fee_bps=0), stage.user(100)
    item = stage.enqueue(performer, user, 100)
    c.start_item(item, "s")
    done = c.complete_item(item, "c")
    assert (done.fee, done.fee_transfer_id) == (0, None)
    assert stage.balance(performer) == 100


def test_fee_rounds_down(stage: Stage) -> None:
    performer, user = stage.performer(fee_bps=3333), stage.user(100)
    assert stage.client.get_queue_item(stage.enqueue(performer, user, 10)).fee == 3


def test_pass_through_settles_at_once(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(100)
    item = c.create_queue_item(performer, user, 100, "instant", "k", queue_mode="OFF")
    assert (item.status, item.pass_through, item.settled, item.ticket, item.position) == (
        "FINISHED", True, True, None, None)
    assert item.started_at == item.finished_at == item.settled_at
    assert (stage.balance(user), stage.balance(performer), stage.balance(stage.fees)) == (0, 80, 20)
    assert c.get_queue_depth(performer).depth == 0


def test_abandon_and_refund_give_the_tokens_back(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(300)
    waiting, started, other = (stage.enqueue(performer, user, 100) for _ in range(3))
    c.start_item(started, "s")
    gone = c.abandon_item(waiting, "changed my mind", "a1")
    assert (gone.status, gone.refund_reason, gone.settled, gone.abandoned_at is not None) == (
        "ABANDONED", "changed my mind", True, True)
    back = c.refund_item(started, "r1", reason="stream dropped")
    assert (back.status, back.refund_reason, back.refunded_at is not None) == ("REFUNDED", "stream dropped", True)
    assert c.refund_item(other, "r2").refund_reason is None
    assert (stage.balance(user), stage.available(user), stage.balance(performer)) == (300, 300, 0)
    assert c.get_hold(gone.hold_id).status == "voided"


def test_positions_are_exact_after_every_transition(stage: Stage) -> None:
    c = stage.client
    performer = stage.performer()
    items = [stage.enqueue(performer, stage.user(), 10, expected_duration_seconds=60) for _ in range(5)]

    def positions() -> list[int | None]:
        return [c.get_queue_position(i).position for i in items]

    assert positions() == [1, 2, 3, 4, 5]
    c.abandon_item(items[1], "bored", "a")
    assert positions() == [1, None, 2, 3, 4]
    c.start_item(items[3], "s3")  # the performer picks a later item: it is performed first
    assert positions() == [2, None, 3, 1, 4]
    assert c.get_queue_position(items[3]).estimated_wait_seconds == 0
    assert c.get_queue_position(items[4]).estimated_wait_seconds in (179, 180)
    c.complete_item(items[3], "c3")
    assert positions() == [1, None, 2, None, 3]
    assert [e.position for e in c.get_performer_queue(performer)] == [1, 2, 3]
    assert c.get_queue_depth(performer) == type(c.get_queue_depth(performer))(performer, 3, 3, 0, 50)
    p = c.get_queue_position(items[4])
    assert (p.total_in_queue, p.estimated_wait_seconds, p.status) == (3, 120, "CREATED")


def test_every_other_transition_is_refused(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    created = stage.enqueue(performer, user)
    with pytest.raises(errors.InvalidStateTransition) as refused:
        c.complete_item(created, stage.key())
    assert refused.value.field == "item_id"
    finished = stage.enqueue(performer, user)
    c.start_item(finished, stage.key())
    with pytest.raises(errors.InvalidStateTransition):
        c.start_item(finished, stage.key())
    c.complete_item(finished, stage.key())
    abandoned = stage.enqueue(performer, user)
    c.abandon_item(abandoned, "no", stage.key())
    for item in (finished, abandoned):
        for call in (lambda i: c.start_item(i, stage.key()), lambda i: c.complete_item(i, stage.key()),
                     lambda i: c.abandon_item(i, "late", stage.key())):
            with pytest.raises(errors.InvalidStateTransition):
                call(item)
    with pytest.raises(errors.InvalidStateTransition):  # an abandoned item may still be refunded (below)
        c.refund_item(finished, stage.key())


def test_an_abandoned_item_is_refunded_without_a_second_refund(stage: Stage) -> None:
    """The seed's ABANDONED -> REFUNDED: abandoning gave the tokens back; the refund records it, moves nothing."""
    c = stage.client
    performer, user = stage.performer(), stage.user(1000)
    item = stage.enqueue(performer, user, 100)
    abandoned = c.abandon_item(item, "left early", stage.key())
    assert stage.available(user) == 1000
    refunded = c.refund_item(item, "refund-1", reason="support ticket 42")
    assert (refunded.status, refunded.refund_reason) == ("REFUNDED", "support ticket 42")
    assert refunded.abandoned_at == abandoned.abandoned_at and refunded.refunded_at is not None
    assert refunded.updated_at is not None and abandoned.updated_at is not None
    assert refunded.updated_at >= abandoned.updated_at
    assert c.refund_item(item, "refund-1", reason="support ticket 42").replayed
    with pytest.raises(errors.InvalidStateTransition):
        c.refund_item(item, "refund-2")
    assert stage.available(user) == stage.balance(user) == 1000  # given back once


def test_one_started_item_per_performer(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    a, b = stage.enqueue(performer, user), stage.enqueue(performer, user)
    c.start_item(a, "s-a")
    with pytest.raises(errors.AlreadyProcessing) as refused:
        c.start_item(b, "s-b")
    assert (refused.value.field, refused.value.http_status) == ("item_id", 409)
    c.complete_item(a, "c-a")
    assert c.start_item(b, "s-b").status == "STARTED"  # a refused call stored nothing: the key is free


def test_queue_full_at_the_performers_limit(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(max_open=3), stage.user()
    items = [stage.enqueue(performer, user, 10) for _ in range(3)]
    before = snapshot(db_url)
    with pytest.raises(errors.QueueFull) as refused:
        stage.enqueue(performer, user, 10)
    assert refused.value.field == "performer_id"
    assert snapshot(db_url) == before
    c.create_queue_item(performer, user, 10, "skips the queue", "pass", queue_mode="OFF")  # not counted
    c.abandon_item(items[0], "room", "a")
    assert c.get_queue_item(stage.enqueue(performer, user, 10)).position == 3


def test_replay_returns_the_same_item(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user(1000)
    first = c.create_queue_item(performer, user, 100, "a song", "same")
    again = c.create_queue_item(performer, user, 100, "a song", "same")
    assert again == type(first)(**{**first.__dict__, "replayed": True})
    assert stage.available(user) == 900
    with pytest.raises(errors.DuplicateRequest) as refused:
        c.create_queue_item(performer, user, 101, "a song", "same")
    assert refused.value.field == "idempotency_key"
    c.start_item(first.item_id, "start")
    assert c.start_item(first.item_id, "start").replayed
    done = c.complete_item(first.item_id, "finish")
    assert c.complete_item(first.item_id, "finish") == type(done)(**{**done.__dict__, "replayed": True})
    with pytest.raises(errors.InvalidStateTransition):
        c.abandon_item(first.item_id, "x", "finish")  # keys are scoped per procedure: this one is new
    assert stage.balance(performer) == 80


def test_replay_of_abandon_and_refund(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    a, b = stage.enqueue(performer, user), stage.enqueue(performer, user)
    assert c.abandon_item(a, "why", "ab").status == "ABANDONED"
    assert c.abandon_item(a, "why", "ab").replayed
    with pytest.raises(errors.DuplicateRequest):
        c.abandon_item(a, "another reason", "ab")
    assert c.refund_item(b, "rf").status == "REFUNDED"
    assert c.refund_item(b, "rf").replayed
    with pytest.raises(errors.DuplicateRequest):
        c.refund_item(a, "rf")


def test_intake_refusals_change_nothing(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user, poor = stage.performer(), stage.user(100), stage.user(5)
    unconfigured = c.open_account("TOKEN", "performer").id
    eur = c.open_account("EUR", "card", owner="eur-holder").id
    frozen = c.set_account_status(stage.user(100), "frozen").id
    before = snapshot(db_url)
    cases: list[tuple[type[errors.PgWalletError], str, dict[str, object]]] = [
        (errors.NotFound, "performer_id", {"performer_id": unconfigured}),
        (errors.AccountNotFound, "user_id", {"user_id": 10**12}),
        (errors.InsufficientFunds, "user_id", {"user_id": poor}),
        (errors.CurrencyMismatch, "user_id", {"user_id": eur}),
        (errors.AccountFrozen, "user_id", {"user_id": frozen}),
        (errors.Forbidden, "user_id", {"user_id": performer}),  # nobody's wallet: no end user debits it
        (errors.Forbidden, "user_id", {"user_id": stage.fees}),
        (errors.InvalidRequest, "source_feature", {"source_feature": "Tip Grid"}),
        (errors.InvalidRequest, "tokens", {"tokens": 0}),
        (errors.InvalidRequest, "queue_mode", {"queue_mode": "on"}),
    ]
    for error, field, change in cases:
        call = {"performer_id": performer, "user_id": user, "tokens": 10, "title": "t",
                "idempotency_key": stage.key(), **change}
        with pytest.raises(error) as refused:
            c.create_queue_item(**call)  # type: ignore[arg-type]
        assert refused.value.field == field, (change, refused.value)
    assert snapshot(db_url) == before


def test_unknown_items_are_not_found(stage: Stage) -> None:
    c = stage.client
    for call in (lambda: c.start_item(10**12, "k"), lambda: c.complete_item(10**12, "k"),
                 lambda: c.abandon_item(10**12, "r", "k"), lambda: c.refund_item(10**12, "k"),
                 lambda: c.get_queue_item(10**12), lambda: c.get_queue_position(10**12)):
        with pytest.raises(errors.NotFound) as refused:
            call()
        assert refused.value.code == "NOT_FOUND" and refused.value.field == "item_id"
    for call in (lambda: c.get_queue_depth(10**12), lambda: c.get_performer_queue(10**12)):
        with pytest.raises(errors.NotFound) as refused:
            call()
        assert refused.value.field == "performer_id"
    with pytest.raises(errors.AccountNotFound):
        c.get_user_queue_history(10**12)


def test_user_history_pages_newest_first(stage: Stage) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    items = [stage.enqueue(performer, user, 10) for _ in range(5)]
    assert [i.item_id for i in c.get_user_queue_history(user, limit=2)] == items[::-1][:2]
    assert [i.item_id for i in c.get_user_queue_history(user, limit=2, offset=2)] == items[::-1][2:4]
    assert c.get_user_queue_history(user, offset=5) == []


def test_configure_refusals(stage: Stage) -> None:
    c = stage.client
    performer = c.open_account("TOKEN", "performer").id
    eur_fees = c.open_account("EUR", "fees").id
    with pytest.raises(errors.CurrencyMismatch) as refused:
        c.configure_performer_queue(performer, eur_fees)
    assert refused.value.field == "fee_account_id"
    with pytest.raises(errors.AccountNotFound):
        c.configure_performer_queue(10**12, stage.fees)
    with pytest.raises(errors.InvalidRequest):
        c.configure_performer_queue(performer, performer)
    with pytest.raises(errors.InvalidRequest):
        c.configure_performer_queue(stage.fees, stage.fees)
    q = c.configure_performer_queue(performer, stage.fees, max_open=7)
    assert (q.fee_bps, q.max_open, q.grace_percent) == (2000, 7, 200)
    assert c.configure_performer_queue(performer, stage.fees, fee_bps=100).max_open == 7


def test_sweep_abandons_unstarted_and_refunds_overrun_items(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(start_timeout_seconds=60, grace_percent=150), stage.user(1000)
    fresh, stale, overran = (stage.enqueue(performer, user, 100, expected_duration_seconds=60) for _ in range(3))
    c.start_item(overran, "s")
    with psycopg.connect(db_url, autocommit=True) as conn:  # time passes
        conn.execute("update pgwallet.queue_items set created_at = created_at - interval '61 seconds' "
                     "where id = %s", (stale,))
        conn.execute("update pgwallet.queue_items set started_at = started_at - interval '89 seconds' "
                     "where id = %s", (overran,))
    assert c.expire_stale_queue_items() == type(c.expire_stale_queue_items())(1, 0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update pgwallet.queue_items set started_at = started_at - interval '2 seconds' "
                     "where id = %s", (overran,))
    assert (c.expire_stale_queue_items(limit=10).refunded, c.expire_stale_queue_items().refunded) == (1, 0)
    statuses = [c.get_queue_item(i).status for i in (fresh, stale, overran)]
    assert statuses == ["CREATED", "ABANDONED", "REFUNDED"]
    assert c.get_queue_item(stale).refund_reason == "not started in time (sweep)"
    assert (stage.balance(user), stage.available(user)) == (1000, 900)


def test_events_reach_the_performers_channel(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f"listen pgwallet_queue_{performer}")
        item = stage.enqueue(performer, user)
        c.start_item(item, "s")
        c.complete_item(item, "c")
        with pytest.raises(errors.InvalidStateTransition):
            c.complete_item(item, "again")  # refused: rolled back, nothing sent
        got = [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=3)]
    assert [(e["status"], e["previous_status"], e["depth"]) for e in got] == [
        ("CREATED", None, 1), ("STARTED", "CREATED", 1), ("FINISHED", "STARTED", 0)]
    assert {e["item_id"] for e in got} == {item}
    assert [e["positions_changed"] for e in got] == [False, True, True]


def test_queue_events_can_be_switched_off(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f"listen pgwallet_queue_{performer}")
        listener.execute("update pgwallet.settings set value = 'off' where name = 'queue_events'")
        c.start_item(stage.enqueue(performer, user), "s")
        assert list(listener.notifies(timeout=0.5)) == []
        listener.execute("update pgwallet.settings set value = 'on' where name = 'queue_events'")
        stage.enqueue(performer, user)
        assert len(list(listener.notifies(timeout=0.5))) == 1


def test_only_the_queue_settles_its_escrow(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    item = c.get_queue_item(stage.enqueue(performer, user, 100))
    c.start_item(item.item_id, "s")
    before = snapshot(db_url)
    for call in (lambda: c.capture_hold(item.hold_id, "feature-capture"),
                 lambda: c.void_hold(item.hold_id, "feature-void")):
        with pytest.raises(errors.InvalidStateTransition) as refused:
            call()
        assert refused.value.field == "hold_id" and "only the queue settles it" in (refused.value.detail or "")
    assert snapshot(db_url) == before
    assert c.complete_item(item.item_id, "c").status == "FINISHED"
    other = c.place_hold(user, performer, 10, "a plain hold")  # holds of no queue item are not guarded
    assert c.void_hold(other.hold_id, "v").status == "voided"


def test_outbox_events_wait_for_the_relay(stage: Stage, db_url: str) -> None:
    c = stage.client
    performer, user = stage.performer(), stage.user()
    menu = c.create_tip_menu_item(performer, "flash", 10).tip_menu_item_id
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f"listen pgwallet_queue_{performer}")
        listener.execute("listen purchased_item_success")
        listener.execute("update pgwallet.settings set value = 'outbox' where name = 'queue_events'")
        item = stage.enqueue(performer, user)
        c.start_item(item, "s")
        c.purchase_tip_grid_item(user, performer, menu, idempotency_key="buy")
        assert list(listener.notifies(timeout=0.5)) == []  # stored, not sent
        assert c.relay_queue_events(limit=2) == 2 and c.relay_queue_events() == 2 and c.relay_queue_events() == 0
        got = [(n.channel, json.loads(n.payload).get("status")) for n in listener.notifies(timeout=0.5)]
    assert got == [(f"pgwallet_queue_{performer}", "CREATED"), (f"pgwallet_queue_{performer}", "STARTED"),
                   (f"pgwallet_queue_{performer}", "FINISHED"), ("purchased_item_success", None)]


def test_capture_hold_split_core_primitive(stage: Stage, db_url: str) -> None:
    """The one core addition: the whole hold captured (leg 1, carrying the hold) and a fee passed on
    (leg 2) in one operation; internal (the application role cannot call it)."""
    c = stage.client
    performer, user = stage.performer(), stage.user(1000)
    hold = c.place_hold(user, performer, 100, "h").hold_id
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("select pgwallet.capture_hold_split(%s, %s, 101)", (hold, stage.fees))
        assert refused.value.sqlstate == "W0001"
        conn.execute("set role pgwallet_app")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select pgwallet.capture_hold_split(%s, %s, 30)", (hold, stage.fees))
        conn.execute("reset role")
        row = conn.execute("select (s.hold).status, (s.hold).captured_amount, s.transfer_ids "
                           "from pgwallet.capture_hold_split(%s, %s, 30, 'test_split') s",
                           (hold, stage.fees)).fetchone()
        assert row is not None and row[:2] == ("captured", 100) and len(row[2]) == 2
        legs = conn.execute("select debit_account_id, credit_account_id, amount, hold_id, operation_id "
                            "from pgwallet.transfers where id = any(%s) order by id", (row[2],)).fetchall()
        with pytest.raises(psycopg.Error) as again:
            conn.execute("select pgwallet.capture_hold_split(%s, %s, 30)", (hold, stage.fees))
        assert again.value.sqlstate == "W0011"  # settled once
    assert [leg[:4] for leg in legs] == [(user, performer, 100, hold), (performer, stage.fees, 30, None)]
    assert legs[0][4] == legs[1][4]  # one operation
    assert c.get_hold(hold).settlement_transfer_id == row[2][0]
    assert (stage.balance(user), stage.balance(performer), stage.balance(stage.fees)) == (900, 70, 30)
