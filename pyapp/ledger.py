"""Specs of the ledger core (``sql/procedures/10_ledger.sql``): accounts, transfers, holds, checks.

Each function below is a declaration, not an implementation: its signature and rules are what both
clients validate and send; its body is never run. Amounts are whole minor units (cents for EUR).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pyapp.procedures import (
    AMOUNT,
    BATCH,
    CURRENCY,
    FLAG,
    ID,
    IDENTIFIER,
    KEY,
    LEGS,
    LIMIT,
    NAME,
    OBJECT,
    SECONDS,
    one_of,
    procedure,
)
from pyapp.results import Account, HistoryEntry, Hold, InvariantViolation, Operation, Transfer

ACCOUNT_KINDS = ("card", "user_wallet", "performer", "merchant", "revenue", "fees", "clearing",
                 "cash_drawer", "escrow", "pool", "system")
ACCOUNT_STATUSES = ("active", "frozen", "closed")

AccountId = Annotated[int, ID]
Amount = Annotated[int, AMOUNT]
IdempotencyKey = Annotated[str, KEY]
Metadata = Annotated[Mapping[str, Any] | None, OBJECT]


@procedure("pgwallet.open_account", decode=Account.from_mapping)
def open_account(currency: Annotated[str, CURRENCY],
                 kind: Annotated[str, one_of(*ACCOUNT_KINDS)],
                 name: Annotated[str | None, NAME] = None,
                 allow_negative: Annotated[bool | None, FLAG] = None,
                 collector: Annotated[bool | None, FLAG] = None,
                 metadata: Metadata = None) -> Account:
    """Open an account. Revenue, fees and clearing accounts are collectors by default (no hot row);
    clearing and system accounts may go negative by default (money enters the ledger through them)."""
    raise NotImplementedError


@procedure("pgwallet.set_account_status", decode=Account.from_mapping)
def set_account_status(account_id: AccountId, status: Annotated[str, one_of(*ACCOUNT_STATUSES)]) -> Account:
    """Freeze, unfreeze or close an account (closing needs a zero balance and no open hold)."""
    raise NotImplementedError


@procedure("pgwallet.transfer")
def transfer(debit_account_id: AccountId, credit_account_id: AccountId, amount: Amount,
             idempotency_key: IdempotencyKey, metadata: Metadata = None) -> Transfer:
    """Move ``amount`` between two accounts of one currency, once per idempotency key."""
    raise NotImplementedError


@procedure("pgwallet.post_operation")
def post_operation(legs: Annotated[Sequence[Mapping[str, int]], LEGS], idempotency_key: IdempotencyKey,
                   kind: Annotated[str | None, IDENTIFIER] = None, metadata: Metadata = None) -> Operation:
    """Post several legs ``{debit_account_id, credit_account_id, amount}`` as one operation, all or none."""
    raise NotImplementedError


@procedure("pgwallet.place_hold")
def place_hold(account_id: AccountId, credit_account_id: AccountId, amount: Amount,
               idempotency_key: IdempotencyKey, timeout_seconds: Annotated[int | None, SECONDS] = None,
               metadata: Metadata = None) -> Hold:
    """Reserve ``amount`` on an account for a later capture to ``credit_account_id`` (escrow)."""
    raise NotImplementedError


@procedure("pgwallet.capture_hold")
def capture_hold(hold_id: Annotated[int, ID], idempotency_key: IdempotencyKey,
                 amount: Annotated[int | None, AMOUNT] = None) -> Hold:
    """Pay ``amount`` (all when omitted) of an open hold to its credit account; release the rest."""
    raise NotImplementedError


@procedure("pgwallet.void_hold")
def void_hold(hold_id: Annotated[int, ID], idempotency_key: IdempotencyKey) -> Hold:
    """Cancel an open hold: its amount becomes available again."""
    raise NotImplementedError


@procedure("pgwallet.expire_holds", shape="scalar")
def expire_holds(limit: Annotated[int, BATCH] = 1000) -> int:
    """Release up to ``limit`` holds past their expiry; returns how many. Run it until it returns 0."""
    raise NotImplementedError


@procedure("pgwallet.get_hold")
def get_hold(hold_id: Annotated[int, ID]) -> Hold:
    """One hold: its status, amounts and settlement (``replayed`` is always false here)."""
    raise NotImplementedError


@procedure("pgwallet.get_account", shape="row")
def get_account(account_id: AccountId) -> Account:
    """One account with balance, held and available amounts."""
    raise NotImplementedError


@procedure("pgwallet.account_history", shape="rows")
def account_history(account_id: AccountId, limit: Annotated[int, LIMIT] = 50,
                    before_entry_id: Annotated[int | None, ID] = None) -> list[HistoryEntry]:
    """The account's entries, newest first; pass the last ``entry_id`` seen for the next page."""
    raise NotImplementedError


@procedure("pgwallet.purge_idempotency_keys", shape="scalar")
def purge_idempotency_keys(batch_size: Annotated[int, BATCH] = 1000) -> int:
    """Delete up to ``batch_size`` expired idempotency keys; returns how many. Run it until it returns 0."""
    raise NotImplementedError


@procedure("pgwallet.check_invariants", shape="rows")
def check_invariants() -> list[InvariantViolation]:
    """Every violated ledger invariant; an empty list means the ledger is sound."""
    raise NotImplementedError


class LedgerProcedures:
    """The ledger core's procedures, as methods of both clients (see ``pyapp.api``)."""

    open_account = open_account
    set_account_status = set_account_status
    transfer = transfer
    post_operation = post_operation
    place_hold = place_hold
    capture_hold = capture_hold
    void_hold = void_hold
    expire_holds = expire_holds
    get_account = get_account
    get_hold = get_hold
    account_history = account_history
    purge_idempotency_keys = purge_idempotency_keys
    check_invariants = check_invariants
