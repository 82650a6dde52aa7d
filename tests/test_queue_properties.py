"""Properties of every queue and tip-grid wrapper: bad input gets a typed error naming the field, and
changes nothing (``snapshot`` of every table is unchanged).

As in ``test_properties``: each generated call corrupts exactly ONE argument of an otherwise valid call
against a world set up once per test, and ``test_valid_queue_calls_succeed`` proves the uncorrupted calls
do succeed, so each refusal is caused by the corrupted argument.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import OWNER, snapshot, with_acting_user
from hypothesis import given
from hypothesis import strategies as st
from test_properties import (
    BAD_FLAG,
    BIGINT_MAX,
    ID,
    INT_MAX,
    INVALID,
    KEY,
    METADATA,
    NOT_A_STRING,
    Bad,
    Case,
    bad_choice,
    bad_int,
    bad_text,
    expect_refused,
    missing_ids,
    refusal,
)

from pyapp import AsyncClient, Client
from pyapp.api import Procedures
from pyapp.procedures import Procedure
from pyapp.queue import EXECUTION_MODES, QUEUE_MODES, QueueProcedures

METHODS = tuple(name for name, value in vars(QueueProcedures).items() if isinstance(value, Procedure))
READ_ONLY = {"get_queue_item", "get_queue_position", "get_queue_depth", "get_performer_queue",
             "get_user_queue_history", "get_tip_menu", "get_purchased_item", "expire_stale_queue_items",
             "relay_queue_events"}
FEATURE = re.compile(r"[a-z][a-z0-9_]{0,62}")
BAD_ITEM_IDS = st.one_of(
    st.just([]), st.just(list(range(1, 102))), st.none(), st.integers(), st.text(max_size=3),
    st.lists(st.integers(max_value=0), min_size=1, max_size=3), st.lists(st.booleans(), min_size=1, max_size=2),
    st.lists(st.text(max_size=2), min_size=1, max_size=2),
    st.lists(st.integers(min_value=2**63), min_size=1, max_size=2),
    st.integers(1, 10**6).map(lambda n: [n, n]))
USED_KEY_METHODS = ("create_queue_item", "start_item", "complete_item", "complete_items", "abandon_item",
                    "refund_item", "purchase_tip_grid_item")


@dataclass(frozen=True)
class World:
    fees: int  # TOKEN fee collector
    eur_fees: int
    performer: int  # queue with a STARTED item (started) and a CREATED one behind it (blocked)
    other: int  # queue with one CREATED item (created)
    unconfigured: int  # a performer account without a queue
    full: int  # queue at its limit (max_open 1)
    user: int  # TOKEN wallet with tokens
    available: int
    eur: int
    frozen: int
    closed: int
    started: int
    blocked: int
    created: int
    settled: tuple[int, ...]  # finished, abandoned, refunded items
    menu: int  # active tip menu item of performer
    inactive_menu: int
    other_menu: int  # of the other performer
    purchase: int
    used_keys: dict[str, str]


def build_world(c: Client) -> World:
    tag = uuid.uuid4().hex[:8]
    keys = {name: f"{tag}-{name}" for name in USED_KEY_METHODS}
    mint = c.open_system_account("TOKEN", "system").id
    fees = c.open_account("TOKEN", "fees").id
    eur_fees = c.open_account("EUR", "fees").id
    performer, other, unconfigured, full = (c.open_account("TOKEN", "performer").id for _ in range(4))
    for p in (performer, other):
        c.configure_performer_queue(p, fees)
    c.configure_performer_queue(full, fees, max_open=1)
    user = c.open_account("TOKEN", "user_wallet", owner=f"{tag}-user").id
    c.fund_account(mint, user, 10_000, f"{tag}-fund")
    frozen, closed = (c.open_account("TOKEN", "user_wallet", owner=f"{tag}-{n}").id for n in range(2))
    c.set_account_status(frozen, "frozen")
    c.set_account_status(closed, "closed")

    def item(p: int, key: str | None = None) -> int:
        return c.create_queue_item(p, user, 10, "t", key or f"{tag}-{uuid.uuid4()}").item_id

    finished = item(performer, keys["create_queue_item"])
    c.start_item(finished, keys["start_item"])
    c.complete_item(finished, keys["complete_item"])
    abandoned, refunded = item(performer), item(performer)
    c.abandon_item(abandoned, "r", keys["abandon_item"])
    c.refund_item(refunded, keys["refund_item"])
    started = item(performer)
    c.start_item(started, f"{tag}-start")
    blocked, created = item(performer), item(other)
    c.complete_items(other, [item(other)], keys["complete_items"])
    item(full)
    menu = c.create_tip_menu_item(performer, "flash", 10).tip_menu_item_id
    inactive_menu = c.create_tip_menu_item(performer, "hidden", 10, active=False).tip_menu_item_id
    other_menu = c.create_tip_menu_item(other, "theirs", 10).tip_menu_item_id
    purchase = c.purchase_tip_grid_item(user, performer, menu, idempotency_key=keys["purchase_tip_grid_item"])
    return World(fees, eur_fees, performer, other, unconfigured, full, user, c.get_account(user).available,
                 c.open_account("EUR", "card", owner=f"{tag}-eur").id, frozen, closed, started, blocked, created,
                 (finished, abandoned, refunded), menu, inactive_menu, other_menu, purchase.purchased_item_id, keys)


def valid_call(method: str, w: World) -> dict[str, Any]:
    key = f"prop-{uuid.uuid4()}"
    return {
        "configure_performer_queue": {"performer_id": w.performer, "fee_account_id": w.fees, "fee_bps": 1000,
                                      "max_open": 40, "start_timeout_seconds": 60, "grace_percent": 150},
        "create_queue_item": {"performer_id": w.performer, "user_id": w.user, "tokens": 5, "title": "t",
                              "idempotency_key": key, "queue_mode": "ON", "source_feature": "chip_menu",
                              "source_event_id": "evt", "description": "d", "expected_duration_seconds": 30,
                              "metadata": {"n": 1}, "acting_user": OWNER},
        "start_item": {"item_id": w.created, "idempotency_key": key},
        "complete_item": {"item_id": w.started, "idempotency_key": key},
        "complete_items": {"performer_id": w.performer, "item_ids": [w.started, w.blocked], "idempotency_key": key},
        "abandon_item": {"item_id": w.created, "reason": "r", "idempotency_key": key},
        "refund_item": {"item_id": w.created, "idempotency_key": key, "reason": "r"},
        "expire_stale_queue_items": {"limit": 10},
        "relay_queue_events": {"limit": 10},
        "get_queue_item": {"item_id": w.created},
        "get_queue_position": {"item_id": w.created},
        "get_queue_depth": {"performer_id": w.performer},
        "get_performer_queue": {"performer_id": w.performer},
        "get_user_queue_history": {"user_id": w.user, "limit": 10, "offset": 0},
        "create_tip_menu_item": {"performer_id": w.performer, "title": "t", "price": 10,
                                 "expected_duration_seconds": 30, "active": True},
        "set_tip_menu_item_active": {"tip_menu_item_id": w.menu, "active": False},
        "get_tip_menu": {"performer_id": w.performer},
        "purchase_tip_grid_item": {"user_id": w.user, "performer_id": w.performer, "tip_menu_item_id": w.menu,
                                   "execution_mode": "QUEUED", "idempotency_key": key, "acting_user": OWNER},
        "get_purchased_item": {"purchased_item_id": w.purchase},
    }[method]


def bad_mode(choices: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Not one of the (upper-case) choices; None is no bad value: for these arguments it means the default."""
    return st.one_of(bad_choice(choices), st.sampled_from(choices).map(str.lower)).filter(
        lambda v: v is not None and not (isinstance(v, str) and v in choices))


def bad_int_from_0(hi: int, *, required: bool) -> st.SearchStrategy[Any]:
    """``bad_int`` for a range starting at 0 (whose fixed samples include 0, a valid value here)."""
    return bad_int(0, hi, required=required).filter(lambda v: not (type(v) is int and 0 <= v <= hi))


BAD_FEATURE = st.one_of(NOT_A_STRING, st.text(max_size=70).filter(lambda s: not FEATURE.fullmatch(s)))


def refusals(method: str, w: World) -> dict[str, list[Bad]]:
    """For each argument of ``method``: values that must be refused, with the expected code and field."""
    used_key = refusal(st.just(w.used_keys.get(method, "")), "DUPLICATE_REQUEST")
    key = [Bad(KEY), used_key]
    item = [Bad(ID), refusal(missing_ids(), "NOT_FOUND")]
    settled = refusal(st.sampled_from(w.settled), "INVALID_STATE_TRANSITION")
    no_queue = [Bad(ID), refusal(missing_ids(), "NOT_FOUND"), refusal(st.just(w.unconfigured), "NOT_FOUND")]
    user = [Bad(ID), refusal(missing_ids(), "ACCOUNT_NOT_FOUND"), refusal(st.just(w.frozen), "ACCOUNT_FROZEN"),
            refusal(st.just(w.closed), "ACCOUNT_CLOSED"), refusal(st.just(w.eur), "CURRENCY_MISMATCH"),
            refusal(st.sampled_from([w.performer, w.fees]), "FORBIDDEN")]  # nobody's wallet
    acting_user = [Bad(bad_text(1, 200, required=True).filter(lambda v: v != OWNER)),
                   refusal(st.just("mallory"), "FORBIDDEN", "user_id")]
    return {
        "configure_performer_queue": {
            "performer_id": [Bad(ID), refusal(missing_ids(), "ACCOUNT_NOT_FOUND"),
                             refusal(st.just(w.fees), "INVALID_REQUEST")],
            "fee_account_id": [Bad(ID), refusal(missing_ids(), "ACCOUNT_NOT_FOUND"),
                               refusal(st.just(w.eur_fees), "CURRENCY_MISMATCH"),
                               refusal(st.just(w.performer), "INVALID_REQUEST")],
            "fee_bps": [Bad(bad_int_from_0(10_000, required=False))],
            "max_open": [Bad(bad_int(1, 10_000, required=False))],
            "start_timeout_seconds": [Bad(bad_int(1, INT_MAX, required=False))],
            "grace_percent": [Bad(bad_int(100, 100_000, required=False))],
        },
        "create_queue_item": {
            "performer_id": [*no_queue, refusal(st.just(w.full), "QUEUE_FULL"),
                             refusal(st.just(w.user), "INVALID_REQUEST", "user_id")],
            "user_id": user,
            "tokens": [Bad(bad_int(1, BIGINT_MAX, required=True)),
                       refusal(st.integers(w.available + 1, BIGINT_MAX), "INSUFFICIENT_FUNDS", "user_id")],
            "title": [Bad(bad_text(1, 200, required=True))],
            "idempotency_key": key,
            "queue_mode": [Bad(bad_mode(QUEUE_MODES))],
            "source_feature": [Bad(BAD_FEATURE)],
            "source_event_id": [Bad(bad_text(1, 255, required=False))],
            "description": [Bad(bad_text(0, 2000, required=False))],
            "expected_duration_seconds": [Bad(bad_int(1, INT_MAX, required=False))],
            "metadata": [METADATA],
            "acting_user": acting_user,
        },
        "start_item": {
            "item_id": [*item, settled, refusal(st.just(w.started), "INVALID_STATE_TRANSITION"),
                        refusal(st.just(w.blocked), "ALREADY_PROCESSING")],
            "idempotency_key": key,
        },
        "complete_item": {
            "item_id": [*item, settled, refusal(st.sampled_from([w.created, w.blocked]), "INVALID_STATE_TRANSITION")],
            "idempotency_key": key,
        },
        "complete_items": {
            "performer_id": [Bad(ID), refusal(st.one_of(missing_ids(), st.just(w.unconfigured)), "NOT_FOUND"),
                             refusal(st.just(w.other), "INVALID_REQUEST", "item_ids")],
            "item_ids": [Bad(BAD_ITEM_IDS),
                         refusal(st.sampled_from(w.settled).map(lambda done: [w.started, done]),
                                 "INVALID_STATE_TRANSITION"),
                         refusal(missing_ids().map(lambda gone: [w.started, gone]), "NOT_FOUND"),
                         refusal(st.just([w.blocked, w.created]), "INVALID_REQUEST")],  # another performer's
            "idempotency_key": key,
        },
        "abandon_item": {"item_id": [*item, settled], "reason": [Bad(bad_text(1, 500, required=True))],
                         "idempotency_key": key},
        # an abandoned item may still be refunded (ABANDONED -> REFUNDED): the finished and refunded ones may not
        "refund_item": {"item_id": [*item, refusal(st.sampled_from([w.settled[0], w.settled[2]]),
                                                   "INVALID_STATE_TRANSITION")], "idempotency_key": key,
                        "reason": [Bad(bad_text(1, 500, required=False))]},
        "expire_stale_queue_items": {"limit": [Bad(bad_int(1, 100_000, required=True))]},
        "relay_queue_events": {"limit": [Bad(bad_int(1, 100_000, required=True))]},
        "get_queue_item": {"item_id": item},
        "get_queue_position": {"item_id": item},
        "get_queue_depth": {"performer_id": no_queue},
        "get_performer_queue": {"performer_id": no_queue},
        "get_user_queue_history": {
            "user_id": [Bad(ID), refusal(missing_ids(), "ACCOUNT_NOT_FOUND")],
            "limit": [Bad(bad_int(1, 1000, required=True))],
            "offset": [Bad(bad_int_from_0(1_000_000, required=True))],
        },
        "create_tip_menu_item": {
            "performer_id": no_queue,
            "title": [Bad(bad_text(1, 200, required=True))],
            "price": [Bad(bad_int(1, BIGINT_MAX, required=True))],
            "expected_duration_seconds": [Bad(bad_int(1, INT_MAX, required=False))],
            "active": [Bad(BAD_FLAG)],
        },
        "set_tip_menu_item_active": {
            "tip_menu_item_id": [Bad(ID), refusal(missing_ids(), "NOT_FOUND")],
            "active": [Bad(st.one_of(BAD_FLAG, st.none()))],
        },
        "get_tip_menu": {"performer_id": no_queue},
        "purchase_tip_grid_item": {
            "user_id": user,
            "performer_id": [Bad(ID), refusal(st.one_of(missing_ids(), st.just(w.other)), "INVALID_REQUEST",
                                              "tip_menu_item_id")],
            "tip_menu_item_id": [Bad(ID), refusal(missing_ids(), "NOT_FOUND"),
                                 refusal(st.sampled_from([w.inactive_menu, w.other_menu]), "INVALID_REQUEST")],
            "execution_mode": [Bad(bad_mode(EXECUTION_MODES))],
            "idempotency_key": key,
            "acting_user": acting_user,
        },
        "get_purchased_item": {"purchased_item_id": [Bad(ID), refusal(missing_ids(), "NOT_FOUND")]},
    }[method]


def cases(method: str, w: World) -> st.SearchStrategy[Case]:
    """An argument (or an unknown keyword) picked evenly, then one of its kinds of bad value."""
    bads = refusals(method, w)

    def corrupt(arg: str, bad: Bad, value: Any) -> Case:
        return Case(method, {**valid_call(method, w), arg: value}, arg, bad.codes,
                    arg if bad.field == "" else bad.field)

    def for_arg(arg: str) -> st.SearchStrategy[Case]:
        return st.sampled_from(bads[arg]).flatmap(lambda bad: bad.values.map(lambda v: corrupt(arg, bad, v)))

    unknown_keyword = st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda name: name not in bads).map(
        lambda name: Case(method, {**valid_call(method, w), name: 1}, "<unknown keyword>", INVALID, "arguments"))
    return st.sampled_from([*bads, ""]).flatmap(lambda arg: for_arg(arg) if arg else unknown_keyword)


@pytest.fixture
def world(client: Client) -> World:
    return build_world(client)


@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_one_bad_queue_argument_is_refused_and_changes_nothing(db_url: str, client: Client, world: World,
                                                               method: str, data: st.DataObject) -> None:
    case = data.draw(cases(method, world), label="case")
    before = snapshot(db_url)
    expect_refused(case, lambda: getattr(client, case.method)(**case.kwargs))
    assert snapshot(db_url) == before


@pytest.mark.parametrize("method", ["create_queue_item", "start_item", "purchase_tip_grid_item"])
@given(data=st.data())
def test_async_client_refuses_queue_calls_like_the_sync_client(db_url: str, client: Client, world: World,
                                                               method: str, data: st.DataObject) -> None:
    case = data.draw(cases(method, world), label="case")
    kwargs = with_acting_user(db_url, case.method, (), case.kwargs)
    before = snapshot(db_url)
    sync_error = expect_refused(case, lambda: getattr(client, case.method)(**kwargs))

    async def call() -> Any:
        async with AsyncClient(db_url, max_size=1) as aclient:
            return await getattr(aclient, case.method)(**kwargs)

    async_error = expect_refused(case, lambda: asyncio.run(call()))
    assert type(async_error) is type(sync_error)
    assert (async_error.field, async_error.detail) == (sync_error.field, sync_error.detail)
    assert snapshot(db_url) == before


def test_every_queue_procedure_is_covered(client: Client) -> None:
    w = build_world(client)
    assert set(METHODS) == {name for name in vars(QueueProcedures) if not name.startswith("_")}
    assert all(set(refusals(m, w)) == set(valid_call(m, w)) for m in METHODS)
    assert all(getattr(Procedures, name) is getattr(QueueProcedures, name) for name in METHODS)
    for m in METHODS:  # every argument of every spec has its refusals
        assert set(refusals(m, w)) == {p.name for p in getattr(QueueProcedures, m).spec.params}, m


def test_valid_queue_calls_succeed(db_url: str, client: Client) -> None:
    for method in METHODS:
        w = build_world(client)
        before = snapshot(db_url)
        getattr(client, method)(**valid_call(method, w))
        assert (snapshot(db_url) == before) == (method in READ_ONLY), method
