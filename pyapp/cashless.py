"""Specs and results of the cashless festival (``sql/procedures/20_cashless.sql``).

Cards (NFC uid, holder, status) over ledger accounts of kind ``card``; bar orders and refunds; Stripe and
checkpoint recharges; cash drawers; the NFC scan log; the close-out. Amounts are whole minor units, as in
the ledger core; humans type decimals only in the CLI and the edge handlers (:mod:`pyapp.edge`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Self

from pyapp.errors import CardNotFound
from pyapp.procedures import (
    AMOUNT,
    BIGINT_MAX,
    CURRENCY,
    ID,
    KEY,
    LIMIT,
    NAME,
    OBJECT,
    Rule,
    _text,
    one_of,
    procedure,
)
from pyapp.results import Result

PAYMENT_METHODS = ("cash", "card")
PAYOUT_METHODS = ("bank_transfer", "stripe_refund", "cash")
CARD_STATUSES = ("active", "blocked")
STAFF_STATUSES = ("active", "inactive")
MAX_ITEMS = 100
MAX_QUANTITY = 9999
MAX_UNIT_PRICE = 10**15 - 1  # SQL accepts at most 15 digits: a sum of 100 items stays far inside bigint

_UID = re.compile(r"[0-9A-Za-z:_-]{1,64}")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_SESSION = re.compile(r"[A-Za-z0-9_]{1,255}")


def _pattern(pattern: re.Pattern[str], rule: str) -> Rule:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and pattern.fullmatch(value) else rule

    return Rule("text", check)


def _whole_in(lo: int, hi: int) -> Any:
    return lambda v: not isinstance(v, bool) and isinstance(v, int) and lo <= v <= hi


def _items(value: Any) -> str | None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not 1 <= len(value) <= MAX_ITEMS:
        return f"must be a list of 1 to {MAX_ITEMS} items"
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"sku", "name", "quantity", "unit_price"}:
            return "each item is {sku, name, quantity, unit_price}"
        sku, name = item["sku"], item["name"]
        if not isinstance(sku, str) or not 1 <= len(sku) <= 64 or sku[0].isspace() or _bad_text(sku):
            return "each sku is 1 to 64 characters, not starting with a space"
        if not isinstance(name, str) or not 1 <= len(name) <= 200 or _bad_text(name):
            return "each name is 1 to 200 characters"
        if not _whole_in(1, MAX_QUANTITY)(item["quantity"]):
            return f"each quantity is a whole number from 1 to {MAX_QUANTITY}"
        if not _whole_in(1, MAX_UNIT_PRICE)(item["unit_price"]):
            return "each unit_price is a positive whole number of minor units (at most 15 digits)"
    return None


def _refund_items(value: Any) -> str | None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not 1 <= len(value) <= MAX_ITEMS:
        return f"must be a list of 1 to {MAX_ITEMS} items"
    skus = set()
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"sku", "quantity"}:
            return "each item is {sku, quantity}"
        if not isinstance(item["sku"], str) or _bad_text(item["sku"]) or item["sku"] in skus:
            return "each sku is a string, given once"
        skus.add(item["sku"])
        if not _whole_in(1, MAX_QUANTITY)(item["quantity"]):
            return f"each quantity is a whole number from 1 to {MAX_QUANTITY}"
    return None


def _bad_text(value: str) -> bool:
    return _text(0, 10**6)(value) is not None


def _not_negative(value: Any) -> str | None:
    return None if _whole_in(0, BIGINT_MAX)(value) else "must be a whole number of minor units, zero or more"


UID = _pattern(_UID, "must be 1 to 64 letters, digits, colons, dashes or underscores")
BAR_CODE = _pattern(_CODE, "must be 1 to 64 letters, digits, dots, colons, dashes or underscores")
STRIPE_SESSION = _pattern(_SESSION, "must be 1 to 255 letters, digits or underscores")
ITEMS = Rule("jsonb", _items)
REFUND_ITEMS = Rule("jsonb", _refund_items)
NOT_NEGATIVE = Rule("bigint", _not_negative)
LABEL = Rule("text", _text(1, 200))
BATCH_SIZE = Rule("integer", lambda v: None if _whole_in(1, 10_000)(v) else "must be a whole number from 1 to 10000")

CardId = Annotated[int, ID]
Amount = Annotated[int, AMOUNT]
RequestId = Annotated[str, KEY]


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card(Result):
    card_id: int
    uid: str
    account_id: int
    currency: str
    exponent: int
    status: str
    balance: int
    available: int
    payout_method: str
    holder: str | None = None
    status_reason: str | None = None
    replaced_by: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class CardReplacement(Result):
    old_card_id: int
    new_card_id: int
    new_uid: str
    moved_amount: int
    currency: str
    created_at: datetime
    replayed: bool
    operation_id: int | None = None


@dataclass(frozen=True)
class CardHistoryEntry(Result):
    entry_id: int
    transfer_id: int
    operation_id: int
    kind: str
    counterparty_account_id: int
    amount: int
    new_balance: int
    created_at: datetime
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Bar(Result):
    id: int
    code: str
    name: str
    currency: str
    revenue_account_id: int
    created_at: datetime | None = None


@dataclass(frozen=True)
class Staff(Result):
    id: int
    name: str
    status: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class Checkpoint(Result):
    id: int
    name: str
    currency: str
    drawer_account_id: int
    created_at: datetime | None = None


@dataclass(frozen=True)
class CheckpointState(Result):
    id: int
    name: str
    currency: str
    exponent: int
    drawer_account_id: int
    expected_cash: int
    created_at: datetime | None = None


@dataclass(frozen=True)
class BarOrder(Result):
    order_id: int
    card_id: int
    point_of_sale: str
    bar_id: int
    total_amount: int
    currency: str
    items: int
    card_balance: int
    operation_id: int
    transfer_id: int
    created_at: datetime
    replayed: bool


@dataclass(frozen=True)
class OrderItem(Result):
    line: int
    sku: str
    name: str
    quantity: int
    unit_price: int
    refunded_quantity: int


@dataclass(frozen=True)
class BarOrderDetails(Result):
    order_id: int
    card_id: int
    bar_id: int
    point_of_sale: str
    total_amount: int
    refunded_amount: int
    currency: str
    client_request_id: str
    operation_id: int
    created_at: datetime
    items: tuple[OrderItem, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        base = super().from_mapping({k: v for k, v in data.items() if k != "items"})
        items = tuple(OrderItem.from_mapping(i) for i in data.get("items") or ())
        return cls(**{**base.__dict__, "items": items})


@dataclass(frozen=True)
class BarRefund(Result):
    refund_id: int
    order_id: int
    card_id: int
    amount: int
    currency: str
    refunded_amount: int
    total_amount: int
    operation_id: int
    created_at: datetime
    replayed: bool


@dataclass(frozen=True)
class Recharge(Result):
    recharge_id: int
    card_id: int
    amount: int
    currency: str
    method: str
    operation_id: int
    card_balance: int
    created_at: datetime
    replayed: bool
    stripe_session_id: str | None = None
    staff_id: int | None = None
    checkpoint_id: int | None = None


@dataclass(frozen=True)
class DrawerClosing(Result):
    closing_id: int
    checkpoint_id: int
    staff_id: int
    currency: str
    expected_amount: int
    counted_amount: int
    difference: int
    created_at: datetime
    replayed: bool
    operation_id: int | None = None


@dataclass(frozen=True)
class CashOut(Result):
    cashout_id: int
    card_id: int
    amount: int
    fee: int
    currency: str
    payout_method: str
    created_at: datetime
    replayed: bool
    operation_id: int | None = None


@dataclass(frozen=True)
class CashOutBatch(Result):
    cards: int
    amount: int
    fee: int
    last_card_id: int


def _scanned_card(data: Mapping[str, Any]) -> Card:
    """``lookup_card`` logs an unknown uid and answers ``{"status": "unknown"}`` (raising would roll the log
    row back): the wrappers turn that answer into CARD_NOT_FOUND."""
    if data.get("status") == "unknown":
        raise CardNotFound(detail=f"no card has uid {data.get('uid')}", field="uid")
    return Card.from_mapping(data)


# -- specs -----------------------------------------------------------------------------------------


@procedure("pgwallet.issue_card")
def issue_card(uid: Annotated[str, UID], currency: Annotated[str | None, CURRENCY] = None,
               holder: Annotated[str | None, NAME] = None,
               payout_method: Annotated[str | None, one_of(*PAYOUT_METHODS)] = None) -> Card:
    """Issue a card for NFC ``uid`` with its own ledger account (currency EUR by default)."""
    raise NotImplementedError


@procedure("pgwallet.get_card")
def get_card(card_id: CardId) -> Card:
    """One card with its balance."""
    raise NotImplementedError


@procedure("pgwallet.lookup_card", decode=_scanned_card)
def lookup_card(uid: Annotated[str, Rule("text", _text(1, 64))], location: Annotated[str | None, LABEL] = None,
                device: Annotated[str | None, LABEL] = None) -> Card:
    """The card with NFC ``uid``; every call is written to the scan log (found, unknown or blocked)."""
    raise NotImplementedError


@procedure("pgwallet.set_card_status")
def set_card_status(card_id: CardId, status: Annotated[str, one_of(*CARD_STATUSES)],
                    reason: Annotated[str | None, LABEL] = None) -> Card:
    """Block (lost, stolen) or unblock a card; a blocked card refuses every debit (CARD_BLOCKED)."""
    raise NotImplementedError


@procedure("pgwallet.replace_card")
def replace_card(card_id: CardId, new_uid: Annotated[str, UID], client_request_id: RequestId,
                 reason: Annotated[str | None, LABEL] = None) -> CardReplacement:
    """Issue a new card, move the old card's whole balance to it and block the old one, atomically."""
    raise NotImplementedError


@procedure("pgwallet.card_history", shape="rows")
def card_history(card_id: CardId, limit: Annotated[int, LIMIT] = 50,
                 before_entry_id: Annotated[int | None, ID] = None) -> list[CardHistoryEntry]:
    """The card's ledger entries, newest first (orders, refunds, recharges, replacement, cash-out)."""
    raise NotImplementedError


@procedure("pgwallet.create_bar")
def create_bar(code: Annotated[str, BAR_CODE], name: Annotated[str, NAME],
               currency: Annotated[str | None, CURRENCY] = None) -> Bar:
    """A bar (point of sale ``code``) with its revenue collector account."""
    raise NotImplementedError


@procedure("pgwallet.create_staff")
def create_staff(name: Annotated[str, NAME]) -> Staff:
    """A staff member, active."""
    raise NotImplementedError


@procedure("pgwallet.set_staff_status")
def set_staff_status(staff_id: Annotated[int, ID], status: Annotated[str, one_of(*STAFF_STATUSES)]) -> Staff:
    """Activate or deactivate a staff member (an inactive one takes no recharge)."""
    raise NotImplementedError


@procedure("pgwallet.create_checkpoint")
def create_checkpoint(name: Annotated[str, NAME], currency: Annotated[str | None, CURRENCY] = None) -> Checkpoint:
    """A recharge checkpoint with its cash drawer account."""
    raise NotImplementedError


@procedure("pgwallet.get_checkpoint")
def get_checkpoint(checkpoint_id: Annotated[int, ID]) -> CheckpointState:
    """A checkpoint with the cash its drawer should hold now."""
    raise NotImplementedError


@procedure("pgwallet.process_bar_order")
def process_bar_order(card_id: CardId, items: Annotated[Sequence[Mapping[str, Any]], ITEMS], total_amount: Amount,
                      client_request_id: RequestId, point_of_sale: Annotated[str, Rule("text", _text(1, 64))]
                      ) -> BarOrder:
    """Charge a card for ``items`` ``[{sku, name, quantity, unit_price}]`` at a bar, once per request id;
    ``total_amount`` must equal the sum of ``quantity * unit_price``."""
    raise NotImplementedError


@procedure("pgwallet.refund_bar_order")
def refund_bar_order(order_id: Annotated[int, ID], client_request_id: RequestId,
                     items: Annotated[Sequence[Mapping[str, Any]] | None, REFUND_ITEMS] = None) -> BarRefund:
    """Refund the rest of an order, or the ``items`` ``[{sku, quantity}]`` given, to the card."""
    raise NotImplementedError


@procedure("pgwallet.get_bar_order")
def get_bar_order(order_id: Annotated[int, ID]) -> BarOrderDetails:
    """One order with its items and what was refunded."""
    raise NotImplementedError


@procedure("pgwallet.process_stripe_recharge")
def process_stripe_recharge(card_id: CardId, amount: Amount, stripe_session_id: Annotated[str, STRIPE_SESSION],
                            metadata: Annotated[Mapping[str, Any] | None, OBJECT] = None) -> Recharge:
    """Credit a card with a paid Stripe Checkout session; a redelivered session replays the first result."""
    raise NotImplementedError


@procedure("pgwallet.process_checkpoint_recharge")
def process_checkpoint_recharge(card_id: CardId, amount: Amount, staff_id: Annotated[int, ID],
                                checkpoint_id: Annotated[int, ID],
                                payment_method: Annotated[str, one_of(*PAYMENT_METHODS)],
                                client_request_id: RequestId) -> Recharge:
    """Credit a card with cash (into the checkpoint's drawer) or a card payment, within the limits."""
    raise NotImplementedError


@procedure("pgwallet.close_drawer")
def close_drawer(checkpoint_id: Annotated[int, ID], staff_id: Annotated[int, ID],
                 counted_amount: Annotated[int, NOT_NEGATIVE], client_request_id: RequestId) -> DrawerClosing:
    """End of shift: the drawer's expected cash goes to the cash office; the count is recorded beside it."""
    raise NotImplementedError


@procedure("pgwallet.cash_out_card")
def cash_out_card(card_id: CardId, client_request_id: RequestId,
                  fee: Annotated[int | None, NOT_NEGATIVE] = None) -> CashOut:
    """Pay a card's remaining balance, minus the fee, to its payout method; the card is then cashed out."""
    raise NotImplementedError


@procedure("pgwallet.cards_to_cash_out", shape="scalar")
def cards_to_cash_out() -> int:
    """How many cards the close-out still has to pay."""
    raise NotImplementedError


@procedure("pgwallet.cash_out_cards")
def cash_out_cards(after_card_id: Annotated[int, NOT_NEGATIVE] = 0, batch_size: Annotated[int, BATCH_SIZE] = 500,
                   fee: Annotated[int | None, NOT_NEGATIVE] = None) -> CashOutBatch:
    """One close-out batch (one transaction): cash out the next ``batch_size`` cards after ``after_card_id``."""
    raise NotImplementedError


CARD_LIST_STATUSES = ("active", "blocked", "cashed_out")
AfterId = Annotated[int | None, ID]


def _listed(cls: type[Any]) -> Any:
    return lambda rows: [cls.from_mapping(r) for r in rows]


@procedure("pgwallet.list_bars", decode=_listed(Bar))
def list_bars(limit: Annotated[int, LIMIT] = 100, after_id: AfterId = None) -> list[Bar]:
    """The bars in id order; pass the last ``id`` seen for the next page."""
    raise NotImplementedError


@procedure("pgwallet.list_staff", decode=_listed(Staff))
def list_staff(status: Annotated[str | None, one_of(*STAFF_STATUSES)] = None, limit: Annotated[int, LIMIT] = 100,
               after_id: AfterId = None) -> list[Staff]:
    """The staff members in id order (of one status when given)."""
    raise NotImplementedError


@procedure("pgwallet.list_checkpoints", decode=_listed(CheckpointState))
def list_checkpoints(limit: Annotated[int, LIMIT] = 100, after_id: AfterId = None) -> list[CheckpointState]:
    """The checkpoints in id order, each with the cash its drawer should hold."""
    raise NotImplementedError


@procedure("pgwallet.list_cards", decode=_listed(Card))
def list_cards(status: Annotated[str | None, one_of(*CARD_LIST_STATUSES)] = None,
               limit: Annotated[int, LIMIT] = 100, after_id: AfterId = None) -> list[Card]:
    """The cards in id order with their balances (of one status when given)."""
    raise NotImplementedError


class CashlessProcedures:
    """The cashless festival's procedures, as methods of both clients (see ``pyapp.api``)."""

    issue_card = issue_card
    get_card = get_card
    lookup_card = lookup_card
    set_card_status = set_card_status
    replace_card = replace_card
    card_history = card_history
    create_bar = create_bar
    create_staff = create_staff
    set_staff_status = set_staff_status
    create_checkpoint = create_checkpoint
    get_checkpoint = get_checkpoint
    process_bar_order = process_bar_order
    refund_bar_order = refund_bar_order
    get_bar_order = get_bar_order
    process_stripe_recharge = process_stripe_recharge
    process_checkpoint_recharge = process_checkpoint_recharge
    close_drawer = close_drawer
    cash_out_card = cash_out_card
    cards_to_cash_out = cards_to_cash_out
    cash_out_cards = cash_out_cards
    list_bars = list_bars
    list_staff = list_staff
    list_checkpoints = list_checkpoints
    list_cards = list_cards
