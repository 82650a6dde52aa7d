"""Framework-neutral handlers for edge / serverless functions: ``(body, headers) -> (status, json)``.

Every response carries ``request_id`` (the caller's ``X-Request-Id`` when it is sane, else a new one) and
``processing_ms``; success puts the result under ``data``, failure under the error envelope
``{"error": {"code", "message", "detail", "field", "request_id"}}`` with the error's HTTP status. Bad input
is always a typed 4xx, never a traceback and never a 500: a 500 ``SERVER_ERROR`` means a bug, and its detail
does not leak the exception. Amounts in bodies are decimals in the currency's units (``"4.50"`` or a JSON
number, read exactly), converted with :func:`pyapp.money.to_minor`; amounts in responses come back the same
way. Stripe amounts are already minor units, as Stripe sends them.

Other domains add a handler with :func:`handler`::

    @handler("tip_purchase")
    def tip_purchase(edge: Edge, request: Request) -> Any:
        body = request.json()
        return edge.client.purchase_tip_grid_item(
            body.get("user_id"), body.get("performer_id"), body.get("tip_menu_item_id"), "QUEUED",
            idempotency_key=idempotency_key(request, body), acting_user=body.get("acting_user"))

and call it as ``edge.handle("tip_purchase", body, headers)`` (or ``Edge.default()``'s).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pyapp import stripe_signature
from pyapp.client import Client
from pyapp.errors import InvalidRequest, PgWalletError, ServerError, invalid
from pyapp.money import format_minor, to_minor

log = logging.getLogger(__name__)

Body = bytes | bytearray | str | Mapping[str, Any] | None
Headers = Mapping[str, str] | None
Response = tuple[int, dict[str, Any]]
HandlerFn = Callable[["Edge", "Request"], Any]

#: Registered handlers, by name: every domain adds its own with :func:`handler`.
HANDLERS: dict[str, HandlerFn] = {}

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Result fields holding money, shown as decimals in responses.
_AMOUNT_FIELDS = frozenset({"amount", "total_amount", "card_balance", "refunded_amount", "balance", "available",
                            "invested_amount", "paid_amount"})
MAX_BODY = 1_000_000


def handler(name: str) -> Callable[[HandlerFn], HandlerFn]:
    """Register ``fn(edge, request)`` under ``name``; it returns the result (any dataclass or JSON value)."""

    def register(fn: HandlerFn) -> HandlerFn:
        HANDLERS[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class Request:
    """What a handler sees: the raw body, case-insensitive headers and the request id."""

    raw: bytes | None
    parsed: Mapping[str, Any] | None
    headers: Mapping[str, str]
    request_id: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Mapping[str, Any]:
        """The body as a JSON object (numbers with a fraction read as exact Decimals)."""
        if self.parsed is not None:
            return self.parsed
        if self.raw is None or not self.raw.strip():
            raise invalid("body", "must be a JSON object")
        try:
            value = json.loads(self.raw.decode("utf-8"), parse_float=Decimal,
                               parse_constant=lambda c: _refuse_constant(c))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise invalid("body", f"must be a JSON object ({type(exc).__name__})") from None
        if not isinstance(value, dict):
            raise invalid("body", "must be a JSON object")
        return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _plain(value: Any, exponent: int) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: (format_minor(v, exponent) if k in _AMOUNT_FIELDS and isinstance(v, int) and not isinstance(v, bool)
                    else _plain(v, exponent))
                for k, v in ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))}
    if isinstance(value, list | tuple):
        return [_plain(v, exponent) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, exponent) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _field(body: Mapping[str, Any], name: str) -> Any:
    return body.get(name)


class Edge:
    """The handlers with their configuration: a client, the festival's currency exponent, the Stripe secret.

    One per process (``Edge.default()`` builds it from ``DATABASE_URL`` and ``STRIPE_WEBHOOK_SECRET``).
    """

    def __init__(self, client: Client, *, stripe_secret: str | None = None, currency: str = "EUR",
                 exponent: int = 2, stripe_tolerance: int = stripe_signature.DEFAULT_TOLERANCE) -> None:
        self.client = client
        self.stripe_secret = stripe_secret or ""
        self.currency = currency
        self.exponent = exponent
        self.stripe_tolerance = stripe_tolerance

    _default: Edge | None = None

    @classmethod
    def from_env(cls, client: Client) -> Edge:
        """Handlers over ``client`` with the settings of the environment: ``STRIPE_WEBHOOK_SECRET``,
        ``PGWALLET_CURRENCY`` (EUR) and ``PGWALLET_CURRENCY_EXPONENT`` (2)."""
        return cls(client, stripe_secret=os.environ.get("STRIPE_WEBHOOK_SECRET"),
                   currency=os.environ.get("PGWALLET_CURRENCY", "EUR"),
                   exponent=int(os.environ.get("PGWALLET_CURRENCY_EXPONENT", "2")))

    @classmethod
    def default(cls) -> Edge:
        if cls._default is None:
            cls._default = cls.from_env(Client())
        return cls._default

    def amount(self, value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise invalid(field, "must be a decimal amount such as \"4.50\"")
        return to_minor(value, self.exponent, field=field)

    def handle(self, name: str, body: Body, headers: Headers = None) -> Response:
        """Run handler ``name``: always a status and a JSON-ready dict, never an exception."""
        started = time.perf_counter()
        lowered = ({str(k).lower(): str(v) for k, v in headers.items()} if isinstance(headers, Mapping)
                   else {})
        given = lowered.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        status: int
        payload: dict[str, Any]
        try:
            if headers is not None and not isinstance(headers, Mapping):
                raise invalid("headers", "must be a mapping of header names to values")
            fn = HANDLERS.get(name)
            if fn is None:
                raise invalid("handler", f"no handler named {name}")
            raw, parsed = _split_body(body)
            result = fn(self, Request(raw, parsed, lowered, request_id))
            status, payload = 200, {"data": _plain(result, self.exponent)}
        except PgWalletError as exc:
            status, payload = exc.http_status, {"error": {**exc.to_dict(), "request_id": request_id}}
        except Exception:  # a bug: logged here, never shown to the caller
            log.exception("edge handler %s failed (request %s)", name, request_id)
            bug = ServerError(detail="unexpected error; see the server log for this request id")
            status, payload = 500, {"error": {**bug.to_dict(), "request_id": request_id}}
        payload["request_id"] = request_id
        payload["processing_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return status, payload


def _split_body(body: Body) -> tuple[bytes | None, Mapping[str, Any] | None]:
    if body is None:
        return None, None
    if isinstance(body, bytes | bytearray):
        if len(body) > MAX_BODY:
            raise invalid("body", f"must be at most {MAX_BODY} bytes")
        return bytes(body), None
    if isinstance(body, str):
        try:
            return _split_body(body.encode("utf-8"))
        except UnicodeEncodeError:
            raise invalid("body", "must be valid Unicode text") from None
    if isinstance(body, Mapping):
        return None, body
    raise invalid("body", "must be JSON text or an object")


# -- the cashless handlers ---------------------------------------------------------------------------


@handler("process_bar_order")
def _bar_order(edge: Edge, request: Request) -> Any:
    """``{card_id, items: [{sku, name, quantity, unit_price: "4.50"}], total_amount: "13.50",
    client_request_id, point_of_sale}``: the order, or the first one again on a retry."""
    body = request.json()
    items = _field(body, "items")
    if isinstance(items, list):
        items = [{**i, "unit_price": edge.amount(i.get("unit_price"), "items")}
                 if isinstance(i, Mapping) and "unit_price" in i else i for i in items]
    return edge.client.process_bar_order(
        card_id=_field(body, "card_id"), items=items,
        total_amount=edge.amount(_field(body, "total_amount"), "total_amount"),
        client_request_id=_field(body, "client_request_id"), point_of_sale=_field(body, "point_of_sale"))


@handler("process_checkpoint_recharge")
def _checkpoint_recharge(edge: Edge, request: Request) -> Any:
    """``{card_id, amount: "20.00", staff_id, checkpoint_id, payment_method: cash|card, client_request_id}``."""
    body = request.json()
    return edge.client.process_checkpoint_recharge(
        card_id=_field(body, "card_id"), amount=edge.amount(_field(body, "amount"), "amount"),
        staff_id=_field(body, "staff_id"), checkpoint_id=_field(body, "checkpoint_id"),
        payment_method=_field(body, "payment_method"), client_request_id=_field(body, "client_request_id"))


STRIPE_PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


@handler("stripe_webhook")
def _stripe_webhook(edge: Edge, request: Request) -> Any:
    """Verifies ``Stripe-Signature`` over the raw body first; credits the card of a paid Checkout session
    (``metadata.card_id``, else ``client_reference_id``); acknowledges and ignores every other event."""
    if request.raw is None:
        raise stripe_signature.SignatureVerificationError(
            detail="body: the raw request body is needed to verify the signature", field="body")
    stripe_signature.verify(request.raw, request.header("stripe-signature"), edge.stripe_secret,
                            tolerance=edge.stripe_tolerance)
    event = request.json()
    kind = event.get("type")
    if not isinstance(kind, str):
        raise invalid("type", "must be the event type")
    if kind not in STRIPE_PAID_EVENTS:
        return {"received": True, "ignored": True, "type": kind}
    data = event.get("data")
    session = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(session, Mapping):
        raise invalid("data.object", "must be the Checkout session")
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return {"received": True, "ignored": True, "type": kind, "reason": "payment not completed yet"}
    if session.get("payment_status") == "no_payment_required" or session.get("amount_total") == 0:
        # a coupon paid it all: nothing to credit, and a 2xx so that Stripe does not retry for days
        return {"received": True, "ignored": True, "type": kind, "reason": "nothing was paid (no_payment_required)"}
    metadata = session.get("metadata")
    card = _field(metadata, "card_id") if isinstance(metadata, Mapping) else None
    card = card if card is not None else _field(session, "client_reference_id")
    if isinstance(card, str) and card.isascii() and card.isdigit() and len(card) <= 19:
        card = int(card)
    currency = session.get("currency")
    if not isinstance(currency, str) or currency.upper() != edge.currency:
        raise invalid("currency", f"must be {edge.currency.lower()}")
    recharge = edge.client.process_stripe_recharge(
        card_id=card, amount=_field(session, "amount_total"), stripe_session_id=_field(session, "id"),
        metadata={"stripe_event_id": str(event.get("id")), "stripe_event_type": kind})
    return {"received": True, "ignored": False, "recharge": recharge}


# -- the investment handlers -------------------------------------------------------------------------


def idempotency_key(request: Request, body: Mapping[str, Any]) -> Any:
    """The key from the body's ``idempotency_key`` or the ``Idempotency-Key`` header (either; both only
    when they are equal)."""
    in_body, in_header = body.get("idempotency_key"), request.header("idempotency-key")
    if in_body is not None and in_header is not None and in_body != in_header:
        raise invalid("idempotency_key", "the body's idempotency_key and the Idempotency-Key header differ")
    key = in_body if in_body is not None else in_header
    if key is None:
        raise invalid("idempotency_key", "is required: in the body or in the Idempotency-Key header")
    return key


@handler("create_investment_product")
def _create_investment_product(edge: Edge, request: Request) -> Any:
    """``{name, currency, staff_id}`` + key: a product (the database role must be pgwallet_staff)."""
    body = request.json()
    return edge.client.create_investment_product(
        name=_field(body, "name"), currency=_field(body, "currency"), staff_id=_field(body, "staff_id"),
        idempotency_key=idempotency_key(request, body))


@handler("create_investment")
def _create_investment(edge: Edge, request: Request) -> Any:
    """``{wallet_account_id, product_id, amount: "100.00", acting_user}`` + key: a pending investment
    (``acting_user``: the end user the function authenticated, who must own the wallet)."""
    body = request.json()
    return edge.client.create_investment(
        wallet_account_id=_field(body, "wallet_account_id"), product_id=_field(body, "product_id"),
        amount=edge.amount(_field(body, "amount"), "amount"), idempotency_key=idempotency_key(request, body),
        acting_user=_field(body, "acting_user"))


@handler("execute_investment")
def _execute_investment(edge: Edge, request: Request) -> Any:
    """``{investment_id, acting_user}`` + key: queued at once; ``{job_id, status: "queued",
    idempotency_key, message}``."""
    body = request.json()
    return edge.client.execute_investment(investment_id=_field(body, "investment_id"),
                                          idempotency_key=idempotency_key(request, body),
                                          acting_user=_field(body, "acting_user"))


@handler("distribute_dividend")
def _distribute_dividend(edge: Edge, request: Request) -> Any:
    """``{product_id, amount: "1000.00", staff_id}`` + key: queued at once (the database role must be
    pgwallet_staff)."""
    body = request.json()
    return edge.client.distribute_dividend(
        product_id=_field(body, "product_id"), amount=edge.amount(_field(body, "amount"), "amount"),
        staff_id=_field(body, "staff_id"), idempotency_key=idempotency_key(request, body))


def process_bar_order(body: Body, headers: Headers = None) -> Response:
    return Edge.default().handle("process_bar_order", body, headers)


def process_checkpoint_recharge(body: Body, headers: Headers = None) -> Response:
    return Edge.default().handle("process_checkpoint_recharge", body, headers)


def stripe_webhook(body: Body, headers: Headers = None) -> Response:
    return Edge.default().handle("stripe_webhook", body, headers)


def create_investment(body: Body, headers: Headers = None) -> Response:
    return Edge.default().handle("create_investment", body, headers)


def execute_investment(body: Body, headers: Headers = None) -> Response:
    return Edge.default().handle("execute_investment", body, headers)


def distribute_dividend(body: Body, headers: Headers = None) -> Response:
    return Edge.default().handle("distribute_dividend", body, headers)


__all__ = ["HANDLERS", "Edge", "InvalidRequest", "Request", "create_investment", "distribute_dividend",
           "execute_investment", "handler", "idempotency_key", "process_bar_order", "process_checkpoint_recharge",
           "stripe_webhook"]
