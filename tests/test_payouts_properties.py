"""Properties of every payout wrapper: bad input gets a typed error naming the field, and changes nothing.

As in tests/test_properties.py, each generated call corrupts exactly ONE argument of an otherwise valid
call (a fresh challenge and idempotency key each time), so a call that is not refused would change the
ledger and fail the snapshot check; ``test_valid_payout_calls_succeed`` proves the uncorrupted calls do
succeed. The SQL function is also fed arbitrary JSON directly, past the Python checks: it answers with a
catalogued error, never an internal one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from conftest import snapshot
from hypothesis import given
from hypothesis import strategies as st
from test_properties import (
    ID,
    INVALID,
    JSON_VALUE,
    JUNK,
    KEY,
    Bad,
    Case,
    bad_choice,
    bad_int,
    bad_text,
    expect_refused,
    missing_ids,
    refusal,
)

from pyapp import Client
from pyapp.api import Procedures
from pyapp.payouts import JOB_STATUSES, PayoutProcedures
from pyapp.procedures import BIGINT_MAX, Procedure

METHODS = ("create_payout_job", "process_payout_batch", "next_payout_job", "retry_failed_payout_entries",
           "cancel_payout_job", "pause_payout_job", "resume_payout_job", "get_payout_job_status", "list_payout_jobs",
           "list_failed_payout_entries")
TOO_BIG = 10**18  # ids, shares and amounts have at most 18 digits


@dataclass(frozen=True)
class PayoutWorld:
    pool: int  # EUR pool with money
    winners: tuple[int, ...]
    usd: int
    frozen_pool: int
    closed_pool: int
    collector: int
    fees: int
    job: int  # queued, with pending entries
    completed: int
    cancelled: int
    with_errors: int  # completed_with_errors: one winner was frozen
    paused: int  # paused before any batch
    used_challenge: str
    used_key: str


def build_world(c: Client) -> PayoutWorld:
    tag = uuid.uuid4().hex[:8]
    system = c.open_system_account("EUR", "system").id
    pool = c.open_account("EUR", "pool").id
    c.fund_account(system, pool, 10_000_000, f"{tag}-fund")
    winners = tuple(c.open_account("EUR", "user_wallet").id for _ in range(3))
    frozen_pool = c.open_account("EUR", "pool").id
    c.fund_account(system, frozen_pool, 1000, f"{tag}-fund-frozen")
    c.set_account_status(frozen_pool, "frozen")
    closed_pool = c.set_account_status(c.open_account("EUR", "pool").id, "closed").id
    listed = [{"account_id": w, "share": 1} for w in winners]
    job = c.create_payout_job(f"{tag}-job", pool, 300, 0, listed, f"{tag}-job").job_id
    completed = c.create_payout_job(f"{tag}-done", pool, 300, 0, listed, f"{tag}-done").job_id
    c.process_payout_batch(completed)
    cancelled = c.create_payout_job(f"{tag}-cancelled", pool, 300, 0, listed, f"{tag}-cancelled").job_id
    c.cancel_payout_job(cancelled)
    frozen_winner = c.set_account_status(c.open_account("EUR", "user_wallet").id, "frozen").id
    with_errors = c.create_payout_job(f"{tag}-errors", pool, 300, 0, [*listed, {"account_id": frozen_winner,
                                                                               "share": 1}], f"{tag}-errors").job_id
    c.process_payout_batch(with_errors)
    paused = c.create_payout_job(f"{tag}-paused", pool, 300, 0, listed, f"{tag}-paused").job_id
    c.pause_payout_job(paused)
    return PayoutWorld(pool, winners, c.open_account("USD", "user_wallet").id, frozen_pool, closed_pool,
                       c.open_account("EUR", "revenue").id, c.open_account("EUR", "fees").id, job, completed,
                       cancelled, with_errors, paused, f"{tag}-job", f"{tag}-job")


def valid_call(method: str, w: PayoutWorld) -> dict[str, Any]:
    fresh = uuid.uuid4().hex
    return {
        "create_payout_job": {"challenge_id": f"prop-{fresh}", "pool_account_id": w.pool, "total_pool": 1000,
                              "platform_fee_bps": 250, "winners": [{"account_id": x, "share": 1} for x in w.winners],
                              "idempotency_key": f"prop-{fresh}", "fee_account_id": w.fees},
        "process_payout_batch": {"job_id": w.job, "batch_size": 2},
        "next_payout_job": {},
        "retry_failed_payout_entries": {"job_id": w.with_errors},
        "cancel_payout_job": {"job_id": w.job},
        "pause_payout_job": {"job_id": w.job},
        "resume_payout_job": {"job_id": w.paused},
        "get_payout_job_status": {"job_id": w.job},
        "list_payout_jobs": {"status": "completed_with_errors", "limit": 10, "before_job_id": w.job + 1000},
        "list_failed_payout_entries": {"job_id": w.with_errors, "limit": 10, "after_entry_id": 1},
    }[method]


def winner_refusals(w: PayoutWorld) -> list[Bad]:
    one = st.sampled_from(w.winners).map(lambda a: {"account_id": a, "share": 1})
    bad_value = st.one_of(JUNK, st.booleans(), st.none(), st.text(max_size=5), st.integers(0, 100).map(str),
                          st.integers(max_value=-1), st.integers(min_value=TOO_BIG), st.floats())

    def spliced(bad: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
        return st.builds(lambda before, x: [*before, x], st.lists(one, max_size=2, unique_by=lambda d: d["account_id"]),
                         bad)

    return [
        Bad(st.one_of(st.text(max_size=5), st.integers(), st.none(), st.binary(max_size=3),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))),
        Bad(spliced(st.one_of(st.integers(), st.text(max_size=4), st.none(), st.lists(st.integers(), max_size=2)))),
        Bad(spliced(st.builds(lambda a, v: {"account_id": a, "share": v}, st.sampled_from(w.winners), bad_value))),
        Bad(spliced(st.builds(lambda v: {"account_id": v, "share": 1}, bad_value.filter(lambda v: v is not None)))),
        Bad(spliced(st.fixed_dictionaries({"account_id": st.just(w.winners[0]), "amount": st.integers(1, 5)}))),
        Bad(spliced(st.fixed_dictionaries({"account": st.just(w.winners[0]), "share": st.integers(1, 5)}))),
        Bad(st.sampled_from(w.winners).map(lambda a: [{"account_id": a, "share": 1}, {"account_id": a, "share": 2}])),
        Bad(st.just([{"account_id": w.pool, "share": 1}])),
        Bad(st.just([{"account_id": w.collector, "share": 1}])),
        refusal(st.integers(10**12, TOO_BIG - 1).map(lambda a: [{"account_id": a, "share": 1}]), "ACCOUNT_NOT_FOUND"),
        refusal(st.just([{"account_id": w.usd, "share": 1}]), "CURRENCY_MISMATCH"),
        # amounts that do not add up to the pool minus the fee (1000 - 25)
        Bad(st.integers(1, 10**6).filter(lambda n: n != 975).map(
            lambda n: [{"account_id": w.winners[0], "amount": n}])),
    ]


def refusals(method: str, w: PayoutWorld) -> dict[str, list[Bad]]:
    job_id = [Bad(ID), refusal(missing_ids(), "PAYOUT_JOB_NOT_FOUND")]
    finished = refusal(st.sampled_from([w.completed, w.cancelled]), "INVALID_STATE_TRANSITION")
    return {
        "create_payout_job": {
            "challenge_id": [Bad(bad_text(1, 200, required=True)), refusal(st.just(w.used_challenge),
                                                                            "DUPLICATE_REQUEST")],
            "pool_account_id": [Bad(ID), refusal(missing_ids(), "ACCOUNT_NOT_FOUND"),
                                refusal(st.just(w.frozen_pool), "ACCOUNT_FROZEN"),
                                refusal(st.just(w.closed_pool), "ACCOUNT_CLOSED"), Bad(st.just(w.collector))],
            "total_pool": [Bad(bad_int(1, BIGINT_MAX, required=True)),
                           refusal(st.integers(10**7, BIGINT_MAX), "INSUFFICIENT_FUNDS")],
            "platform_fee_bps": [Bad(bad_int(0, 10_000, required=True))],
            "winners": winner_refusals(w),
            "idempotency_key": [Bad(KEY), refusal(st.just(w.used_key), "DUPLICATE_REQUEST")],
            "fee_account_id": [Bad(bad_int(1, BIGINT_MAX, required=False)),
                               refusal(missing_ids(), "ACCOUNT_NOT_FOUND"), Bad(st.just(w.pool)),
                               refusal(st.just(w.usd), "CURRENCY_MISMATCH"),
                               refusal(st.just(w.frozen_pool), "ACCOUNT_FROZEN")],
        },
        "process_payout_batch": {"job_id": job_id, "batch_size": [Bad(bad_int(1, 10_000, required=True))]},
        "next_payout_job": {},
        "retry_failed_payout_entries": {"job_id": [*job_id, finished]},
        "cancel_payout_job": {"job_id": [*job_id, refusal(st.just(w.completed), "INVALID_STATE_TRANSITION")]},
        "pause_payout_job": {"job_id": [*job_id, finished]},
        "resume_payout_job": {"job_id": [*job_id, finished]},
        "get_payout_job_status": {"job_id": job_id},
        "list_payout_jobs": {"status": [Bad(bad_choice(JOB_STATUSES).filter(lambda v: v is not None))],
                             "limit": [Bad(bad_int(1, 1000, required=True))],
                             "before_job_id": [Bad(bad_int(1, 2**63 - 1, required=False))]},
        "list_failed_payout_entries": {"job_id": job_id, "limit": [Bad(bad_int(1, 1000, required=True))],
                                       "after_entry_id": [Bad(bad_int(1, 2**63 - 1, required=False))]},
    }[method]


def cases(method: str, w: PayoutWorld) -> st.SearchStrategy[Case]:
    bads = refusals(method, w)

    def corrupt(arg: str, bad: Bad, value: Any) -> Case:
        return Case(method, {**valid_call(method, w), arg: value}, arg, bad.codes,
                    arg if bad.field == "" else bad.field)

    def for_arg(arg: str) -> st.SearchStrategy[Case]:
        return st.sampled_from(bads[arg]).flatmap(lambda bad: bad.values.map(lambda v: corrupt(arg, bad, v)))

    unknown_keyword = st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda name: name not in bads).map(
        lambda name: Case(method, {**valid_call(method, w), name: 1}, "<unknown keyword>", INVALID, "arguments"))
    return st.sampled_from([*bads, ""]).flatmap(lambda arg: for_arg(arg) if arg else unknown_keyword)


@pytest.fixture
def world(client: Client) -> PayoutWorld:
    return build_world(client)


@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_one_bad_argument_is_refused_and_changes_nothing(db_url: str, client: Client, world: PayoutWorld,
                                                         method: str, data: st.DataObject) -> None:
    case = data.draw(cases(method, world), label="case")
    before = snapshot(db_url)
    expect_refused(case, lambda: getattr(client, case.method)(**case.kwargs))
    assert snapshot(db_url) == before


@given(winners=st.one_of(JSON_VALUE, st.lists(st.one_of(JSON_VALUE, st.fixed_dictionaries(
    {"account_id": JSON_VALUE, "share": JSON_VALUE}), st.fixed_dictionaries(
    {"account_id": JSON_VALUE, "amount": JSON_VALUE})), max_size=4)))
def test_sql_refuses_any_json_with_a_catalogued_error(db_url: str, client: Client, world: PayoutWorld,
                                                      winners: Any) -> None:
    """Straight to SQL, past the Python checks: a catalogued W error (or a job), never an internal error."""
    before = snapshot(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            conn.execute("select pgwallet.create_payout_job(%s, %s, 1000, 0, %s::jsonb, %s)",
                         (f"sql-{uuid.uuid4()}", world.pool, json.dumps(winners), f"sql-{uuid.uuid4()}"))
        except psycopg.Error as exc:
            assert exc.sqlstate is not None and exc.sqlstate.startswith("W"), (winners, exc)
            assert snapshot(db_url) == before
            return
    # accepted: then it was a valid list (a draw, or shares of existing accounts)
    assert isinstance(winners, list)


def test_every_payout_procedure_is_covered() -> None:
    declared = {name for name, value in vars(PayoutProcedures).items() if isinstance(value, Procedure)}
    assert declared == set(METHODS)
    assert all(getattr(Procedures, name) is getattr(PayoutProcedures, name) for name in declared)


def test_valid_payout_calls_succeed(db_url: str, client: Client) -> None:
    read_only = {"get_payout_job_status", "next_payout_job", "list_payout_jobs", "list_failed_payout_entries"}
    for method in METHODS:
        w = build_world(client)
        before = snapshot(db_url)
        getattr(client, method)(**valid_call(method, w))
        assert (snapshot(db_url) == before) == (method in read_only), method
