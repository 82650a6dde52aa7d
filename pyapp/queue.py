"""Specs of the performer queue and the tip grid (``sql/procedures/30_queue.sql``).

Every paid request to a performer is a queue item whose tokens are held in escrow (a ledger hold) until
the item is finished (paid to the performer minus the platform fee), abandoned or refunded (given back).
Tip-grid purchases are settled by their queue item: the queue is the only authority over the money.
Amounts are whole tokens (the TOKEN currency has no decimals).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pyapp.procedures import (
    AMOUNT,
    BATCH,
    FLAG,
    ID,
    KEY,
    LIMIT,
    NAME,
    OBJECT,
    SECONDS,
    USER,
    Rule,
    _text,
    _whole,
    one_of,
    procedure,
)
from pyapp.results import Result

QUEUE_MODES = ("ON", "OFF")
EXECUTION_MODES = ("IMMEDIATE", "QUEUED")
ITEM_STATUSES = ("CREATED", "STARTED", "FINISHED", "ABANDONED", "REFUNDED")
OPEN_STATUSES = ("CREATED", "STARTED")

_FEATURE = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _feature(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    return None if _FEATURE.fullmatch(value) else "must be a lower-case identifier (a-z, 0-9, _; at most 63)"


FEATURE = Rule("text", _feature)
EVENT_ID = Rule("text", _text(1, 255))
DESCRIPTION = Rule("text", _text(0, 2000))
REASON = Rule("text", _text(1, 500))
FEE_BPS = Rule("integer", _whole(0, 10_000, "0 to 10000 basis points"))
MAX_OPEN = Rule("integer", _whole(1, 10_000, "1 to 10000"))
GRACE = Rule("integer", _whole(100, 100_000, "100 to 100000 percent"))
OFFSET = Rule("integer", _whole(0, 1_000_000, "0 to 1000000"))
MAX_BATCH_ITEMS = 100


def _item_ids(value: Any) -> str | None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not 1 <= len(value) <= MAX_BATCH_ITEMS:
        return f"must list 1 to {MAX_BATCH_ITEMS} queue items"
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**63 - 1 for v in value):
        return "must list positive whole ids"
    return None if len(set(value)) == len(value) else "must list each queue item once"


ITEM_IDS = Rule("bigint[]", _item_ids)

ItemId = Annotated[int, ID]
AccountId = Annotated[int, ID]
IdempotencyKey = Annotated[str, KEY]


# -- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerformerQueue(Result):
    performer_id: int
    fee_account_id: int
    fee_bps: int
    max_open: int
    start_timeout_seconds: int
    grace_percent: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class QueueItem(Result):
    """A paid request. ``position`` is 1 for the item being performed (or next), None once it left the
    queue; ``fee`` is what the platform keeps of ``tokens`` when it finishes."""

    item_id: int
    source_feature: str
    performer_id: int
    user_id: int
    hold_id: int
    tokens: int
    fee: int
    fee_account_id: int
    title: str
    expected_duration_seconds: int
    status: str
    pass_through: bool
    settled: bool
    total_in_queue: int
    created_at: datetime
    replayed: bool
    source_event_id: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    ticket: int | None = None
    position: int | None = None
    estimated_wait_seconds: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    abandoned_at: datetime | None = None
    refunded_at: datetime | None = None
    settled_at: datetime | None = None
    settlement_transfer_id: int | None = None
    fee_transfer_id: int | None = None
    refund_reason: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class QueuePosition(Result):
    item_id: int
    performer_id: int
    status: str
    total_in_queue: int
    position: int | None = None
    estimated_wait_seconds: int | None = None


@dataclass(frozen=True)
class QueueDepth(Result):
    performer_id: int
    depth: int
    waiting: int
    started: int
    max_open: int


@dataclass(frozen=True)
class QueueEntry(Result):
    """One open item of a performer's queue, in queue order."""

    item_id: int
    position: int
    estimated_wait_seconds: int
    status: str
    ticket: int
    user_id: int
    tokens: int
    title: str
    source_feature: str
    expected_duration_seconds: int
    created_at: datetime
    started_at: datetime | None = None


@dataclass(frozen=True)
class Sweep(Result):
    abandoned: int
    refunded: int


@dataclass(frozen=True)
class TipMenuItem(Result):
    tip_menu_item_id: int
    performer_id: int
    title: str
    price: int
    expected_duration_seconds: int
    active: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class PurchasedItem(Result):
    """A tip-grid purchase: PENDING while its queue item waits, SUCCESS once finished, else REFUNDED."""

    purchased_item_id: int
    queue_item_id: int
    user_id: int
    performer_id: int
    tip_menu_item_id: int
    title: str
    price: int
    execution_mode: str
    status: str
    settled: bool
    total_in_queue: int
    created_at: datetime
    replayed: bool
    position: int | None = None
    estimated_wait_seconds: int | None = None
    settled_at: datetime | None = None
    notified_at: datetime | None = None
    refunded_at: datetime | None = None
    success: bool = True  # the seed's: false once the purchase was refunded
    type: str = "tip_grid"  # what was bought (the seed's purchase type)
    target: int | None = None  # for whom: the performer


def _item_row(row: Mapping[str, Any]) -> QueueItem:
    return QueueItem.from_mapping(row["item"])


def _menu_row(row: Mapping[str, Any]) -> TipMenuItem:
    return TipMenuItem.from_mapping(row["item"])


# -- specs ------------------------------------------------------------------------------------------------


@procedure("pgwallet.configure_performer_queue")
def configure_performer_queue(performer_id: AccountId, fee_account_id: AccountId,
                              fee_bps: Annotated[int | None, FEE_BPS] = None,
                              max_open: Annotated[int | None, MAX_OPEN] = None,
                              start_timeout_seconds: Annotated[int | None, SECONDS] = None,
                              grace_percent: Annotated[int | None, GRACE] = None) -> PerformerQueue:
    """Open or change a performer's queue (staff): fee account and fee (default 2000 bps), most open items
    (default 50), start timeout (default 1800 s) and grace (default 200 % of the expected duration)."""
    raise NotImplementedError


@procedure("pgwallet.create_queue_item")
def create_queue_item(performer_id: AccountId, user_id: AccountId, tokens: Annotated[int, AMOUNT],
                      title: Annotated[str, NAME], idempotency_key: IdempotencyKey,
                      queue_mode: Annotated[str | None, one_of(*QUEUE_MODES)] = None,
                      source_feature: Annotated[str | None, FEATURE] = None,
                      source_event_id: Annotated[str | None, EVENT_ID] = None,
                      description: Annotated[str | None, DESCRIPTION] = None,
                      expected_duration_seconds: Annotated[int | None, SECONDS] = None,
                      metadata: Annotated[Mapping[str, Any] | None, OBJECT] = None, *,
                      acting_user: Annotated[str, USER]) -> QueueItem:
    """Hold ``tokens`` on the user's wallet and queue the request (mode ON, the default; QUEUE_FULL past the
    performer's limit), or let it start, finish and settle at once (mode OFF, pass-through). The wallet must
    belong to ``acting_user`` (``FORBIDDEN``)."""
    raise NotImplementedError


@procedure("pgwallet.start_item")
def start_item(item_id: ItemId, idempotency_key: IdempotencyKey) -> QueueItem:
    """CREATED -> STARTED; ALREADY_PROCESSING while the performer performs another item."""
    raise NotImplementedError


@procedure("pgwallet.complete_item")
def complete_item(item_id: ItemId, idempotency_key: IdempotencyKey) -> QueueItem:
    """STARTED -> FINISHED: the performer is paid the tokens minus the fee, the fee account the fee."""
    raise NotImplementedError


@dataclass(frozen=True)
class CompletedItems(Result):
    """What one batch settlement finished, in id order."""

    performer_id: int
    items: tuple[QueueItem, ...]
    replayed: bool


@procedure("pgwallet.complete_items")
def complete_items(performer_id: AccountId, item_ids: Annotated[Sequence[int], ITEM_IDS],
                   idempotency_key: IdempotencyKey) -> CompletedItems:
    """Batch settlement: finish several CREATED or STARTED items of the performer at once (served together),
    each paid as ``complete_item`` pays it, once; all of them or none."""
    raise NotImplementedError


@procedure("pgwallet.abandon_item")
def abandon_item(item_id: ItemId, reason: Annotated[str, REASON], idempotency_key: IdempotencyKey) -> QueueItem:
    """CREATED or STARTED -> ABANDONED: the user gets the tokens back."""
    raise NotImplementedError


@procedure("pgwallet.refund_item")
def refund_item(item_id: ItemId, idempotency_key: IdempotencyKey,
                reason: Annotated[str | None, REASON] = None) -> QueueItem:
    """Any item not settled yet -> REFUNDED: the user gets the tokens back."""
    raise NotImplementedError


@procedure("pgwallet.expire_stale_queue_items")
def expire_stale_queue_items(limit: Annotated[int, BATCH] = 1000) -> Sweep:
    """Abandon items not started in time and refund started items that overran; run it until it finds none."""
    raise NotImplementedError


@procedure("pgwallet.relay_queue_events", shape="scalar")
def relay_queue_events(limit: Annotated[int, BATCH] = 1000) -> int:
    """With setting queue_events = 'outbox': send up to ``limit`` stored events; returns how many."""
    raise NotImplementedError


@procedure("pgwallet.get_queue_item")
def get_queue_item(item_id: ItemId) -> QueueItem:
    """One queue item with its live position (``replayed`` is always false here)."""
    raise NotImplementedError


@procedure("pgwallet.get_queue_position", shape="row")
def get_queue_position(item_id: ItemId) -> QueuePosition:
    """An item's position, the open items of its performer and the estimated wait."""
    raise NotImplementedError


@procedure("pgwallet.get_queue_depth", shape="row")
def get_queue_depth(performer_id: AccountId) -> QueueDepth:
    """How many items of a performer are open (waiting and started), and the most allowed."""
    raise NotImplementedError


@procedure("pgwallet.get_performer_queue", shape="rows")
def get_performer_queue(performer_id: AccountId) -> list[QueueEntry]:
    """A performer's open items in queue order, each with its position and estimated wait."""
    raise NotImplementedError


@procedure("pgwallet.get_user_queue_history", shape="rows", decode=_item_row)
def get_user_queue_history(user_id: AccountId, limit: Annotated[int, LIMIT] = 50,
                           offset: Annotated[int, OFFSET] = 0) -> list[QueueItem]:
    """A user's queue items, newest first."""
    raise NotImplementedError


@procedure("pgwallet.create_tip_menu_item")
def create_tip_menu_item(performer_id: AccountId, title: Annotated[str, NAME], price: Annotated[int, AMOUNT],
                         expected_duration_seconds: Annotated[int | None, SECONDS] = None,
                         active: Annotated[bool | None, FLAG] = None) -> TipMenuItem:
    """Add an item to a performer's tip grid (price in tokens)."""
    raise NotImplementedError


@procedure("pgwallet.set_tip_menu_item_active")
def set_tip_menu_item_active(tip_menu_item_id: Annotated[int, ID], active: Annotated[bool, FLAG]) -> TipMenuItem:
    """Show or hide a tip menu item; only active items can be bought."""
    raise NotImplementedError


@procedure("pgwallet.get_tip_menu", shape="rows", decode=_menu_row)
def get_tip_menu(performer_id: AccountId) -> list[TipMenuItem]:
    """A performer's tip grid, active and inactive items."""
    raise NotImplementedError


@procedure("pgwallet.purchase_tip_grid_item")
def purchase_tip_grid_item(user_id: AccountId, performer_id: AccountId, tip_menu_item_id: Annotated[int, ID],
                           execution_mode: Annotated[str | None, one_of(*EXECUTION_MODES)] = None, *,
                           idempotency_key: IdempotencyKey, acting_user: Annotated[str, USER]) -> PurchasedItem:
    """Buy a tip-grid item: IMMEDIATE (default) pays the performer at once; QUEUED waits in the queue. The
    wallet must belong to ``acting_user`` (``FORBIDDEN``)."""
    raise NotImplementedError


@procedure("pgwallet.get_purchased_item")
def get_purchased_item(purchased_item_id: Annotated[int, ID]) -> PurchasedItem:
    """One tip-grid purchase, its status and its queue item's position."""
    raise NotImplementedError


class QueueProcedures:
    """The queue's and the tip grid's procedures, as methods of both clients (see ``pyapp.api``)."""

    configure_performer_queue = configure_performer_queue
    create_queue_item = create_queue_item
    start_item = start_item
    complete_item = complete_item
    complete_items = complete_items
    abandon_item = abandon_item
    refund_item = refund_item
    expire_stale_queue_items = expire_stale_queue_items
    relay_queue_events = relay_queue_events
    get_queue_item = get_queue_item
    get_queue_position = get_queue_position
    get_queue_depth = get_queue_depth
    get_performer_queue = get_performer_queue
    get_user_queue_history = get_user_queue_history
    create_tip_menu_item = create_tip_menu_item
    set_tip_menu_item_active = set_tip_menu_item_active
    get_tip_menu = get_tip_menu
    purchase_tip_grid_item = purchase_tip_grid_item
    get_purchased_item = get_purchased_item
