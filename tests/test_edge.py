"""Edge handlers: ``(body, headers) -> (status, json)`` with request id, timing and the error envelope;
the Stripe webhook's signature (forged, stale, malformed: 400 and nothing changes) and redeliveries."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import snapshot

from pyapp import Client
from pyapp import stripe_signature as sig
from pyapp.edge import HANDLERS, Edge, Request, handler

SECRET = "whsec_test_secret"


@pytest.fixture
def edge(client: Client) -> Edge:
    return Edge(client, stripe_secret=SECRET)


@pytest.fixture
def setup(client: Client) -> dict[str, Any]:
    card = client.issue_card("04EDGE01")
    client.process_stripe_recharge(card.card_id, 5000, "cs_setup")
    staff = client.create_staff("Edge staff")
    checkpoint = client.create_checkpoint("Edge gate")
    client.create_bar("edge-bar", "Edge bar")
    return {"card": card.card_id, "staff": staff.id, "checkpoint": checkpoint.id, "bar": "edge-bar"}


def order_body(setup: dict[str, Any], request_id: str = "t1-0001") -> dict[str, Any]:
    return {"card_id": setup["card"], "point_of_sale": setup["bar"], "client_request_id": request_id,
            "items": [{"sku": "beer", "name": "Beer", "quantity": 2, "unit_price": "4.50"},
                      {"sku": "water", "name": "Water", "quantity": 1, "unit_price": "2"}],
            "total_amount": "11.00"}


def event(card_id: Any, session: str = "cs_live_1", amount: int = 2500, kind: str = "checkout.session.completed",
          **extra: Any) -> bytes:
    obj = {"id": session, "object": "checkout.session", "amount_total": amount, "currency": "eur",
           "payment_status": "paid", "metadata": {"card_id": str(card_id)}, **extra}
    return json.dumps({"id": "evt_1", "type": kind, "data": {"object": obj}}).encode()


def signed(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sig.header(payload, secret, timestamp)}


def test_bar_order_from_raw_json_with_decimal_amounts(edge: Edge, setup: dict[str, Any]) -> None:
    raw = json.dumps(order_body(setup)).replace('"11.00"', "11.00").encode()  # a JSON number, read exactly
    status, body = edge.handle("process_bar_order", raw, {"X-Request-Id": "req-42"})
    assert status == 200, body
    assert body["request_id"] == "req-42" and body["processing_ms"] >= 0
    assert body["data"]["total_amount"] == "11.00" and body["data"]["card_balance"] == "39.00"
    again_status, again = edge.handle("process_bar_order", order_body(setup), {})
    assert again_status == 200 and again["data"]["replayed"] is True
    assert again["data"]["order_id"] == body["data"]["order_id"] and len(again["request_id"]) == 32


def test_errors_use_the_envelope(edge: Edge, setup: dict[str, Any], db_url: str) -> None:
    before = snapshot(db_url)
    status, body = edge.handle("process_bar_order", {**order_body(setup), "total_amount": "11.01"},
                               {"x-request-id": "r-1"})
    assert status == 400
    assert body["error"]["code"] == "INVALID_REQUEST" and body["error"]["field"] == "total_amount"
    assert body["error"]["request_id"] == body["request_id"] == "r-1"
    assert set(body["error"]) >= {"code", "message", "detail", "request_id"}
    for bad, field in [({**order_body(setup), "total_amount": 11.0}, "total_amount"),
                       ({**order_body(setup), "card_id": "1"}, "card_id"), (b"{not json", "body"),
                       (b"[1, 2]", "body"), ("\ud800", "body"), (b"\xff", "body"), (None, "body"),
                       (b'{"card_id": NaN}', "body")]:
        status, body = edge.handle("process_bar_order", bad, {})
        assert (status, body["error"]["field"]) == (400, field), (bad, body)
    status, body = edge.handle("process_bar_order", {**order_body(setup), "card_id": 10**12}, {})
    assert (status, body["error"]["code"]) == (404, "CARD_NOT_FOUND")
    assert snapshot(db_url) == before
    assert edge.handle("no_such_handler", {}, {})[0] == 400


def test_checkpoint_recharge_handler(edge: Edge, setup: dict[str, Any]) -> None:
    body = {"card_id": setup["card"], "amount": "20.00", "staff_id": setup["staff"],
            "checkpoint_id": setup["checkpoint"], "payment_method": "cash", "client_request_id": "cp-edge-1"}
    status, out = edge.handle("process_checkpoint_recharge", body, {})
    assert status == 200 and out["data"]["card_balance"] == "70.00" and out["data"]["method"] == "cash"
    status, out = edge.handle("process_checkpoint_recharge", {**body, "amount": "600", "client_request_id": "x"}, {})
    assert (status, out["error"]["code"]) == (422, "LIMIT_EXCEEDED")


def test_webhook_credits_the_card_once(edge: Edge, setup: dict[str, Any], client: Client) -> None:
    payload = event(setup["card"])
    status, body = edge.handle("stripe_webhook", payload, signed(payload))
    assert status == 200 and body["data"]["recharge"]["amount"] == "25.00" and not body["data"]["ignored"]
    status, again = edge.handle("stripe_webhook", payload, signed(payload))
    assert status == 200 and again["data"]["recharge"]["replayed"] is True
    assert client.get_card(setup["card"]).balance == 7500


def test_webhook_delivered_20_times_concurrently_is_one_recharge(edge: Edge, setup: dict[str, Any],
                                                                 client: Client, db_url: str) -> None:
    payload = event(setup["card"], session="cs_storm")
    with Client(db_url, max_size=20) as pool_client, ThreadPoolExecutor(20) as pool:
        storm_edge = Edge(pool_client, stripe_secret=SECRET)
        results = list(pool.map(lambda _: storm_edge.handle("stripe_webhook", payload, signed(payload)), range(20)))
    assert {status for status, _ in results} == {200}
    recharges = [body["data"]["recharge"] for _, body in results]
    assert sum(not r["replayed"] for r in recharges) == 1
    assert len({r["recharge_id"] for r in recharges}) == 1
    assert client.get_card(setup["card"]).balance == 7500


@pytest.mark.parametrize("case", ["forged", "wrong_secret", "stale", "no_header", "garbage_header",
                                  "tampered", "malformed_body", "parsed_body"])
def test_webhook_refusals_are_400_and_change_nothing(edge: Edge, setup: dict[str, Any], db_url: str,
                                                     case: str) -> None:
    before = snapshot(db_url)  # first: the signed timestamps below must not age while it runs
    payload = event(setup["card"], session="cs_refused")
    now = int(time.time())
    body: Any = payload
    headers: dict[str, str] = {}
    if case == "forged":
        headers = {"Stripe-Signature": f"t={now},v1={'0' * 64}"}
    elif case == "wrong_secret":
        headers = signed(payload, "whsec_other")
    elif case == "stale":
        headers = signed(payload, timestamp=now - 301)
    elif case == "garbage_header":
        headers = {"Stripe-Signature": "v1=abc,t=yesterday"}
    elif case == "tampered":
        headers = signed(payload)
        body = payload.replace(b"2500", b"9500")
    elif case == "malformed_body":
        body = b'{"type": "checkout.session.completed", "data": '
        headers = signed(body)
    elif case == "parsed_body":
        body = json.loads(payload)
        headers = signed(payload)
    status, out = edge.handle("stripe_webhook", body, headers)
    assert status == 400, out
    assert out["error"]["code"] == ("INVALID_REQUEST" if case == "malformed_body" else "INVALID_SIGNATURE")
    assert snapshot(db_url) == before


def test_webhook_signature_with_a_rolled_secret_and_v0(edge: Edge, setup: dict[str, Any]) -> None:
    payload = event(setup["card"], session="cs_roll")
    now = int(time.time())
    header = f"t={now},v1={'f' * 64},v0=abc,v1={sig.compute(payload, SECRET, now)}"
    assert edge.handle("stripe_webhook", payload, {"stripe-signature": header})[0] == 200


def test_other_events_are_acknowledged_and_ignored(edge: Edge, setup: dict[str, Any], db_url: str) -> None:
    before = snapshot(db_url)
    for payload in (event(setup["card"], kind="payment_intent.succeeded"),
                    event(setup["card"], session="cs_unpaid", payment_status="unpaid")):
        status, body = edge.handle("stripe_webhook", payload, signed(payload))
        assert status == 200 and body["data"]["ignored"] is True
    assert snapshot(db_url) == before


def test_webhook_accepts_a_timestamp_ahead_of_now_as_stripe_does(edge: Edge, setup: dict[str, Any],
                                                                  client: Client) -> None:
    """Stripe's own libraries refuse only old timestamps: a signer's clock ahead of ours is no forgery."""
    payload = event(setup["card"], session="cs_ahead", amount=100)
    status, out = edge.handle("stripe_webhook", payload, signed(payload, timestamp=math.ceil(time.time()) + 3600))
    assert status == 200, out
    assert client.get_card(setup["card"]).balance == 5100


def test_a_session_paid_by_a_coupon_is_acknowledged_and_credits_nothing(edge: Edge, setup: dict[str, Any],
                                                                        db_url: str) -> None:
    before = snapshot(db_url)
    payload = event(setup["card"], session="cs_coupon", amount=0, payment_status="no_payment_required")
    status, out = edge.handle("stripe_webhook", payload, signed(payload))
    assert status == 200 and out["data"]["ignored"] is True, out  # a 2xx: Stripe does not retry for days
    assert snapshot(db_url) == before


@pytest.mark.parametrize("headers", [[("X-Request-Id", "r1")], "X-Request-Id: r1", 42])
def test_headers_that_are_not_a_mapping_are_a_400(edge: Edge, setup: dict[str, Any], headers: Any) -> None:
    status, out = edge.handle("process_bar_order", order_body(setup), headers)
    assert status == 400 and out["error"]["field"] == "headers", out


def test_webhook_bad_session_fields_are_typed_errors(edge: Edge, setup: dict[str, Any], db_url: str) -> None:
    before = snapshot(db_url)
    for payload, code in [(event(10**12, session="cs_nocard"), "CARD_NOT_FOUND"),
                          (event("abc"), "INVALID_REQUEST"), (event(setup["card"], amount=-5), "INVALID_REQUEST"),
                          (event(setup["card"], currency="usd"), "INVALID_REQUEST"),
                          (json.dumps({"type": "checkout.session.completed", "data": []}).encode(),
                           "INVALID_REQUEST")]:
        status, body = edge.handle("stripe_webhook", payload, signed(payload))
        assert body["error"]["code"] == code and status in (400, 404), body
    assert snapshot(db_url) == before


@pytest.fixture
def extra_handler() -> Iterator[None]:
    @handler("echo_test")
    def echo(edge: Edge, request: Request) -> Any:
        if request.json().get("boom"):
            raise RuntimeError("secret internals")
        return {"echo": dict(request.json())}

    try:
        yield
    finally:
        HANDLERS.pop("echo_test", None)


def test_other_domains_register_handlers_and_bugs_are_a_plain_500(edge: Edge, extra_handler: None) -> None:
    assert edge.handle("echo_test", {"a": 1}, {})[1]["data"] == {"echo": {"a": 1}}
    status, body = edge.handle("echo_test", {"boom": True}, {})
    assert status == 500 and body["error"]["code"] == "SERVER_ERROR"
    assert "secret internals" not in json.dumps(body)


def test_verify_directly() -> None:
    payload = b'{"a":1}'
    now = 1_700_000_000
    assert sig.verify(payload, sig.header(payload, SECRET, now), SECRET, now=now + 300) == now
    with pytest.raises(sig.SignatureVerificationError):
        sig.verify(payload, sig.header(payload, SECRET, now), SECRET, now=now + 301)
    with pytest.raises(sig.SignatureVerificationError):
        sig.verify(payload, sig.header(payload, SECRET, now), "", now=now)


def test_a_tiny_number_that_would_be_huge_written_out_is_refused(edge: Edge, setup: dict[str, Any]) -> None:
    """1e-999999999 is 12 bytes of JSON and a gigabyte written out in decimals: refused before that."""
    raw = json.dumps(order_body(setup)).replace('"11.00"', "1e-999999999").encode()
    status, out = edge.handle("process_bar_order", raw)
    assert status == 400 and out["error"]["field"] == "total_amount", out
