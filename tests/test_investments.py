"""Investments: products, investments executed by jobs, dividends paid through payouts, feature flags,
rate limits, idempotency, and the edge handlers. Every test ends with the ledger invariants (investment
and dividend branches included) checked by the ``client`` fixture's teardown.
"""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
from conftest import snapshot
from invest_stage import Stage, largest_remainder

from pyapp import AsyncClient, Client, errors
from pyapp.edge import Edge
from pyapp.investments import FLAGS


@pytest.fixture
def stage(client: Client, db_url: str) -> Stage:
    return Stage(client, db_url)


def test_a_product_has_an_investment_account_and_a_dividend_account(stage: Stage) -> None:
    c, product = stage.client, stage.product
    assert (product.name, product.currency, product.created_by, product.invested_amount, product.holders) == (
        "Green bonds", "EUR", f"ops (staff {stage.ops})", 0, 0)
    account, dividends = c.get_account(product.account_id), c.get_account(product.dividend_account_id)
    assert (account.kind, account.collector, dividends.kind, dividends.collector) == ("escrow", True, "pool", False)
    assert c.get_investment_product(product.product_id) == product
    again = c.create_investment_product("Blue bonds", "EUR", stage.ops, "same-key")
    with pytest.raises(errors.DuplicateRequest) as taken:
        c.create_investment_product("Green bonds", "EUR", stage.ops, "other-key")
    assert taken.value.field == "name"
    assert c.create_investment_product("Blue bonds", "EUR", stage.ops, "same-key").replayed
    with pytest.raises(errors.DuplicateRequest) as reused:
        c.create_investment_product("Other", "EUR", stage.ops, "same-key")
    assert reused.value.field == "idempotency_key" and again.product_id
    with pytest.raises(errors.ProductNotFound):
        c.get_investment_product(10**12)
    with pytest.raises(errors.InvalidRequest) as bad:
        c.create_investment_product("X", "XXX", stage.ops, "k")
    assert bad.value.field == "currency"


def test_invest_execute_through_a_worker_moves_the_money_once(stage: Stage) -> None:
    c = stage.client
    wallet = stage.wallet(10_000)
    investment = stage.invest(wallet, 2500)
    assert (investment.status, investment.job_id, investment.transfer_id) == ("pending", None, None)
    ticket = c.execute_investment(investment.investment_id, "exec-1")
    assert (ticket.status, ticket.idempotency_key, ticket.investment_id) == ("queued", "exec-1",
                                                                            investment.investment_id)
    assert f"job {ticket.job_id}" in ticket.message and not ticket.replayed
    queued = c.get_investment(investment.investment_id)
    assert (queued.status, queued.job_id) == ("queued", ticket.job_id)
    assert stage.balance(wallet) == 10_000  # nothing moved yet: the request returned at once
    replay = c.execute_investment(investment.investment_id, "exec-1")
    assert replay.replayed and replay.job_id == ticket.job_id
    assert stage.work() == 1
    executed = c.get_investment(investment.investment_id)
    assert executed.status == "executed" and executed.transfer_id and executed.executed_at
    job = c.get_job(ticket.job_id)
    assert (job.status, job.attempts, job.result) == ("succeeded", 1, {
        "investment_id": investment.investment_id, "transfer_id": executed.transfer_id, "amount": 2500})
    assert (stage.balance(wallet), stage.balance(stage.product.account_id)) == (7500, 2500)
    product = c.get_investment_product(stage.product.product_id)
    assert (product.invested_amount, product.holders) == (2500, 1)
    with pytest.raises(errors.InvalidStateTransition) as again:
        c.execute_investment(investment.investment_id, "exec-2")
    assert again.value.field == "investment_id"
    # the job body run again (its completion lost, say): it completes, and moves nothing more
    stage.sql("update pgwallet.jobs set status = 'queued', finished_at = null where id = %s", ticket.job_id)
    assert stage.work() == 1
    assert c.get_job(ticket.job_id).status == "succeeded"
    assert (stage.balance(wallet), stage.balance(stage.product.account_id)) == (7500, 2500)


def test_create_investment_refusals(stage: Stage) -> None:
    c, product = stage.client, stage.product.product_id
    wallet = stage.wallet()
    frozen = c.set_account_status(stage.wallet(0), "frozen").id
    closed = c.set_account_status(stage.wallet(0), "closed").id
    usd = stage.wallet(0, currency="USD")
    card = c.open_account("EUR", "card", owner="card-holder").id
    cases = [((10**12, product), errors.AccountNotFound, "wallet_account_id"),
             ((wallet, 10**12), errors.ProductNotFound, "product_id"),
             ((frozen, product), errors.AccountFrozen, "wallet_account_id"),
             ((closed, product), errors.AccountClosed, "wallet_account_id"),
             ((usd, product), errors.CurrencyMismatch, "wallet_account_id"),
             ((card, product), errors.InvalidRequest, "wallet_account_id")]
    for (account, prod), error, field in cases:
        before = snapshot(stage.url)
        with pytest.raises(error) as refused:
            c.create_investment(account, prod, 100, stage.key())
        assert refused.value.field == field
        assert snapshot(stage.url) == before
    with pytest.raises(errors.InvalidRequest) as bad:
        c.create_investment(wallet, product, 0, "k")
    assert bad.value.field == "amount"
    first = c.create_investment(wallet, product, 100, "same")
    assert c.create_investment(wallet, product, 100, "same") == type(first)(**{**first.__dict__, "replayed": True})
    with pytest.raises(errors.DuplicateRequest) as changed:
        c.create_investment(wallet, product, 101, "same")
    assert changed.value.field == "idempotency_key"


def test_execute_investment_refusals(stage: Stage) -> None:
    c = stage.client
    wallet = stage.wallet()
    one, two = stage.invest(wallet, 10), stage.invest(wallet, 20)
    with pytest.raises(errors.InvestmentNotFound) as missing:
        c.execute_investment(10**12, "k")
    assert missing.value.field == "investment_id"
    c.execute_investment(one.investment_id, "k")
    with pytest.raises(errors.DuplicateRequest):
        c.execute_investment(two.investment_id, "k")
    with pytest.raises(errors.InvalidStateTransition):
        c.execute_investment(one.investment_id, "k2")


def test_a_refused_execution_fails_at_once_and_staff_retry_it(stage: Stage) -> None:
    c = stage.client
    wallet = stage.wallet(1000)
    investment = stage.invest(wallet, 5000)
    ticket = stage.execute(investment.investment_id)
    stage.work()
    job = c.get_job(ticket.job_id)
    assert (job.status, job.attempts) == ("failed", 1)  # no retry: more seconds bring no money
    assert job.last_error and job.last_error.startswith("INSUFFICIENT_FUNDS: ")
    failed = c.get_investment(investment.investment_id)
    assert (failed.status, failed.error, failed.transfer_id) == ("failed", job.last_error, None)
    assert stage.balance(wallet) == 1000
    with pytest.raises(errors.InvalidStateTransition):
        stage.execute(investment.investment_id)
    c.fund_account(stage.world, wallet, 4000, "top-up")
    assert c.retry_job(ticket.job_id).status == "queued"
    assert c.get_investment(investment.investment_id).status == "queued"
    stage.work()
    assert c.get_investment(investment.investment_id).status == "executed"
    assert stage.balance(wallet) == 0


def test_a_frozen_wallet_fails_the_execution_and_cancel_follows(stage: Stage) -> None:
    c = stage.client
    wallet = stage.wallet(1000)
    frozen = stage.execute(stage.invest(wallet, 100).investment_id)
    c.set_account_status(wallet, "frozen")
    stage.work()
    assert c.get_job(frozen.job_id).last_error.startswith("ACCOUNT_FROZEN: ")  # type: ignore[union-attr]
    c.set_account_status(wallet, "active")
    other = stage.invest(wallet, 100)
    ticket = stage.execute(other.investment_id)
    c.cancel_job(ticket.job_id)
    assert c.get_investment(other.investment_id).status == "cancelled"
    stage.work()
    assert stage.balance(wallet) == 1000


def test_flags_refuse_at_once_and_defer_queued_jobs(stage: Stage, db_url: str) -> None:
    c = stage.client
    wallet = stage.wallet(1000)
    assert [(f.name, f.enabled) for f in c.list_feature_flags()] == sorted((f, True) for f in FLAGS)
    stage.set_flag("investment_module_enabled", False)
    for call in (lambda: stage.invest(wallet, 10), lambda: stage.new_product("Off"),
                 lambda: c.distribute_dividend(stage.product.product_id, 1, "d", stage.ops)):
        before = snapshot(db_url)
        with pytest.raises(errors.FeatureDisabled) as off:
            call()
        assert off.value.http_status == 403 and "investment_module_enabled" in (off.value.detail or "")
        assert snapshot(db_url) == before
    stage.set_flag("investment_module_enabled", True)
    investment = stage.invest(wallet, 10)
    ticket = stage.execute(investment.investment_id)
    stage.set_flag("investment_execution_enabled", False)
    with pytest.raises(errors.FeatureDisabled):
        stage.execute(stage.invest(wallet, 10).investment_id)
    stage.work()  # the queued job is deferred, not failed: its attempt is given back
    deferred = c.get_job(ticket.job_id)
    assert (deferred.status, deferred.attempts) == ("queued", 0)
    assert deferred.last_error and "FEATURE_DISABLED" in deferred.last_error
    assert deferred.run_after > deferred.created_at  # type: ignore[operator]
    stage.set_flag("investment_execution_enabled", True)
    stage.sql("update pgwallet.jobs set run_after = now() where id = %s", ticket.job_id)
    stage.work()
    assert c.get_investment(investment.investment_id).status == "executed"
    with pytest.raises(errors.InvalidRequest) as unknown:
        c.set_feature_flag("no_such_flag", True, stage.ops)
    assert unknown.value.field == "name"


def test_rate_limits_count_accepted_calls_only_and_replays_are_free(stage: Stage) -> None:
    c = stage.client
    wallet = stage.wallet(1000)
    first = c.create_investment(wallet, stage.product.product_id, 1, "first")
    with pytest.raises(errors.ProductNotFound):  # refused: it leaves no hit
        c.create_investment(wallet, 10**12, 1, "refused")
    for i in range(4):
        stage.invest(wallet, 1 + i)
    assert c.create_investment(wallet, stage.product.product_id, 1, "first").investment_id == first.investment_id
    with pytest.raises(errors.RateLimited) as limited:
        stage.invest(wallet, 99)
    error = limited.value
    assert error.http_status == 429 and error.retry_after is not None and 3500 < error.retry_after <= 3600
    assert error.to_dict()["retry_after"] == error.retry_after
    assert "next call allowed in" in (error.detail or "")
    stage.invest(stage.wallet(10), 1)  # another user is not limited
    assert {r.action: (r.max_calls, r.window_seconds) for r in c.list_rate_limits()} == {
        "create_investment_product": (10, 3600), "create_investment": (5, 3600), "execute_investment": (10, 3600),
        "distribute_dividend": (5, 3600)}
    c.set_rate_limit("create_investment", 6, 3600)
    stage.invest(wallet, 6)
    with pytest.raises(errors.InvalidRequest) as unknown:
        c.set_rate_limit("fly", 1, 1)
    assert unknown.value.field == "action"
    # a short window: the next call is allowed once the oldest hit leaves it
    c.set_rate_limit("create_investment", 1, 1)
    other = stage.wallet(10)
    stage.invest(other, 1)
    with pytest.raises(errors.RateLimited) as soon:
        stage.invest(other, 1)
    assert soon.value.retry_after == 1
    stage.sql("update pgwallet.rate_limit_hits set created_at = created_at - interval '2 seconds'")
    stage.invest(other, 1)
    stage.sql("update pgwallet.rate_limit_hits set created_at = created_at - interval '2 hours'")
    assert c.purge_rate_limit_hits(1) == 1 and c.purge_rate_limit_hits() > 0 and c.purge_rate_limit_hits() == 0


def test_a_dividend_is_paid_pro_rata_through_the_payout_workers(stage: Stage) -> None:
    c = stage.client
    wallets = [stage.wallet(10_000) for _ in range(3)]
    for wallet, amount in zip(wallets, (100, 200, 400), strict=True):
        stage.invested(wallet, amount)
    stage.invested(wallets[0], 300)  # a holder's share is the sum of its executed investments
    stage.invest(wallets[1], 5000)  # pending: not a holder's share
    with pytest.raises(errors.InsufficientFunds) as unfunded:
        c.distribute_dividend(stage.product.product_id, 1001, "div-1", stage.ops)
    assert unfunded.value.field == "amount"
    stage.fund_dividends(1001)
    ticket = c.distribute_dividend(stage.product.product_id, 1001, "div-1", stage.ops)
    assert ticket.status == "queued" and ticket.dividend_id and not ticket.replayed
    assert c.distribute_dividend(stage.product.product_id, 1001, "div-1", stage.ops).replayed
    with pytest.raises(errors.DuplicateRequest):
        c.distribute_dividend(stage.product.product_id, 1000, "div-1", stage.ops)
    assert stage.work() == 1
    dividend = c.get_dividend(ticket.dividend_id)
    assert (dividend.status, dividend.holders, dividend.payout_status) == ("distributing", 3, "queued")
    stage.pay()
    dividend = c.get_dividend(ticket.dividend_id)
    assert (dividend.status, dividend.payout_status, dividend.paid_amount) == ("distributed", "completed", 1001)
    paid = [stage.balance(w) - before for w, before in zip(wallets, (10_000 - 400, 10_000 - 200 - 0, 10_000 - 400),
                                                            strict=True)]
    assert paid == largest_remainder(1001, [400, 200, 400]) == [401, 200, 400]
    assert stage.balance(stage.product.dividend_account_id) == 0
    with pytest.raises(errors.DividendNotFound):
        c.get_dividend(10**12)


def test_dividend_refusals_and_failures(stage: Stage) -> None:
    c = stage.client
    with pytest.raises(errors.InvalidStateTransition) as nobody:
        c.distribute_dividend(stage.product.product_id, 10, "d0", stage.ops)
    assert nobody.value.field == "product_id"
    with pytest.raises(errors.ProductNotFound):
        c.distribute_dividend(10**12, 10, "d0", stage.ops)
    stage.invested(stage.wallet(1000), 100)
    stage.fund_dividends(100)
    ticket = c.distribute_dividend(stage.product.product_id, 100, "d1", stage.ops)
    c.set_account_status(stage.product.dividend_account_id, "frozen")
    stage.work()
    job = c.get_job(ticket.job_id)
    assert (job.status, job.attempts) == ("failed", 1) and (job.last_error or "").startswith("ACCOUNT_FROZEN")
    dividend = c.get_dividend(ticket.dividend_id or 0)
    assert (dividend.status, dividend.payout_job_id, dividend.error) == ("failed", None, job.last_error)
    c.set_account_status(stage.product.dividend_account_id, "active")
    c.retry_job(ticket.job_id)
    stage.work()
    stage.pay()
    assert c.get_dividend(ticket.dividend_id or 0).paid_amount == 100
    stage.set_flag("dividend_distribution_enabled", False)
    with pytest.raises(errors.FeatureDisabled):
        c.distribute_dividend(stage.product.product_id, 1, "d2", stage.ops)


def test_a_dividend_over_1000_holders_adds_up_exactly(stage: Stage) -> None:
    """1,000 holders with different executed amounts, an awkward total: each gets its largest-remainder
    share and the entries add up to the amount to the minor unit."""
    c, product = stage.client, stage.product
    amounts = [1 + (i * 7919) % 997 for i in range(1000)]
    rows = stage.sql("""
        with w as (select (pgwallet.open_account('EUR', 'user_wallet', p_owner => 'holder-' || g.n)->>'id')::bigint
                          as id, g.n, g.amount
                   from unnest(%s::bigint[]) with ordinality g(amount, n)),
             f as (select w.*, pgwallet.fund_account(%s, w.id, w.amount, 'fund-' || w.id) from w),
             i as (select f.*, (pgwallet.create_investment(f.id, %s, f.amount, 'inv-' || f.id, 'holder-' || f.n)
                                ->>'investment_id')::bigint as investment from f)
        select i.id, i.amount,
               pgwallet.execute_investment(i.investment, 'exec-' || i.id, 'holder-' || i.n)->>'job_id' from i
        order by i.id""", amounts, stage.world, product.product_id)
    assert len(rows) == 1000
    stage.sql("select pgwallet.run_investment_execution((j->>'job_id')::bigint, 'bulk') "
              "from jsonb_array_elements(pgwallet.fetch_jobs('bulk', array['investment_execution'], 1000)) j")
    assert c.get_investment_product(product.product_id).holders == 1000
    total = 1_000_003
    stage.fund_dividends(total)
    ticket = c.distribute_dividend(product.product_id, total, "big", stage.ops)
    stage.work()
    stage.pay()
    dividend = c.get_dividend(ticket.dividend_id or 0)
    assert (dividend.payout_status, dividend.paid_amount, dividend.holders) == ("completed", total, 1000)
    wallets = [r[0] for r in rows]
    paid = dict(stage.sql("select id, balance from pgwallet.accounts where id = any(%s)", wallets))
    expected = largest_remainder(total, [r[1] for r in rows])  # the payout lists holders by wallet id
    assert [paid[w] for w in wallets] == expected and sum(expected) == total
    assert stage.balance(product.dividend_account_id) == 0


def test_both_clients_agree(stage: Stage, db_url: str) -> None:
    investment = stage.invest(stage.wallet(100), 10)

    async def calls() -> tuple[object, ...]:
        async with AsyncClient(db_url) as ac:
            return (await ac.get_investment(investment.investment_id),
                    await ac.list_feature_flags(), await ac.fetch_jobs("async", ["nothing"]))

    got, flags, jobs = asyncio.run(calls())
    assert got == investment.__class__(**{**investment.__dict__, "replayed": False})
    assert flags == stage.client.list_feature_flags() and jobs == []


# -- the edge handlers -------------------------------------------------------------------------------


def test_edge_takes_the_key_from_the_body_or_the_header(stage: Stage, client: Client) -> None:
    edge = Edge(client)
    wallet = stage.wallet(10_000)
    body = {"wallet_account_id": wallet, "product_id": stage.product.product_id, "amount": "12.50",
            "acting_user": stage.owners[wallet]}
    status, created = edge.handle("create_investment", json.dumps(body), {"Idempotency-Key": "edge-1"})
    assert status == 200 and created["data"]["amount"] == "12.50" and created["data"]["status"] == "pending"
    status, again = edge.handle("create_investment", {**body, "idempotency_key": "edge-1"},
                                {"idempotency-key": "edge-1"})
    assert status == 200 and again["data"]["replayed"] is True
    status, differ = edge.handle("create_investment", {**body, "idempotency_key": "a"}, {"IDEMPOTENCY-KEY": "b"})
    assert status == 400 and differ["error"]["code"] == "INVALID_REQUEST"
    assert differ["error"]["field"] == "idempotency_key"
    status, neither = edge.handle("create_investment", body)
    assert status == 400 and neither["error"]["field"] == "idempotency_key"
    investment_id = created["data"]["investment_id"]
    status, queued = edge.handle("execute_investment", {"investment_id": investment_id,
                                                        "acting_user": stage.owners[wallet]}, {"Idempotency-Key": "x1"})
    assert status == 200 and queued["data"]["status"] == "queued" and queued["data"]["idempotency_key"] == "x1"
    assert queued["data"]["job_id"] and queued["data"]["message"]
    assert queued["data"]["external_reference"] == f"investment:{investment_id}"  # the seed's externalReference
    stage.work()
    stage.fund_dividends(1000)
    status, dividend = edge.handle("distribute_dividend", {"product_id": stage.product.product_id, "amount": "10",
                                                           "staff_id": stage.ops, "idempotency_key": "dd"})
    assert status == 200 and dividend["data"]["dividend_id"] and dividend["data"]["status"] == "queued"
    status, product = edge.handle("create_investment_product", {"name": "Edge fund", "currency": "EUR",
                                                                "staff_id": stage.ops}, {"Idempotency-Key": "p1"})
    assert status == 200 and product["data"]["invested_amount"] == "0.00"


def test_edge_answers_403_when_a_flag_is_off_and_429_with_retry_after(stage: Stage, client: Client) -> None:
    edge = Edge(client)
    wallet = stage.wallet(10_000)
    body = {"wallet_account_id": wallet, "product_id": stage.product.product_id, "amount": "1",
            "acting_user": stage.owners[wallet]}
    stage.set_flag("investment_module_enabled", False)
    status, off = edge.handle("create_investment", body, {"Idempotency-Key": "off"})
    assert status == 403 and off["error"]["code"] == "FEATURE_DISABLED"
    stage.set_flag("investment_module_enabled", True)
    for i in range(5):
        assert edge.handle("create_investment", body, {"Idempotency-Key": f"on-{i}"})[0] == 200
    status, limited = edge.handle("create_investment", body, {"Idempotency-Key": "sixth"})
    assert status == 429 and limited["error"]["code"] == "RATE_LIMITED"
    assert 0 < limited["error"]["retry_after"] <= 3600


def test_the_async_client_raises_the_same_typed_errors(stage: Stage, db_url: str) -> None:
    wallet, product = stage.wallet(100), stage.product.product_id
    for i in range(5):
        stage.invest(wallet, 1 + i)
    with pytest.raises(errors.RateLimited) as sync_error:
        stage.invest(wallet, 9)

    async def calls() -> tuple[errors.RateLimited, errors.FeatureDisabled]:
        async with AsyncClient(db_url) as ac:
            with pytest.raises(errors.RateLimited) as limited:
                await ac.create_investment(wallet, product, 9, "async-limited", acting_user=stage.owners[wallet])
            stage.set_flag("investment_execution_enabled", False)
            with pytest.raises(errors.FeatureDisabled) as off:
                await ac.execute_investment(1, "async-off", acting_user="anyone")  # the flag answers first
            stage.set_flag("investment_execution_enabled", True)
            return limited.value, off.value

    limited, off = asyncio.run(calls())
    assert limited.retry_after is not None and 0 < limited.retry_after <= sync_error.value.retry_after + 1  # type: ignore[operator]
    assert (limited.code, limited.http_status, off.code, off.http_status) == ("RATE_LIMITED", 429,
                                                                             "FEATURE_DISABLED", 403)


def test_roles_app_invests_staff_operates(stage: Stage, db_url: str) -> None:
    wallet, product = stage.wallet(1000), stage.product.product_id
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("set role pgwallet_app")
        conn.execute("select pgwallet.create_investment(%s, %s, 10, 'as-app', %s)",
                     (wallet, product, stage.owners[wallet]))
        conn.execute("select pgwallet.list_feature_flags(), pgwallet.get_investment_product(%s)", (product,))
        for statement in ("select pgwallet.create_investment_product('x', 'EUR', 1, 'k')",
                          "select pgwallet.distribute_dividend(1, 1, 'k', 1)",
                          "select pgwallet.fetch_jobs('w')",
                          "select pgwallet.set_feature_flag('investment_module_enabled', false, 1)",
                          "select pgwallet.take_rate_limit('create_investment', 'x')",
                          "select * from pgwallet.jobs"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("reset role")
        conn.execute("set role pgwallet_staff")
        conn.execute("select pgwallet.create_investment_product('staff fund', 'EUR', %s, 'k')", (stage.ops,))
        conn.execute("select pgwallet.fetch_jobs('w', array['nothing'])")
        conn.execute("reset role")
        conn.execute("set role pgwallet_readonly")
        assert len(conn.execute("select * from pgwallet.feature_flags").fetchall()) == 3
