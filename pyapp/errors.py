"""One exception hierarchy for both drivers, keyed by the SQLSTATEs of ``pgwallet.error_catalogue``.

Procedures raise with a custom SQLSTATE of class ``W``; nothing here reads message text. psycopg
exposes the code as ``e.sqlstate``, asyncpg as ``UnknownPostgresError.sqlstate``: both end here.
``tests/test_errors.py`` proves this table and the SQL catalogue agree.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar


class PgWalletError(Exception):
    """Base of every error a pgwallet call raises. ``field`` names the offending input, if any.

    Three outcomes a caller must tell apart: a refusal (nothing changed; the same call is refused again),
    ``retryable`` (nothing changed; the same call may succeed now), and ``in_doubt`` (the call reached the
    database and the answer was lost: it may have committed; retry with the same idempotency key to learn
    which, see ``Client(retries=...)``)."""

    code: ClassVar[str] = "SERVER_ERROR"
    sqlstate: ClassVar[str | None] = None
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal error"
    retryable: bool = False
    in_doubt: bool = False

    def __init__(self, message: str | None = None, *, detail: str | None = None, field: str | None = None,
                 hint: str | None = None, retryable: bool | None = None) -> None:
        self.message = message or self.default_message
        self.detail = detail or None
        self.field = field or None
        self.hint = hint or None
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the JSON envelope."""
        return {"code": self.code, "message": self.message, "detail": self.detail, "field": self.field,
                "retryable": self.retryable, "in_doubt": self.in_doubt}


class ServerError(PgWalletError):
    """Something unexpected; never a business rule."""


class DatabaseError(PgWalletError):
    """The call did not reach the database (it could not connect, or the pool had no connection in time):
    nothing happened. ``retryable`` when it may work a moment later (refused, timed out, a connection lost
    before the statement was sent), not when the settings are wrong (password, database name)."""

    code = "DATABASE_ERROR"
    http_status = 503
    default_message = "The database is unavailable"


class OutcomeUnknown(DatabaseError):
    """The statement was sent and the connection died before its answer came back (a crash, a failover, a
    killed backend): the call may have committed or not. Retry it with the same idempotency key: a
    committed call answers its first result (``replayed``), one that never committed runs now."""

    code = "OUTCOME_UNKNOWN"
    retryable = True
    in_doubt = True
    default_message = "The call may or may not have happened: retry it with the same idempotency key"


class StatementTimeout(DatabaseError):
    """The statement ran past ``statement_timeout`` and was cancelled: it rolled back, nothing changed."""

    code = "STATEMENT_TIMEOUT"
    retryable = True
    default_message = "The call took too long and was cancelled; nothing changed"


class NotMigrated(DatabaseError):
    """The database has no pgwallet schema, or an older one than this code: run ``pgwallet migrate``."""

    code = "NOT_MIGRATED"
    default_message = "The database is not migrated: run `pgwallet migrate`"


class SerializationFailure(DatabaseError):
    """A serialization failure or deadlock (40001, 40P01): the same call may simply be retried."""

    code = "SERIALIZATION_FAILURE"
    retryable = True
    default_message = "Concurrent update, retry the request"


class RequestRejected(PgWalletError):
    """A call refused by a rule: nothing changed, and the same call will be refused again."""


class InvalidRequest(RequestRejected):
    code, sqlstate, http_status, default_message = "INVALID_REQUEST", "W0001", 400, "The request is invalid"


class NotFound(RequestRejected):
    code, sqlstate, http_status, default_message = "NOT_FOUND", "W0002", 404, "Not found"


class AccountNotFound(NotFound):
    code, sqlstate, default_message = "ACCOUNT_NOT_FOUND", "W0003", "Account not found"


class AccountFrozen(RequestRejected):
    code, sqlstate, http_status, default_message = "ACCOUNT_FROZEN", "W0004", 409, "Account is frozen"


class AccountClosed(RequestRejected):
    code, sqlstate, http_status, default_message = "ACCOUNT_CLOSED", "W0005", 409, "Account is closed"


class CurrencyMismatch(RequestRejected):
    code, sqlstate, http_status = "CURRENCY_MISMATCH", "W0006", 422
    default_message = "Accounts hold different currencies"


class InsufficientFunds(RequestRejected):
    code, sqlstate, http_status, default_message = "INSUFFICIENT_FUNDS", "W0007", 422, "Insufficient funds"


class DuplicateRequest(RequestRejected):
    code, sqlstate, http_status = "DUPLICATE_REQUEST", "W0008", 409
    default_message = "Idempotency key already used for a different request"


class HoldNotFound(NotFound):
    code, sqlstate, default_message = "HOLD_NOT_FOUND", "W0009", "Hold not found"


class HoldExpired(RequestRejected):
    code, sqlstate, http_status, default_message = "HOLD_EXPIRED", "W0010", 409, "Hold has expired"


class InvalidStateTransition(RequestRejected):
    code, sqlstate, http_status = "INVALID_STATE_TRANSITION", "W0011", 409
    default_message = "Invalid state transition"


class CardNotFound(NotFound):
    code, sqlstate, default_message = "CARD_NOT_FOUND", "W0012", "Card not found"


class CardBlocked(RequestRejected):
    """The card's own status (lost, stolen, replaced, cashed out), not the ledger account's frozen status."""

    code, sqlstate, http_status, default_message = "CARD_BLOCKED", "W0013", 409, "Card is blocked"


class LimitExceeded(RequestRejected):
    code, sqlstate, http_status = "LIMIT_EXCEEDED", "W0014", 422
    default_message = "A recharge limit is exceeded"


class OrderNotFound(NotFound):
    code, sqlstate, default_message = "ORDER_NOT_FOUND", "W0015", "Order not found"


class StaffNotAuthorized(RequestRejected):
    code, sqlstate, http_status = "STAFF_NOT_AUTHORIZED", "W0016", 403
    default_message = "Staff member is unknown or not active"


class CheckpointNotFound(NotFound):
    code, sqlstate, default_message = "CHECKPOINT_NOT_FOUND", "W0017", "Checkpoint not found"


class BarNotFound(NotFound):
    code, sqlstate, default_message = "BAR_NOT_FOUND", "W0018", "Point of sale not found"


class CardUidTaken(RequestRejected):
    code, sqlstate, http_status = "CARD_UID_TAKEN", "W0019", 409
    default_message = "A card with this NFC uid exists"


class QueueFull(RequestRejected):
    """The performer's queue holds its most open items: the request may succeed later, not now."""

    code, sqlstate, http_status = "QUEUE_FULL", "W0020", 409
    default_message = "The performer's queue is full"


class AlreadyProcessing(RequestRejected):
    """The performer is already performing another item: finish or abandon it first."""

    code, sqlstate, http_status = "ALREADY_PROCESSING", "W0021", 409
    default_message = "The performer is already performing another item"


class PayoutJobNotFound(NotFound):
    code, sqlstate, default_message = "PAYOUT_JOB_NOT_FOUND", "W0030", "Payout job not found"


class FeatureDisabled(RequestRejected):
    """A feature flag (a kill switch operators turn off without a deploy) refuses the call; the detail
    names the flag."""

    code, sqlstate, http_status, default_message = "FEATURE_DISABLED", "W0040", 403, "This feature is disabled"


class RateLimited(RequestRejected):
    """Too many calls of this action by this user in the window; ``retry_after`` is the number of seconds
    until the next call is allowed (the database sends it in the hint as ``retry_after=N``)."""

    code, sqlstate, http_status, default_message = "RATE_LIMITED", "W0041", 429, "Too many requests"

    def __init__(self, message: str | None = None, *, detail: str | None = None, field: str | None = None,
                 hint: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, detail=detail, field=field, hint=hint)
        if retry_after is None and hint:
            found = re.search(r"retry_after=(\d+)", hint)
            retry_after = int(found.group(1)) if found else None
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retry_after": self.retry_after}


class JobNotFound(NotFound):
    code, sqlstate, default_message = "JOB_NOT_FOUND", "W0042", "Job not found"


class ProductNotFound(NotFound):
    code, sqlstate, default_message = "PRODUCT_NOT_FOUND", "W0043", "Investment product not found"


class InvestmentNotFound(NotFound):
    code, sqlstate, default_message = "INVESTMENT_NOT_FOUND", "W0044", "Investment not found"


class DividendNotFound(NotFound):
    code, sqlstate, default_message = "DIVIDEND_NOT_FOUND", "W0045", "Dividend not found"


class Forbidden(RequestRejected):
    """The caller may not do this: the account is not the acting user's, or the login's tier lacks the
    privilege (PostgreSQL's 42501, whose message names the function or table, comes here too)."""

    code, sqlstate, http_status, default_message = "FORBIDDEN", "W0046", 403, "The caller may not do this"


# Each domain adds its catalogued errors above this line, one subclass per row of pgwallet.error_catalogue
# (SQLSTATE ranges: ledger W0001-W0011, cashless W0012-W0019, queue W0020-W0029, payouts W0030-W0039,
# investments and jobs W0040-W0049).


def _catalogued(cls: type[PgWalletError]) -> list[type[PgWalletError]]:
    """``cls`` and its subclasses that declare a SQLSTATE of their own."""
    found = [cls] if cls.sqlstate and "sqlstate" in vars(cls) else []
    for sub in cls.__subclasses__():
        found.extend(_catalogued(sub))
    return found


#: Errors raised by SQL, by SQLSTATE: the Python side of ``pgwallet.error_catalogue``.
CATALOGUE: dict[str, type[PgWalletError]] = {
    cls.sqlstate: cls for cls in _catalogued(PgWalletError) if cls.sqlstate
}

#: Every code a caller can see, including those raised only by Python.
_PYTHON_ONLY: tuple[type[PgWalletError], ...] = (ServerError, DatabaseError, SerializationFailure, OutcomeUnknown,
                                                 StatementTimeout, NotMigrated)
BY_CODE: dict[str, type[PgWalletError]] = {cls.code: cls for cls in (*CATALOGUE.values(), *_PYTHON_ONLY)}

_RETRYABLE_SQLSTATES = {"40001", "40P01"}
# the server ended the session (shutdown, crash recovery, pg_terminate_backend): after the statement was
# sent, its commit may have happened (a transaction waiting for a synchronous standby has)
_SESSION_ENDED = ("57P01", "57P02", "57P03")
# no pgwallet schema, or an older one: a function or its schema does not exist
_NOT_MIGRATED = {"3F000", "42883"}


def from_sqlstate(sqlstate: str | None, message: str | None = None, *, detail: str | None = None,
                  hint: str | None = None, field: str | None = None, sent: bool = False) -> PgWalletError:
    """Map a database error to the hierarchy: catalogue codes, retryable conflicts, the rest. ``sent``: the
    statement had been sent when the error came, so a lost connection leaves the outcome in doubt."""
    if sqlstate in CATALOGUE:
        cls = CATALOGUE[sqlstate]
        return cls(cls.default_message, detail=detail, hint=hint, field=field)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return SerializationFailure(detail=message)
    if sent and (sqlstate is None or sqlstate.startswith("08") or sqlstate in _SESSION_ENDED):
        return OutcomeUnknown(detail=message)
    if sqlstate == "57014":
        return StatementTimeout(detail=message)
    if sqlstate in _NOT_MIGRATED:
        return NotMigrated(detail=message)
    if sqlstate == "42501":  # insufficient_privilege: the login's tier does not include this call
        return Forbidden(detail=f"{message}: this login's role tier may not make this call (see the README's "
                                "role matrix)")
    if sqlstate is None or sqlstate.startswith(("08", "57P", "53")):
        return DatabaseError(detail=message, retryable=True)
    return ServerError(detail=f"{sqlstate}: {message}")


def invalid(field: str, rule: str) -> InvalidRequest:
    """The error for a value refused before the database is touched."""
    return InvalidRequest(detail=f"{field}: {rule}", field=field)
