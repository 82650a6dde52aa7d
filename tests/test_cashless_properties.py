"""Properties of every cashless wrapper and edge handler: bad input gets a typed error naming the field,
never a 500 / SERVER_ERROR, and nothing changes (a snapshot of every table).

As in test_properties: each generated call corrupts exactly ONE argument of a call that succeeds
(``test_valid_calls_succeed`` proves it), against a festival set up once per test function.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import snapshot
from hypothesis import given
from hypothesis import strategies as st
from test_properties import (
    BAD_OBJECT,
    BIGINT_MAX,
    CURRENCIES,
    INVALID,
    JSON_VALUE,
    JUNK,
    NOT_A_STRING,
    Bad,
    Case,
    bad_choice,
    bad_int,
    bad_text,
    expect_refused,
    missing_ids,
    refusal,
    with_nul,
)

from pyapp import AsyncClient, Client
from pyapp import stripe_signature as sig
from pyapp.api import Procedures
from pyapp.cashless import (
    _CODE,
    _SESSION,
    _UID,
    CARD_STATUSES,
    PAYMENT_METHODS,
    PAYOUT_METHODS,
    STAFF_STATUSES,
    CashlessProcedures,
)
from pyapp.edge import Edge
from pyapp.errors import CardNotFound
from pyapp.procedures import Procedure

SECRET = "whsec_prop"
ITEMS = [{"sku": "beer", "name": "Beer", "quantity": 2, "unit_price": 450},
         {"sku": "water", "name": "Water", "quantity": 1, "unit_price": 200}]
TOTAL = 1100
METHODS = ("issue_card", "get_card", "lookup_card", "set_card_status", "replace_card", "card_history", "create_bar",
           "create_staff", "set_staff_status", "create_checkpoint", "get_checkpoint", "process_bar_order",
           "refund_bar_order", "get_bar_order", "process_stripe_recharge", "process_checkpoint_recharge",
           "close_drawer", "cash_out_card", "cash_out_cards", "list_bars", "list_staff", "list_checkpoints",
           "list_cards")
READ_ONLY = {"get_card", "card_history", "get_checkpoint", "get_bar_order", "list_bars", "list_staff",
             "list_checkpoints", "list_cards"}


@dataclass(frozen=True)
class Fest:
    card: int
    uid: str
    poor: int  # active, 1.00 on it
    blocked: int
    replaced: int
    cashed_out: int
    bar: str
    staff: int
    inactive_staff: int
    checkpoint: int
    order: int
    refunded_order: int
    entry: int
    used: dict[str, str]  # scope -> a key already used for another request


def build(client: Client) -> Fest:
    tag = uuid.uuid4().hex[:8].upper()

    def card(n: int, balance: int) -> int:
        made = client.issue_card(f"04{tag}{n}").card_id
        if balance:
            client.process_stripe_recharge(made, balance, f"cs_{tag}_{n}")
        return made

    main, poor, blocked, replaced, cashed = card(1, 50_000), card(2, 100), card(3, 1000), card(4, 0), card(5, 100)
    client.set_card_status(blocked, "blocked")
    client.replace_card(replaced, f"04{tag}9", f"{tag}-replace")
    client.cash_out_card(cashed, f"{tag}-cashout")
    bar = client.create_bar(f"bar-{tag}", "Bar").code
    staff = client.create_staff("Sam").id
    inactive = client.set_staff_status(client.create_staff("Ex").id, "inactive").id
    checkpoint = client.create_checkpoint("Gate").id
    order = client.process_bar_order(main, ITEMS, TOTAL, f"{tag}-order", bar).order_id
    refunded = client.process_bar_order(main, ITEMS[:1], 900, f"{tag}-order-2", bar).order_id
    client.refund_bar_order(refunded, f"{tag}-refund")
    client.process_checkpoint_recharge(main, 100, staff, checkpoint, "card", f"{tag}-cp")
    client.close_drawer(checkpoint, staff, 100, f"{tag}-drawer")
    used = {"replace_card": f"{tag}-replace", "process_bar_order": f"{tag}-order-2",
            "refund_bar_order": f"{tag}-refund",
            "process_stripe_recharge": f"cs_{tag}_1", "process_checkpoint_recharge": f"{tag}-cp",
            "close_drawer": f"{tag}-drawer", "cash_out_card": f"{tag}-cashout"}
    entry = client.card_history(main, limit=1)[0].entry_id
    return Fest(main, f"04{tag}1", poor, blocked, replaced, cashed, bar, staff, inactive, checkpoint, order, refunded,
                entry, used)


def fresh_uid() -> str:
    return "04" + uuid.uuid4().hex[:12].upper()


def valid_call(method: str, f: Fest) -> dict[str, Any]:
    key = f"prop-{uuid.uuid4()}"
    return {
        "issue_card": {"uid": fresh_uid(), "currency": "EUR", "holder": "Prop", "payout_method": "cash"},
        "get_card": {"card_id": f.card},
        "lookup_card": {"uid": f.uid, "location": "bar", "device": "t-1"},
        "set_card_status": {"card_id": f.card, "status": "blocked", "reason": "lost"},
        "replace_card": {"card_id": f.card, "new_uid": fresh_uid(), "client_request_id": key, "reason": "lost"},
        "card_history": {"card_id": f.card, "limit": 10, "before_entry_id": f.entry},
        "create_bar": {"code": f"bar-{uuid.uuid4().hex[:8]}", "name": "Bar", "currency": "EUR"},
        "create_staff": {"name": "Kim"},
        "set_staff_status": {"staff_id": f.staff, "status": "inactive"},
        "create_checkpoint": {"name": "Gate", "currency": "EUR"},
        "get_checkpoint": {"checkpoint_id": f.checkpoint},
        "list_bars": {"limit": 10, "after_id": 1},
        "list_staff": {"status": "active", "limit": 10, "after_id": 1},
        "list_checkpoints": {"limit": 10, "after_id": 1},
        "list_cards": {"status": "active", "limit": 10, "after_id": 1},
        "process_bar_order": {"card_id": f.card, "items": ITEMS, "total_amount": TOTAL, "client_request_id": key,
                              "point_of_sale": f.bar},
        "refund_bar_order": {"order_id": f.order, "client_request_id": key,
                             "items": [{"sku": "beer", "quantity": 1}]},
        "get_bar_order": {"order_id": f.order},
        "process_stripe_recharge": {"card_id": f.card, "amount": 100, "stripe_session_id": f"cs_{uuid.uuid4().hex}",
                                    "metadata": {"event": "evt"}},
        "process_checkpoint_recharge": {"card_id": f.card, "amount": 100, "staff_id": f.staff,
                                        "checkpoint_id": f.checkpoint, "payment_method": "cash",
                                        "client_request_id": key},
        "close_drawer": {"checkpoint_id": f.checkpoint, "staff_id": f.staff, "counted_amount": 0,
                         "client_request_id": key},
        "cash_out_card": {"card_id": f.card, "client_request_id": key, "fee": 0},
        "cash_out_cards": {"after_card_id": 0, "batch_size": 10, "fee": 0},
    }[method]


# -- bad values ---------------------------------------------------------------------------------------

ID = bad_int(1, BIGINT_MAX, required=True)
KEY = Bad(bad_text(1, 255, required=True))


def not_matching(pattern: Any, max_size: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=max_size).filter(lambda s: not pattern.fullmatch(s)), NOT_A_STRING, st.none())


def bad_items() -> st.SearchStrategy[Any]:
    item = st.fixed_dictionaries({"sku": st.just("beer"), "name": st.just("Beer"), "quantity": st.integers(1, 3),
                                  "unit_price": st.integers(1, 900)})
    bad_value = {"sku": st.one_of(st.just(""), st.just(" beer"), st.text(min_size=65, max_size=70), with_nul(8),
                                  NOT_A_STRING),
                 "name": st.one_of(st.just(""), st.text(min_size=201, max_size=210), with_nul(8), NOT_A_STRING),
                 "quantity": bad_int(1, 9999, required=True),
                 "unit_price": bad_int(1, 10**15 - 1, required=True)}
    broken = st.one_of(
        st.sampled_from(list(bad_value)).flatmap(lambda k: st.builds(lambda base, v: {**base, k: v}, item,
                                                                       bad_value[k])),
        st.builds(lambda base, k: {x: y for x, y in base.items() if x != k}, item, st.sampled_from(list(bad_value))),
        st.builds(lambda base: {**base, "extra": 1}, item), JUNK, st.text(max_size=4), st.none())
    return st.one_of(st.builds(lambda a, b, c: [*a, b, *c], st.lists(item, max_size=2), broken,
                               st.lists(item, max_size=2)),
                     st.just([]), st.integers(101, 105).map(lambda n: [ITEMS[0]] * n),
                     st.one_of(st.text(max_size=4), st.integers(), st.none(),
                               st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)))


def bad_refund_items() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just([]), st.text(max_size=3), st.integers(),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
        st.lists(st.one_of(JUNK, st.fixed_dictionaries({"sku": NOT_A_STRING, "quantity": st.integers(1, 2)}),
                           st.fixed_dictionaries({"sku": st.just("beer"), "quantity": bad_int(1, 9999, required=True)}),
                           st.fixed_dictionaries({"sku": st.just("beer")})), min_size=1, max_size=3),
        st.just([{"sku": "beer", "quantity": 1}, {"sku": "beer", "quantity": 1}]))


def refusals(method: str, f: Fest) -> dict[str, list[Bad]]:
    page_limit = [Bad(bad_int(1, 1000, required=True))]
    after_id = [Bad(bad_int(1, BIGINT_MAX, required=False))]
    used = refusal(st.just(f.used.get(method, "")), "DUPLICATE_REQUEST", "idempotency_key")
    card_id = [Bad(ID), refusal(missing_ids(), "CARD_NOT_FOUND")]
    currency = [Bad(bad_text(1, 16, required=False)),
                Bad(st.text(min_size=1, max_size=16).filter(lambda s: s not in CURRENCIES and "\x00" not in s))]
    staff_id = [Bad(ID), refusal(missing_ids(), "STAFF_NOT_AUTHORIZED"),
                refusal(st.just(f.inactive_staff), "STAFF_NOT_AUTHORIZED")]
    checkpoint_id = [Bad(ID), refusal(missing_ids(), "CHECKPOINT_NOT_FOUND")]
    order_id = [Bad(ID), refusal(missing_ids(), "ORDER_NOT_FOUND")]
    label = [Bad(bad_text(1, 200, required=False))]
    return {
        "issue_card": {"uid": [Bad(not_matching(_UID, 70)), refusal(st.just(f.uid), "CARD_UID_TAKEN")],
                       "currency": currency, "holder": label,
                       "payout_method": [Bad(bad_choice(PAYOUT_METHODS).filter(lambda v: v is not None))]},
        "get_card": {"card_id": card_id},
        "lookup_card": {"uid": [Bad(bad_text(1, 64, required=True))], "location": label, "device": label},
        "set_card_status": {"card_id": [*card_id, refusal(st.just(f.replaced), "INVALID_STATE_TRANSITION")],
                            "status": [Bad(bad_choice(CARD_STATUSES))], "reason": label},
        "replace_card": {"card_id": [*card_id, refusal(st.sampled_from([f.replaced, f.cashed_out]),
                                                       "INVALID_STATE_TRANSITION")],
                         "new_uid": [Bad(not_matching(_UID, 70)), refusal(st.just(f.uid), "CARD_UID_TAKEN", "uid")],
                         "client_request_id": [KEY, used], "reason": label},
        "card_history": {"card_id": card_id, "limit": [Bad(bad_int(1, 1000, required=True))],
                         "before_entry_id": [Bad(bad_int(1, BIGINT_MAX, required=False))]},
        "create_bar": {"code": [Bad(not_matching(_CODE, 70)), Bad(st.just(f.bar))],
                       "name": [Bad(bad_text(1, 200, required=True))], "currency": currency},
        "create_staff": {"name": [Bad(bad_text(1, 200, required=True))]},
        "set_staff_status": {"staff_id": [Bad(ID), refusal(missing_ids(), "STAFF_NOT_AUTHORIZED")],
                             "status": [Bad(bad_choice(STAFF_STATUSES))]},
        "create_checkpoint": {"name": [Bad(bad_text(1, 200, required=True))], "currency": currency},
        "get_checkpoint": {"checkpoint_id": checkpoint_id},
        "list_bars": {"limit": page_limit, "after_id": after_id},
        "list_staff": {"status": [Bad(bad_choice(("active", "inactive")).filter(lambda v: v is not None))],
                       "limit": page_limit, "after_id": after_id},
        "list_checkpoints": {"limit": page_limit, "after_id": after_id},
        "list_cards": {"status": [Bad(bad_choice(("active", "blocked", "cashed_out")).filter(lambda v: v is not None))],
                       "limit": page_limit, "after_id": after_id},
        "process_bar_order": {
            "card_id": [*card_id, refusal(st.sampled_from([f.blocked, f.cashed_out, f.replaced]), "CARD_BLOCKED"),
                        refusal(st.just(f.poor), "INSUFFICIENT_FUNDS", None)],
            "items": [Bad(bad_items())],
            "total_amount": [Bad(bad_int(1, BIGINT_MAX, required=True)),
                             Bad(st.integers(1, BIGINT_MAX).filter(lambda v: v != TOTAL))],
            "client_request_id": [KEY, used],
            "point_of_sale": [Bad(bad_text(1, 64, required=True)),
                              refusal(st.text(min_size=1, max_size=64).filter(
                                  lambda s: "\x00" not in s and s != f.bar), "BAR_NOT_FOUND")]},
        "refund_bar_order": {
            "order_id": [*order_id, refusal(st.just(f.refunded_order), "INVALID_STATE_TRANSITION")],
            "client_request_id": [KEY, used],
            "items": [Bad(bad_refund_items()),
                      Bad(st.builds(lambda q: [{"sku": "beer", "quantity": q}], st.integers(3, 9999))),
                      Bad(st.builds(lambda s: [{"sku": s, "quantity": 1}],
                                    st.text(max_size=8).filter(
                                        lambda s: s not in ("beer", "water") and "\x00" not in s)))]},
        "get_bar_order": {"order_id": order_id},
        "process_stripe_recharge": {
            "card_id": [*card_id, refusal(st.just(f.cashed_out), "INVALID_STATE_TRANSITION")],
            "amount": [Bad(bad_int(1, BIGINT_MAX, required=True))],
            "stripe_session_id": [Bad(not_matching(_SESSION, 260)), used],
            "metadata": [Bad(BAD_OBJECT)]},
        "process_checkpoint_recharge": {
            "card_id": [*card_id, refusal(st.sampled_from([f.blocked, f.cashed_out, f.replaced]), "CARD_BLOCKED")],
            "amount": [Bad(bad_int(1, BIGINT_MAX, required=True)),
                       refusal(st.one_of(st.integers(1, 99), st.integers(50_001, BIGINT_MAX)), "LIMIT_EXCEEDED")],
            "staff_id": staff_id, "checkpoint_id": checkpoint_id,
            "payment_method": [Bad(bad_choice(PAYMENT_METHODS))], "client_request_id": [KEY, used]},
        "close_drawer": {"checkpoint_id": checkpoint_id, "staff_id": staff_id,
                         "counted_amount": [Bad(bad_int(0, BIGINT_MAX, required=True))],
                         "client_request_id": [KEY, used]},
        "cash_out_card": {"card_id": [*card_id, refusal(st.sampled_from([f.cashed_out, f.replaced]),
                                                        "INVALID_STATE_TRANSITION")],
                          "client_request_id": [KEY, used], "fee": [Bad(bad_int(0, BIGINT_MAX, required=False))]},
        "cash_out_cards": {"after_card_id": [Bad(bad_int(0, BIGINT_MAX, required=True))],
                           "batch_size": [Bad(bad_int(1, 10_000, required=True))],
                           "fee": [Bad(bad_int(0, BIGINT_MAX, required=False))]},
    }[method]


def cases(method: str, f: Fest) -> st.SearchStrategy[Case]:
    bads = refusals(method, f)

    def corrupt(arg: str, bad: Bad, value: Any) -> Case:
        return Case(method, {**valid_call(method, f), arg: value}, arg, bad.codes,
                    arg if bad.field == "" else bad.field)

    def for_arg(arg: str) -> st.SearchStrategy[Case]:
        return st.sampled_from(bads[arg]).flatmap(lambda bad: bad.values.map(lambda v: corrupt(arg, bad, v)))

    unknown = st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda name: name not in bads).map(
        lambda name: Case(method, {**valid_call(method, f), name: 1}, "<unknown keyword>", INVALID, "arguments"))
    return st.sampled_from([*bads, ""]).flatmap(lambda arg: for_arg(arg) if arg else unknown)


@pytest.fixture
def fest(client: Client) -> Fest:
    return build(client)


@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_one_bad_argument_is_refused_and_changes_nothing(db_url: str, client: Client, fest: Fest, method: str,
                                                         data: st.DataObject) -> None:
    case = data.draw(cases(method, fest), label="case")
    before = snapshot(db_url)
    expect_refused(case, lambda: getattr(client, case.method)(**case.kwargs))
    assert snapshot(db_url) == before


@pytest.fixture
def aio(db_url: str) -> Iterator[tuple[asyncio.Runner, AsyncClient]]:
    with asyncio.Runner() as runner:
        aclient = AsyncClient(db_url, max_size=2)
        runner.run(aclient.open())
        try:
            yield runner, aclient
        finally:
            runner.run(aclient.close())


@pytest.mark.parametrize("method", ["process_bar_order", "process_checkpoint_recharge", "lookup_card"])
@given(data=st.data())
def test_async_client_refuses_like_the_sync_client(db_url: str, client: Client, fest: Fest,
                                                   aio: tuple[asyncio.Runner, AsyncClient], method: str,
                                                   data: st.DataObject) -> None:
    case = data.draw(cases(method, fest), label="case")
    runner, aclient = aio
    before = snapshot(db_url)
    sync_error = expect_refused(case, lambda: getattr(client, case.method)(**case.kwargs))
    async_error = expect_refused(case, lambda: runner.run(getattr(aclient, case.method)(**case.kwargs)))
    assert type(async_error) is type(sync_error)
    assert (async_error.field, async_error.detail) == (sync_error.field, sync_error.detail)
    assert snapshot(db_url) == before


def test_unknown_uid_is_card_not_found_and_logged(client: Client, fest: Fest, db_url: str) -> None:
    """The one refusal that changes something: the scan log keeps the unknown uid (that is its purpose)."""
    before = snapshot(db_url)
    with pytest.raises(CardNotFound) as raised:
        client.lookup_card("04NEVERSEEN")
    assert raised.value.field == "uid"
    changed = [a for a, b in zip(snapshot(db_url), before, strict=True) if a != b]
    assert [table for table, _ in changed] == ["card_scans"]


def test_every_cashless_procedure_is_covered() -> None:
    declared = {name for name, value in vars(CashlessProcedures).items() if isinstance(value, Procedure)}
    assert declared - {"cards_to_cash_out"} == set(METHODS)
    assert all(getattr(Procedures, name) is getattr(CashlessProcedures, name) for name in declared)


def test_valid_calls_succeed(db_url: str, client: Client) -> None:
    for method in METHODS:
        f = build(client)
        before = snapshot(db_url)
        getattr(client, method)(**valid_call(method, f))
        assert (snapshot(db_url) == before) == (method in READ_ONLY), method


# -- edge handlers ------------------------------------------------------------------------------------

EDGE_JSON = st.one_of(JSON_VALUE, st.decimals(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70))


def edge_bodies(f: Fest) -> dict[str, tuple[dict[str, Any], dict[str, st.SearchStrategy[Any]]]]:
    """Per handler: a body that succeeds, and per field values that must be refused."""
    not_a_card = st.one_of(st.integers(max_value=0), st.integers(10**12, 2**70), st.text(max_size=6), st.booleans(),
                           st.none(), st.lists(st.integers(), max_size=2), st.decimals(allow_nan=False).filter(
                               lambda d: d != d.to_integral_value()))
    not_a_key = st.one_of(st.just(""), st.text(min_size=256, max_size=260), st.integers(), st.booleans(), st.none(),
                          st.lists(st.text(max_size=2), max_size=2))
    bad_amount = st.one_of(st.text(max_size=6).filter(lambda s: not s.strip().replace(".", "", 1).isdigit()),
                           st.sampled_from(["0", "0.00", "-1", "1.001", "1e3", "NaN", " ", "1,00"]), st.booleans(),
                           st.none(), st.integers(max_value=0), st.lists(st.integers(), max_size=1), st.floats())
    order = {"card_id": f.card, "items": [{**ITEMS[0], "unit_price": "4.50"}, {**ITEMS[1], "unit_price": "2.00"}],
             "total_amount": "11.00", "point_of_sale": f.bar}
    recharge = {"card_id": f.card, "amount": "1.00", "staff_id": f.staff, "checkpoint_id": f.checkpoint,
                "payment_method": "card"}
    return {
        "process_bar_order": (order, {
            "card_id": not_a_card, "total_amount": st.one_of(bad_amount, st.just("11.01")),
            "items": st.one_of(st.lists(EDGE_JSON, max_size=3), EDGE_JSON.filter(lambda v: not isinstance(v, list))),
            "point_of_sale": st.one_of(st.just(""), st.integers(), st.none(), st.text(min_size=65, max_size=70),
                                       st.text(min_size=1, max_size=8).filter(lambda s: s != f.bar)),
            "client_request_id": not_a_key}),
        "process_checkpoint_recharge": (recharge, {
            "card_id": not_a_card, "amount": st.one_of(bad_amount, st.just("600.00"), st.just("0.99")),
            "staff_id": st.one_of(not_a_card, st.just(f.inactive_staff)), "checkpoint_id": not_a_card,
            "payment_method": st.one_of(EDGE_JSON.filter(lambda v: v not in PAYMENT_METHODS)),
            "client_request_id": not_a_key}),
    }


@pytest.mark.parametrize("name", ["process_bar_order", "process_checkpoint_recharge"])
@given(data=st.data())
def test_edge_handlers_refuse_bad_bodies_with_4xx_and_change_nothing(db_url: str, client: Client, fest: Fest,
                                                                     name: str, data: st.DataObject) -> None:
    edge = Edge(client)
    valid, bad = edge_bodies(fest)[name]
    choice = data.draw(st.sampled_from([*bad, "<drop>", "<raw>"]), label="field")
    body: Any
    if choice == "<drop>":
        dropped = data.draw(st.sampled_from(sorted(bad)), label="dropped")
        body = {k: v for k, v in valid.items() if k != dropped}
    elif choice == "<raw>":
        body = data.draw(st.one_of(st.binary(max_size=40), st.text(max_size=20),
                                   st.just(b'{"card_id": 1, "items": [], "total_amount": 1e999}')), label="raw")
    else:
        body = {**valid, choice: data.draw(bad[choice], label=choice)}
    if isinstance(body, dict):
        body = {**body, "client_request_id": body.get("client_request_id", f"edge-{uuid.uuid4()}")} \
            if choice != "<drop>" or dropped != "client_request_id" else body
        body = json.dumps(body, default=str).encode() if data.draw(st.booleans(), label="as bytes") else body
    before = snapshot(db_url)
    status, out = edge.handle(name, body, {"X-Request-Id": "prop"})
    assert 400 <= status < 500, out
    assert out["error"]["code"] not in ("SERVER_ERROR", "DATABASE_ERROR") and out["error"]["request_id"] == "prop"
    assert snapshot(db_url) == before


@given(data=st.data())
def test_webhook_never_trusts_and_never_fails(db_url: str, client: Client, fest: Fest, data: st.DataObject) -> None:
    edge = Edge(client, stripe_secret=SECRET)
    session: dict[str, Any] = {"id": f"cs_{uuid.uuid4().hex}", "amount_total": 500, "currency": "eur",
                               "payment_status": "paid", "metadata": {"card_id": str(fest.card)}}
    kind = data.draw(st.sampled_from(["forged", "unsigned_junk", "bad_field"]), label="kind")
    headers: dict[str, str]
    if kind == "bad_field":
        field = data.draw(st.sampled_from(["id", "amount_total", "currency", "metadata", "card_id"]), label="field")
        bad = {"id": st.one_of(st.integers(), st.none(),
                               st.text(max_size=10).filter(lambda s: not _SESSION.fullmatch(s))),
               "amount_total": st.one_of(st.integers(max_value=0), st.text(max_size=4), st.none(), st.floats(),
                                         st.integers(min_value=2**63)),
               "currency": st.one_of(st.text(max_size=4).filter(lambda s: s.upper() != "EUR"), st.integers(),
                                     st.none()),
               "metadata": st.one_of(st.none(), st.integers(), st.text(max_size=3),
                                     st.lists(st.integers(), max_size=2)),
               "card_id": st.one_of(st.integers(10**12, 10**13).map(str), st.text(max_size=5).filter(
                   lambda s: not (s.isascii() and s.isdigit())), st.integers(max_value=0), st.none(),
                   st.floats())}[field]
        value = data.draw(bad, label="value")
        if field == "card_id":
            session["metadata"] = {"card_id": value}
        else:
            session[field] = value
        payload = json.dumps({"id": "evt", "type": "checkout.session.completed", "data": {"object": session}},
                             default=str).encode()
        headers = {"Stripe-Signature": sig.header(payload, SECRET)}
    else:
        payload = data.draw(st.one_of(st.binary(max_size=60), st.just(json.dumps(
            {"type": "checkout.session.completed", "data": {"object": session}}).encode())), label="payload")
        header = data.draw(st.one_of(
            st.text(max_size=80), st.just(f"t={int(time.time())},v1={'a' * 64}"),
            st.builds(lambda secret: sig.header(payload, secret), st.text(min_size=1, max_size=10).filter(
                lambda s: s != SECRET)),
            st.builds(lambda age: sig.header(payload, SECRET, int(time.time()) - age), st.integers(301, 10**6))),
            label="header")
        headers = {} if kind == "unsigned_junk" else {"Stripe-Signature": header}
    before = snapshot(db_url)
    status, out = edge.handle("stripe_webhook", payload, headers)
    assert status < 500, out
    if status == 200:
        assert out["data"]["ignored"] is True, out  # a session that is not paid, or metadata without a card
    else:
        assert 400 <= status < 500 and out["error"]["code"] not in ("SERVER_ERROR", "DATABASE_ERROR")
    assert snapshot(db_url) == before



