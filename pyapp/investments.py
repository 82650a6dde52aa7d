"""Specs of investments (``sql/procedures/60_investments.sql``): products, investments, dividends,
feature flags and rate limits.

``execute_investment`` and ``distribute_dividend`` return at once with a :class:`JobTicket`; a job worker
(``pyapp.job_worker``) runs ``run_investment_execution`` / ``run_dividend``, and the payout workers pay
the dividend's holders. Every call that writes is idempotent, guarded by feature flags
(``FEATURE_DISABLED``, 403) and rate-limited per user (``RATE_LIMITED``, 429, with ``retry_after``).
See ``docs/investments.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pyapp.jobs import Job, JobId, Worker, _whole
from pyapp.procedures import AMOUNT, BATCH, CURRENCY, FLAG, ID, IDENTIFIER, KEY, NAME, USER, procedure
from pyapp.results import Result

FLAGS = ("investment_module_enabled", "investment_execution_enabled", "dividend_distribution_enabled")
ACTIONS = ("create_investment_product", "create_investment", "execute_investment", "distribute_dividend")
MAX_CALLS = _whole(1, 1_000_000)
WINDOW = _whole(1, 31_536_000)

Key = Annotated[str, KEY]
#: The active staff member a staff call acts as (pgwallet.staff): recorded, and what rate limits count.
StaffId = Annotated[int, ID]


@dataclass(frozen=True)
class Product(Result):
    """An investment product: investments go to ``account_id``, dividends come from ``dividend_account_id``."""

    product_id: int
    name: str
    currency: str
    account_id: int
    dividend_account_id: int
    created_by: str
    invested_amount: int
    holders: int
    replayed: bool
    created_at: datetime | None = None


@dataclass(frozen=True)
class Investment(Result):
    """Status: pending -> queued -> executed | failed | cancelled (it follows its job)."""

    investment_id: int
    product_id: int
    wallet_account_id: int
    amount: int
    status: str
    replayed: bool
    job_id: int | None = None
    transfer_id: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    queued_at: datetime | None = None
    executed_at: datetime | None = None


@dataclass(frozen=True)
class JobTicket(Result):
    """What a queued call returns at once: the job to follow, status ``queued``, the key, a message."""

    job_id: int
    status: str
    idempotency_key: str
    message: str
    replayed: bool
    investment_id: int | None = None
    dividend_id: int | None = None
    external_reference: str | None = None  # the execution's reference, stable per investment


@dataclass(frozen=True)
class Dividend(Result):
    """Status: queued -> distributing (its payout job pays the holders) -> distributed (it paid them all)
    | failed | cancelled."""

    dividend_id: int
    product_id: int
    amount: int
    status: str
    paid_amount: int
    created_by: str
    replayed: bool
    job_id: int | None = None
    payout_job_id: int | None = None
    payout_status: str | None = None
    holders: int | None = None
    error: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class FeatureFlag(Result):
    name: str
    enabled: bool
    description: str
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class RateLimit(Result):
    action: str
    max_calls: int
    window_seconds: int
    description: str


def _flags(value: Any) -> list[FeatureFlag]:
    return [FeatureFlag.from_mapping(f) for f in value]


def _limits(value: Any) -> list[RateLimit]:
    return [RateLimit.from_mapping(r) for r in value]


@procedure("pgwallet.create_investment_product")
def create_investment_product(name: Annotated[str, NAME], currency: Annotated[str, CURRENCY], staff_id: StaffId,
                              idempotency_key: Key) -> Product:
    """A product with its account (receives the investments) and its dividend account (staff)."""
    raise NotImplementedError


@procedure("pgwallet.get_investment_product")
def get_investment_product(product_id: Annotated[int, ID]) -> Product:
    """One product, with its executed total and number of holders."""
    raise NotImplementedError


@procedure("pgwallet.create_investment")
def create_investment(wallet_account_id: Annotated[int, ID], product_id: Annotated[int, ID],
                      amount: Annotated[int, AMOUNT], idempotency_key: Key, *,
                      acting_user: Annotated[str, USER]) -> Investment:
    """A pending investment out of a wallet of ``acting_user`` (``FORBIDDEN`` otherwise); nothing moves
    until it is executed."""
    raise NotImplementedError


@procedure("pgwallet.execute_investment")
def execute_investment(investment_id: Annotated[int, ID], idempotency_key: Key, *,
                       acting_user: Annotated[str, USER]) -> JobTicket:
    """Queue the execution of a pending investment of ``acting_user``'s; returns at once with the job id."""
    raise NotImplementedError


@procedure("pgwallet.get_investment")
def get_investment(investment_id: Annotated[int, ID]) -> Investment:
    """One investment and its status."""
    raise NotImplementedError


@procedure("pgwallet.run_investment_execution")
def run_investment_execution(job_id: JobId, worker: Worker) -> Job:
    """The body of an ``investment_execution`` job (workers call it): money moved once, job finished."""
    raise NotImplementedError


@procedure("pgwallet.distribute_dividend")
def distribute_dividend(product_id: Annotated[int, ID], amount: Annotated[int, AMOUNT], idempotency_key: Key,
                        staff_id: StaffId) -> JobTicket:
    """Queue a dividend paid pro rata to the holders from the product's dividend account (staff)."""
    raise NotImplementedError


@procedure("pgwallet.run_dividend")
def run_dividend(job_id: JobId, worker: Worker) -> Job:
    """The body of a ``dividend`` job (workers call it): creates the payout job that pays the holders."""
    raise NotImplementedError


@procedure("pgwallet.get_dividend")
def get_dividend(dividend_id: Annotated[int, ID]) -> Dividend:
    """One dividend, its status and its payout's progress."""
    raise NotImplementedError


@procedure("pgwallet.list_feature_flags", decode=_flags)
def list_feature_flags() -> list[FeatureFlag]:
    """Every feature flag and its state."""
    raise NotImplementedError


@procedure("pgwallet.set_feature_flag")
def set_feature_flag(name: Annotated[str, IDENTIFIER], enabled: Annotated[bool, FLAG],
                     staff_id: StaffId) -> FeatureFlag:
    """Switch a flag on or off; the next call sees it (staff)."""
    raise NotImplementedError


@procedure("pgwallet.list_rate_limits", decode=_limits)
def list_rate_limits() -> list[RateLimit]:
    """The configured rate limits."""
    raise NotImplementedError


@procedure("pgwallet.set_rate_limit")
def set_rate_limit(action: Annotated[str, IDENTIFIER], max_calls: Annotated[int, MAX_CALLS],
                   window_seconds: Annotated[int, WINDOW]) -> RateLimit:
    """Change an action's limit (staff)."""
    raise NotImplementedError


@procedure("pgwallet.purge_rate_limit_hits", shape="scalar")
def purge_rate_limit_hits(batch_size: Annotated[int, BATCH] = 1000) -> int:
    """Delete up to ``batch_size`` rate-limit hits older than every window; call until it returns 0."""
    raise NotImplementedError


class InvestmentProcedures:
    """Investments, flags and rate limits, as methods of both clients (see ``pyapp.api``)."""

    create_investment_product = create_investment_product
    get_investment_product = get_investment_product
    create_investment = create_investment
    execute_investment = execute_investment
    get_investment = get_investment
    run_investment_execution = run_investment_execution
    distribute_dividend = distribute_dividend
    run_dividend = run_dividend
    get_dividend = get_dividend
    list_feature_flags = list_feature_flags
    set_feature_flag = set_feature_flag
    list_rate_limits = list_rate_limits
    set_rate_limit = set_rate_limit
    purge_rate_limit_hits = purge_rate_limit_hits
