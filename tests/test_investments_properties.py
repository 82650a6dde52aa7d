"""Properties of every job and investment wrapper: bad input gets a typed error naming the field, and
changes nothing.

As in tests/test_properties.py, each generated call corrupts exactly ONE argument of an otherwise valid
call (fresh idempotency keys), so a call that is not refused would change the database and fail the
snapshot check; ``test_valid_calls_succeed`` proves the uncorrupted calls do succeed (and change it).
The world holds a job in every state, jobs leased by worker ``w`` for the finishing calls, products with
and without holders, and wallets in every state.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from conftest import OWNER, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from test_properties import (
    BAD_FLAG,
    BAD_OBJECT,
    ID,
    JSON_VALUE,
    JUNK,
    KEY,
    Bad,
    bad_choice,
    bad_int,
    bad_text,
    expect_refused,
    missing_ids,
    one_bad_argument,
    refusal,
)

from pyapp import Client, errors
from pyapp.api import Procedures
from pyapp.edge import Edge
from pyapp.investments import FLAGS, InvestmentProcedures
from pyapp.jobs import JOB_STATUSES, JobProcedures
from pyapp.procedures import BIGINT_MAX, Procedure

JOB_METHODS = ("enqueue_job", "fetch_jobs", "complete_job", "fail_job", "rescue_expired_jobs", "retry_job",
               "cancel_job", "get_job", "list_jobs", "purge_jobs")
INVEST_METHODS = ("create_investment_product", "get_investment_product", "create_investment",
                  "execute_investment", "get_investment", "run_investment_execution", "distribute_dividend",
                  "run_dividend", "get_dividend", "list_feature_flags", "set_feature_flag", "list_rate_limits",
                  "set_rate_limit", "purge_rate_limit_hits")
METHODS = JOB_METHODS + INVEST_METHODS
READ_ONLY = {"get_job", "list_jobs", "get_investment_product", "get_investment", "get_dividend",
             "list_feature_flags", "list_rate_limits"}


@dataclass(frozen=True)
class InvestWorld:
    # jobs
    kind: str  # the prefix of this world's job kinds
    queued: int  # kind <kind>.queued (cancel)
    running: int  # kind <kind>.running, leased by w (complete, fail)
    succeeded: int
    failed: int  # (retry)
    used_job_key: str  # of kind <kind>.queued, payload {"used": true}
    # investments
    product: int  # with one holder, a funded dividend account
    empty_product: int  # no holder
    product_name: str
    investor: int  # a funded wallet with no rate-limit hit
    frozen: int
    closed: int
    usd: int
    card: int
    pending: int  # investment
    executed: int  # investment
    execution_job: int  # leased by w
    dividend_job: int  # leased by w
    dividend: int
    used_key: str  # used by every investment call, for another request
    dividend_funds: int
    staff: int  # the active staff member the staff calls act as


def build_world(c: Client, url: str) -> InvestWorld:
    tag = uuid.uuid4().hex[:8]
    kind = f"prop{tag}"  # job kinds of this world only (several worlds share a database)
    world = c.open_system_account("EUR", "system").id
    ops = c.create_staff(f"prop {tag}").id
    # jobs in every state
    queued = c.enqueue_job(f"{kind}.queued", {"used": True}, f"{tag}-used").job_id
    running = c.enqueue_job(f"{kind}.running", {}, f"{tag}-running").job_id
    c.fetch_jobs("w", [f"{kind}.running"], 1, 3600)
    succeeded = c.enqueue_job(f"{kind}.done", {}, f"{tag}-done").job_id
    c.fetch_jobs("w", [f"{kind}.done"])
    c.complete_job(succeeded, "w")
    failed = c.enqueue_job(f"{kind}.failed", {}, f"{tag}-failed").job_id
    c.fetch_jobs("w", [f"{kind}.failed"])
    c.fail_job(failed, "w", "boom", final=True)
    c.enqueue_job(f"{kind}.fetch", {}, f"{tag}-fetch")  # due, for fetch_jobs
    c.enqueue_job(f"{kind}.expired", {}, f"{tag}-expired")  # leased by a dead worker, for rescue_expired_jobs
    c.fetch_jobs("dead", [f"{kind}.expired"])
    old = c.enqueue_job(f"{kind}.old", {}, f"{tag}-old").job_id  # succeeded long ago, for purge_jobs
    c.fetch_jobs("w", [f"{kind}.old"])
    c.complete_job(old, "w")
    # investments
    product = c.create_investment_product(f"{tag} fund", "EUR", ops, f"{tag}-used")
    empty = c.create_investment_product(f"{tag} empty", "EUR", ops, f"{tag}-empty")
    wallets = []
    for i in range(3):
        wallet = c.open_account("EUR", "user_wallet", owner=f"{tag}-investor-{i}").id
        c.fund_account(world, wallet, 10_000, f"{tag}-fund-{i}")
        wallets.append(wallet)
    holder, investor, other = wallets
    executed = c.create_investment(holder, product.product_id, 100, f"{tag}-used").investment_id
    c.execute_investment(executed, f"{tag}-used")
    for job in c.fetch_jobs("setup", ["investment_execution"], 1000):  # this world's (and older worlds')
        c.run_investment_execution(job.job_id, "setup")
    leased = c.create_investment(other, product.product_id, 200, f"{tag}-leased").investment_id
    execution_job = c.execute_investment(leased, f"{tag}-leased").job_id
    c.fetch_jobs("w", ["investment_execution"], 1, 3600)
    pending = c.create_investment(other, product.product_id, 300, f"{tag}-pending").investment_id
    c.fund_account(world, product.dividend_account_id, 1000, f"{tag}-fund-dividends")
    for job in c.fetch_jobs("setup", ["dividend"], 1000):  # older worlds' dividends: out of the way
        c.run_dividend(job.job_id, "setup")
    ticket = c.distribute_dividend(product.product_id, 100, f"{tag}-used", ops)
    c.fetch_jobs("w", ["dividend"], 1, 3600)
    frozen = c.set_account_status(c.open_account("EUR", "user_wallet", owner=f"{tag}-f").id, "frozen").id
    closed = c.set_account_status(c.open_account("EUR", "user_wallet", owner=f"{tag}-c").id, "closed").id
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update pgwallet.jobs set locked_until = now() - interval '1 minute' where kind = %s",
                     (f"{kind}.expired",))
        conn.execute("update pgwallet.jobs set finished_at = now() - interval '2 days' where id = %s", (old,))
        conn.execute("update pgwallet.rate_limit_hits set created_at = created_at - interval '2 hours' "
                     "where subject = %s", (f"staff:{ops}",))  # old hits, for purge_rate_limit_hits
    usd = c.open_account("USD", "user_wallet", owner=f"{tag}-u").id
    card = c.open_account("EUR", "card", owner=f"{tag}-card").id
    return InvestWorld(kind, queued, running, succeeded, failed, f"{tag}-used", product.product_id, empty.product_id,
                       product.name, investor, frozen, closed, usd, card, pending, executed, execution_job,
                       ticket.job_id, ticket.dividend_id or 0, f"{tag}-used", 1000, ops)


def valid_call(method: str, w: InvestWorld) -> dict[str, Any]:
    fresh = f"prop-{uuid.uuid4().hex}"
    return {
        "enqueue_job": {"kind": f"{w.kind}.queued", "payload": {"n": 1}, "idempotency_key": fresh, "max_attempts": 2,
                        "run_after": datetime.now(UTC)},
        "fetch_jobs": {"worker": "p", "kinds": [f"{w.kind}.fetch"], "limit": 1, "lease_seconds": 30},
        "complete_job": {"job_id": w.running, "worker": "w", "result": {"ok": True}},
        "fail_job": {"job_id": w.running, "worker": "w", "error": "boom", "final": False},
        "rescue_expired_jobs": {"limit": 10},
        "retry_job": {"job_id": w.failed},
        "cancel_job": {"job_id": w.queued},
        "get_job": {"job_id": w.running},
        "list_jobs": {"status": "queued", "kind": f"{w.kind}.queued", "limit": 10, "before_id": BIGINT_MAX},
        "purge_jobs": {"batch_size": 10},
        "create_investment_product": {"name": fresh, "currency": "EUR", "staff_id": w.staff, "idempotency_key": fresh},
        "get_investment_product": {"product_id": w.product},
        "create_investment": {"wallet_account_id": w.investor, "product_id": w.product, "amount": 10,
                              "idempotency_key": fresh, "acting_user": OWNER},
        "execute_investment": {"investment_id": w.pending, "idempotency_key": fresh, "acting_user": OWNER},
        "get_investment": {"investment_id": w.executed},
        "run_investment_execution": {"job_id": w.execution_job, "worker": "w"},
        "distribute_dividend": {"product_id": w.product, "amount": 10, "idempotency_key": fresh, "staff_id": w.staff},
        "run_dividend": {"job_id": w.dividend_job, "worker": "w"},
        "get_dividend": {"dividend_id": w.dividend},
        "list_feature_flags": {},
        "set_feature_flag": {"name": "dividend_distribution_enabled", "enabled": True, "staff_id": w.staff},
        "list_rate_limits": {},
        "set_rate_limit": {"action": "distribute_dividend", "max_calls": 7, "window_seconds": 3600},
        "purge_rate_limit_hits": {"batch_size": 10},
    }[method]


BAD_KIND = st.one_of(JUNK, st.booleans(), st.integers(), st.just(""), st.text(min_size=64, max_size=70),
                     st.text(max_size=10).filter(lambda s: not (s[:1].isascii() and s[:1].islower()) or " " in s
                                                 or any(ch.isupper() for ch in s)))
BAD_KINDS = st.one_of(st.text(max_size=5), st.just([]), JUNK.filter(lambda v: not isinstance(v, list | tuple)),
                      st.lists(BAD_KIND, min_size=1, max_size=2),
                      st.integers(101, 120).map(lambda n: ["prop.fetch"] * n))
BAD_ERROR = st.one_of(st.just("x" * 10_001), bad_text(1, 200, required=True).filter(
    lambda v: not (isinstance(v, str) and len(v) <= 10_000 and "\x00" not in v)))
BAD_MOMENT = st.one_of(JUNK, st.text(max_size=5), st.integers(), st.booleans(), st.just(datetime(2030, 1, 1)))


def refusals(method: str, w: InvestWorld) -> dict[str, list[Bad]]:
    job_id = [Bad(ID), refusal(missing_ids(), "JOB_NOT_FOUND")]
    transition = "INVALID_STATE_TRANSITION"
    not_leased = refusal(st.sampled_from([w.queued, w.succeeded, w.failed]), transition)
    other_worker = refusal(st.sampled_from(["w2", "dead", "W"]), transition, "job_id")
    worker = [Bad(bad_text(1, 200, required=True)), other_worker]
    key = [Bad(KEY), refusal(st.just(w.used_key), "DUPLICATE_REQUEST")]
    staff = [Bad(ID), refusal(missing_ids(), "STAFF_NOT_AUTHORIZED")]

    def acting_user(field: str) -> list[Bad]:
        return [Bad(bad_text(1, 200, required=True).filter(lambda v: v != OWNER)),
                refusal(st.just("mallory"), "FORBIDDEN", field)]
    wallet = [Bad(ID), refusal(missing_ids(), "ACCOUNT_NOT_FOUND"), refusal(st.just(w.frozen), "ACCOUNT_FROZEN"),
              refusal(st.just(w.closed), "ACCOUNT_CLOSED"), refusal(st.just(w.usd), "CURRENCY_MISMATCH"),
              Bad(st.just(w.card))]
    product = [Bad(ID), refusal(missing_ids(), "PRODUCT_NOT_FOUND")]
    return {
        "enqueue_job": {
            "kind": [Bad(BAD_KIND)], "payload": [Bad(BAD_OBJECT)],
            "idempotency_key": [Bad(KEY), refusal(st.just(w.used_job_key), "DUPLICATE_REQUEST")],
            "max_attempts": [Bad(bad_int(1, 100, required=False))], "run_after": [Bad(BAD_MOMENT)],
        },
        "fetch_jobs": {
            "worker": [Bad(bad_text(1, 200, required=True))], "kinds": [Bad(BAD_KINDS)],
            "limit": [Bad(bad_int(1, 1000, required=True))], "lease_seconds": [Bad(bad_int(1, 86_400, required=True))],
        },
        "complete_job": {"job_id": [*job_id, not_leased], "worker": worker, "result": [Bad(BAD_OBJECT)]},
        "fail_job": {"job_id": [*job_id, not_leased], "worker": worker,
                     "error": [Bad(BAD_ERROR)], "final": [Bad(BAD_FLAG)]},
        "rescue_expired_jobs": {"limit": [Bad(bad_int(1, 10_000, required=True))]},
        "retry_job": {"job_id": [*job_id, refusal(st.sampled_from([w.running, w.succeeded]), transition)]},
        "cancel_job": {"job_id": [*job_id, refusal(st.just(w.succeeded), transition)]},
        "get_job": {"job_id": job_id},
        "list_jobs": {
            "status": [Bad(bad_choice(JOB_STATUSES).filter(lambda v: v is not None))],
            "kind": [Bad(BAD_KIND)], "limit": [Bad(bad_int(1, 1000, required=True))],
            "before_id": [Bad(bad_int(1, BIGINT_MAX, required=False))],
        },
        "purge_jobs": {"batch_size": [Bad(bad_int(1, 100_000, required=True))]},
        "create_investment_product": {
            "name": [Bad(bad_text(1, 200, required=True)), refusal(st.just(w.product_name), "DUPLICATE_REQUEST")],
            "currency": [Bad(bad_text(1, 16, required=True)), Bad(st.sampled_from(["XXX", "eur", "EURO"]))],
            "staff_id": staff, "idempotency_key": key,
        },
        "get_investment_product": {"product_id": product},
        "create_investment": {"wallet_account_id": wallet, "product_id": product,
                              "amount": [Bad(bad_int(1, BIGINT_MAX, required=True))], "idempotency_key": key,
                              "acting_user": acting_user("wallet_account_id")},
        "execute_investment": {
            "investment_id": [Bad(ID), refusal(missing_ids(), "INVESTMENT_NOT_FOUND"),
                              refusal(st.just(w.executed), transition)],
            "idempotency_key": key, "acting_user": acting_user("investment_id"),
        },
        "get_investment": {"investment_id": [Bad(ID), refusal(missing_ids(), "INVESTMENT_NOT_FOUND")]},
        "run_investment_execution": {"job_id": [*job_id, not_leased, Bad(st.sampled_from([w.running, w.dividend_job]))],
                                     "worker": worker},
        "distribute_dividend": {
            "product_id": [*product, refusal(st.just(w.empty_product), transition)],
            "amount": [Bad(bad_int(1, BIGINT_MAX, required=True)),
                       refusal(st.integers(w.dividend_funds + 1, BIGINT_MAX), "INSUFFICIENT_FUNDS")],
            "idempotency_key": key, "staff_id": staff,
        },
        "run_dividend": {"job_id": [*job_id, not_leased, Bad(st.sampled_from([w.running, w.execution_job]))],
                         "worker": worker},
        "get_dividend": {"dividend_id": [Bad(ID), refusal(missing_ids(), "DIVIDEND_NOT_FOUND")]},
        "list_feature_flags": {},
        "set_feature_flag": {
            "name": [Bad(bad_text(1, 63, required=True)),
                     Bad(st.text(min_size=1, max_size=20).filter(lambda s: s not in FLAGS and "\x00" not in s))],
            "enabled": [Bad(st.one_of(BAD_FLAG, st.none()))], "staff_id": staff,
        },
        "list_rate_limits": {},
        "set_rate_limit": {
            "action": [Bad(bad_text(1, 63, required=True)),
                       Bad(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s and not s.endswith(
                           ("investment_product", "investment", "dividend"))))],
            "max_calls": [Bad(bad_int(1, 1_000_000, required=True))],
            "window_seconds": [Bad(bad_int(1, 31_536_000, required=True))],
        },
        "purge_rate_limit_hits": {"batch_size": [Bad(bad_int(1, 100_000, required=True))]},
    }[method]


@pytest.fixture
def world(client: Client, db_url: str) -> InvestWorld:
    return build_world(client, db_url)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=max(1, settings.default.max_examples // 3))  # 24 methods: a third of the examples
@given(data=st.data())
def test_one_bad_argument_is_refused_and_changes_nothing(db_url: str, client: Client, world: InvestWorld,
                                                         method: str, data: st.DataObject) -> None:
    case = data.draw(one_bad_argument(method, refusals(method, world), lambda: valid_call(method, world)),
                     label="case")
    before = snapshot(db_url)
    expect_refused(case, lambda: getattr(client, case.method)(**case.kwargs))
    assert snapshot(db_url) == before


def test_every_procedure_is_covered() -> None:
    for domain, methods in ((JobProcedures, JOB_METHODS), (InvestmentProcedures, INVEST_METHODS)):
        declared = {name for name, value in vars(domain).items() if isinstance(value, Procedure)}
        assert declared == set(methods)
        assert all(getattr(Procedures, name) is getattr(domain, name) for name in declared)


def test_valid_calls_succeed(db_url: str, client: Client) -> None:
    for method in METHODS:
        w = build_world(client, db_url)
        before = snapshot(db_url)
        getattr(client, method)(**valid_call(method, w))
        assert (snapshot(db_url) == before) == (method in READ_ONLY), method


SQL_TEXT = st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=12)
SQL_BIGINT = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 20), st.none())
SQL_INT = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-3, 20), st.none())
SQL_CALLS = {
    "create_investment_product": ("select pgwallet.create_investment_product(%s, %s, %s, %s)",
                                  (SQL_TEXT, st.sampled_from(["EUR", "eur", "XXX", ""]), SQL_BIGINT, SQL_TEXT)),
    "create_investment": ("select pgwallet.create_investment(%s, %s, %s, %s, %s)",
                          (SQL_BIGINT, SQL_BIGINT, SQL_BIGINT, SQL_TEXT, SQL_TEXT)),
    "execute_investment": ("select pgwallet.execute_investment(%s, %s, %s)", (SQL_BIGINT, SQL_TEXT, SQL_TEXT)),
    "distribute_dividend": ("select pgwallet.distribute_dividend(%s, %s, %s, %s)",
                            (SQL_BIGINT, SQL_BIGINT, SQL_TEXT, SQL_BIGINT)),
    "enqueue_job": ("select pgwallet.enqueue_job(%s, %s::jsonb, %s, %s)",
                    (SQL_TEXT, st.one_of(JSON_VALUE.map(json.dumps), st.none()), SQL_TEXT, SQL_INT)),
    "fetch_jobs": ("select pgwallet.fetch_jobs(%s, %s::text[], %s, %s)",
                   (SQL_TEXT, st.one_of(st.none(), st.lists(st.one_of(SQL_TEXT, st.none()), max_size=3)),
                    SQL_INT, SQL_INT)),
    "complete_job": ("select pgwallet.complete_job(%s, %s, %s::jsonb)",
                     (SQL_BIGINT, SQL_TEXT, st.one_of(JSON_VALUE.map(json.dumps), st.none()))),
    "fail_job": ("select pgwallet.fail_job(%s, %s, %s, %s)",
                 (SQL_BIGINT, SQL_TEXT, st.one_of(SQL_TEXT, st.none()), st.one_of(st.booleans(), st.none()))),
    "run_investment_execution": ("select pgwallet.run_investment_execution(%s, %s)", (SQL_BIGINT, SQL_TEXT)),
    "run_dividend": ("select pgwallet.run_dividend(%s, %s)", (SQL_BIGINT, SQL_TEXT)),
    "set_feature_flag": ("select pgwallet.set_feature_flag(%s, %s, %s)",
                         (SQL_TEXT, st.one_of(st.booleans(), st.none()), SQL_BIGINT)),
    "set_rate_limit": ("select pgwallet.set_rate_limit(%s, %s, %s)", (SQL_TEXT, SQL_INT, SQL_INT)),
}


@settings(max_examples=max(1, settings.default.max_examples * 2))
@given(data=st.data())
def test_sql_answers_any_input_with_a_catalogued_error(db_url: str, client: Client, world: InvestWorld,
                                                       data: st.DataObject) -> None:
    """Straight to SQL, past the Python checks: a catalogued W error that changed nothing, or an answer."""
    name = data.draw(st.sampled_from(sorted(SQL_CALLS)), label="function")
    statement, strategies = SQL_CALLS[name]
    args = tuple(data.draw(s, label=f"arg {i}") for i, s in enumerate(strategies))
    before = snapshot(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            conn.execute(statement, args)
        except psycopg.Error as exc:
            assert exc.sqlstate is not None and exc.sqlstate.startswith("W"), (name, args, exc)
            assert snapshot(db_url) == before


EDGE_KEYS = ("wallet_account_id", "product_id", "amount", "investment_id", "idempotency_key", "staff_id", "name",
             "currency", "acting_user")


@given(data=st.data())
def test_edge_handlers_answer_any_body_with_a_typed_error(db_url: str, client: Client, world: InvestWorld,
                                                          data: st.DataObject) -> None:
    """Any body and headers: a 4xx envelope with a catalogued code and nothing changed (or a success)."""
    name = data.draw(st.sampled_from(["create_investment", "execute_investment", "distribute_dividend",
                                      "create_investment_product"]), label="handler")
    value = st.one_of(JSON_VALUE, st.sampled_from([world.product, world.investor, world.pending, "1.00", "EUR"]))
    body = data.draw(st.one_of(st.dictionaries(st.sampled_from(EDGE_KEYS), value, max_size=6),
                               st.binary(max_size=20), JSON_VALUE.map(json.dumps)), label="body")
    headers = data.draw(st.dictionaries(st.sampled_from(["Idempotency-Key", "idempotency-key", "X-Request-Id"]),
                                        st.text(max_size=8), max_size=2), label="headers")
    before = snapshot(db_url)
    status, answer = Edge(client).handle(name, body, headers)
    assert status != 500, answer
    if status != 200:
        assert 400 <= status < 500 and answer["error"]["code"] in errors.BY_CODE
        assert snapshot(db_url) == before
