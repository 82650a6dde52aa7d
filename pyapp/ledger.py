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
    USER,
    one_of,
    procedure,
)
from pyapp.results import Account, HistoryEntry, Hold, InvariantViolation, Operation, Transfer

ACCOUNT_KINDS = ("card", "user_wallet", "performer", "merchant", "revenue", "fees", "clearing",
                 "cash_drawer", "escrow", "pool", "system")
ORDINARY_KINDS = tuple(k for k in ACCOUNT_KINDS if k not in ("system", "clearing"))
ACCOUNT_STATUSES = ("active", "frozen", "closed")

AccountId = Annotated[int, ID]
Amount = Annotated[int, AMOUNT]
IdempotencyKey = Annotated[str, KEY]
Metadata = Annotated[Mapping[str, Any] | None, OBJECT]
ActingUser = Annotated[str, USER]


@procedure("pgwallet.open_account", decode=Account.from_mapping)
def open_account(currency: Annotated[str, CURRENCY],
                 kind: Annotated[str, one_of(*ORDINARY_KINDS)],
                 name: Annotated[str | None, NAME] = None,
                 collector: Annotated[bool | None, FLAG] = None,
                 metadata: Metadata = None,
                 owner: Annotated[str | None, USER] = None) -> Account:
    """Open an ordinary account, for end user ``owner`` when given (the ``user_*`` calls debit it only for
    that user). It never goes negative: money enters the ledger only through system and clearing accounts,
    which an admin opens (:func:`open_system_account`)."""
    raise NotImplementedError


@procedure("pgwallet.open_system_account", decode=Account.from_mapping)
def open_system_account(currency: Annotated[str, CURRENCY],
                        kind: Annotated[str, one_of(*ACCOUNT_KINDS)],
                        name: Annotated[str | None, NAME] = None,
                        allow_negative: Annotated[bool | None, FLAG] = None,
                        collector: Annotated[bool | None, FLAG] = None,
                        metadata: Metadata = None) -> Account:
    """Open any account, one that may go negative included (admin tier): where money enters the ledger.
    Revenue, fees and clearing accounts are collectors by default; clearing and system accounts may go
    negative by default."""
    raise NotImplementedError


@procedure("pgwallet.set_account_status", decode=Account.from_mapping)
def set_account_status(account_id: AccountId, status: Annotated[str, one_of(*ACCOUNT_STATUSES)]) -> Account:
    """Freeze, unfreeze or close an account (closing needs a zero balance and no open hold)."""
    raise NotImplementedError


@procedure("pgwallet.transfer")
def transfer(debit_account_id: AccountId, credit_account_id: AccountId, amount: Amount,
             idempotency_key: IdempotencyKey, metadata: Metadata = None) -> Transfer:
    """Move ``amount`` between two accounts of one currency, once per idempotency key (staff tier; never out
    of an account that may go negative: that is :func:`fund_account`)."""
    raise NotImplementedError


@procedure("pgwallet.user_transfer")
def user_transfer(acting_user: ActingUser, debit_account_id: AccountId, credit_account_id: AccountId,
                  amount: Amount, idempotency_key: IdempotencyKey, metadata: Metadata = None) -> Transfer:
    """End user ``acting_user`` moves ``amount`` out of an account of theirs (``FORBIDDEN`` otherwise)."""
    raise NotImplementedError


@procedure("pgwallet.fund_account")
def fund_account(debit_account_id: AccountId, credit_account_id: AccountId, amount: Amount,
                 idempotency_key: IdempotencyKey, metadata: Metadata = None) -> Transfer:
    """Move ``amount`` into ``credit_account_id`` out of any account, one that may go negative included
    (admin tier): how money enters the ledger."""
    raise NotImplementedError


@procedure("pgwallet.post_operation")
def post_operation(legs: Annotated[Sequence[Mapping[str, int]], LEGS], idempotency_key: IdempotencyKey,
                   kind: Annotated[str | None, IDENTIFIER] = None, metadata: Metadata = None) -> Operation:
    """Post several legs ``{debit_account_id, credit_account_id, amount}`` as one operation, all or none
    (staff tier; its kind may not be one the domains write)."""
    raise NotImplementedError


@procedure("pgwallet.place_hold")
def place_hold(account_id: AccountId, credit_account_id: AccountId, amount: Amount,
               idempotency_key: IdempotencyKey, timeout_seconds: Annotated[int | None, SECONDS] = None,
               metadata: Metadata = None) -> Hold:
    """Reserve ``amount`` on an account for a later capture to ``credit_account_id`` (escrow; staff tier)."""
    raise NotImplementedError


@procedure("pgwallet.user_place_hold")
def user_place_hold(acting_user: ActingUser, account_id: AccountId, credit_account_id: AccountId, amount: Amount,
                    idempotency_key: IdempotencyKey, timeout_seconds: Annotated[int | None, SECONDS] = None,
                    metadata: Metadata = None) -> Hold:
    """:func:`place_hold` on an account of end user ``acting_user``."""
    raise NotImplementedError


@procedure("pgwallet.capture_hold")
def capture_hold(hold_id: Annotated[int, ID], idempotency_key: IdempotencyKey,
                 amount: Annotated[int | None, AMOUNT] = None) -> Hold:
    """Pay ``amount`` (all when omitted) of an open hold to its credit account; release the rest."""
    raise NotImplementedError


@procedure("pgwallet.user_capture_hold")
def user_capture_hold(acting_user: ActingUser, hold_id: Annotated[int, ID], idempotency_key: IdempotencyKey,
                      amount: Annotated[int | None, AMOUNT] = None) -> Hold:
    """:func:`capture_hold` by end user ``acting_user``, the hold's payer or payee."""
    raise NotImplementedError


@procedure("pgwallet.void_hold")
def void_hold(hold_id: Annotated[int, ID], idempotency_key: IdempotencyKey) -> Hold:
    """Cancel an open hold: its amount becomes available again."""
    raise NotImplementedError


@procedure("pgwallet.user_void_hold")
def user_void_hold(acting_user: ActingUser, hold_id: Annotated[int, ID], idempotency_key: IdempotencyKey) -> Hold:
    """:func:`void_hold` by end user ``acting_user``, the hold's payer or payee."""
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


@procedure("pgwallet.list_accounts", shape="rows")
def list_accounts(kind: Annotated[str | None, one_of(*ACCOUNT_KINDS)] = None, limit: Annotated[int, LIMIT] = 100,
                  after_id: Annotated[int | None, ID] = None) -> list[Account]:
    """Accounts in id order with their balances (of one kind when given); pass the last ``id`` for the next page."""
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
    open_system_account = open_system_account
    set_account_status = set_account_status
    transfer = transfer
    user_transfer = user_transfer
    fund_account = fund_account
    post_operation = post_operation
    place_hold = place_hold
    user_place_hold = user_place_hold
    capture_hold = capture_hold
    user_capture_hold = user_capture_hold
    void_hold = void_hold
    user_void_hold = user_void_hold
    expire_holds = expire_holds
    get_account = get_account
    get_hold = get_hold
    account_history = account_history
    list_accounts = list_accounts
    purge_idempotency_keys = purge_idempotency_keys
    check_invariants = check_invariants
