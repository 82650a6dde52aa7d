"""Investment commands for staff: products, investments, dividends (``pgwallet invest ...``), and the demo.

Investors invest through the edge handlers (``pyapp.edge``); staff create products and distribute
dividends here. Executions and dividends are jobs: ``pgwallet jobs work`` runs them, and
``pgwallet payouts work`` pays a dividend's holders.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, staff_option, yes_option
from pyapp.client import Client
from pyapp.errors import FeatureDisabled, RateLimited
from pyapp.investments import Dividend, Investment, JobTicket, Product
from pyapp.job_worker import JobWorker
from pyapp.money import format_minor, to_minor
from pyapp.payout_worker import PayoutWorker

Say = Callable[[str], None]


def describe_product(p: Product, exponent: int) -> str:
    return (f"product {p.product_id} {p.name!r} ({p.currency}): {format_minor(p.invested_amount, exponent)} "
            f"invested by {p.holders:,} holders; account {p.account_id}, dividend account {p.dividend_account_id}"
            + (" (replayed)" if p.replayed else ""))


def describe_investment(i: Investment, exponent: int) -> str:
    text = (f"investment {i.investment_id}: {format_minor(i.amount, exponent)} from wallet {i.wallet_account_id} "
            f"in product {i.product_id}, {i.status}")
    text += f" (job {i.job_id})" if i.job_id else ""
    return text + (f"; error: {i.error}" if i.error else "")


def describe_dividend(d: Dividend, exponent: int) -> str:
    text = (f"dividend {d.dividend_id} of product {d.product_id}: {format_minor(d.amount, exponent)}, {d.status} "
            f"(job {d.job_id})")
    if d.payout_job_id:
        text += (f"; payout job {d.payout_job_id} {d.payout_status}, {format_minor(d.paid_amount, exponent)} paid "
                 f"to {d.holders:,} holders")
    return text + (f"; error: {d.error}" if d.error else "")


def _exponent(app: AppContext, product: Product) -> int:
    return app.client.get_account(product.account_id).exponent


@click.group()
def invest() -> None:
    """Investment products, investments and dividends (staff)."""


@invest.command("create-product")
@click.option("--name", required=True, help="The product's name (unique).")
@click.option("--currency", default="EUR", show_default=True)
@click.option("--key", "idempotency_key", default=None, help="Idempotency key; default: a new one (printed).")
@staff_option
@json_option
@pass_app
def invest_create_product(app: AppContext, name: str, currency: str, idempotency_key: str | None, staff_id: int,
                          as_json: bool) -> None:
    """Create a product with its investment account and its dividend account."""
    key = idempotency_key or str(uuid.uuid4())
    product = app.client.create_investment_product(name, currency, staff_id, key)
    emit({"product": product, "idempotency_key": key}, as_json,
         f"{describe_product(product, _exponent(app, product))} (key {key})")


@invest.command("product")
@click.argument("product_id", type=int)
@json_option
@pass_app
def invest_product(app: AppContext, product_id: int, as_json: bool) -> None:
    """One product and what is invested in it."""
    product = app.client.get_investment_product(product_id)
    emit(product, as_json, describe_product(product, _exponent(app, product)))


@invest.command("show")
@click.argument("investment_id", type=int)
@json_option
@pass_app
def invest_show(app: AppContext, investment_id: int, as_json: bool) -> None:
    """One investment and its status."""
    investment = app.client.get_investment(investment_id)
    exponent = _exponent(app, app.client.get_investment_product(investment.product_id))
    emit(investment, as_json, describe_investment(investment, exponent))


@invest.command("dividend")
@click.argument("product_id", type=int)
@click.option("--amount", required=True, help="The dividend, a decimal such as 1000.00.")
@click.option("--key", "idempotency_key", default=None, help="Idempotency key; default: a new one (printed).")
@staff_option
@yes_option
@json_option
@pass_app
def invest_dividend(app: AppContext, product_id: int, amount: str, idempotency_key: str | None, staff_id: int,
                    yes: bool, as_json: bool) -> None:
    """Queue a dividend for PRODUCT_ID's holders, paid from its dividend account."""
    product = app.client.get_investment_product(product_id)
    exponent = _exponent(app, product)
    minor = to_minor(amount, exponent, field="amount")
    confirm(f"Pay {format_minor(minor, exponent)} {product.currency} to the {product.holders:,} holders of "
            f"{product.name!r}?", yes)
    key = idempotency_key or str(uuid.uuid4())
    ticket = app.client.distribute_dividend(product_id, minor, key, staff_id)
    emit(ticket, as_json, ticket.message + (" (replayed)" if ticket.replayed else ""))


@invest.command("dividend-show")
@click.argument("dividend_id", type=int)
@json_option
@pass_app
def invest_dividend_show(app: AppContext, dividend_id: int, as_json: bool) -> None:
    """One dividend, its job and its payout's progress."""
    dividend = app.client.get_dividend(dividend_id)
    exponent = _exponent(app, app.client.get_investment_product(dividend.product_id))
    emit(dividend, as_json, describe_dividend(dividend, exponent))


# -- the demo ---------------------------------------------------------------------------------------


def demo_investments(c: Client, url: str, run: str, say: Say) -> None:
    """A product, investors, executions through a job worker, a dividend through the payout workers, a flag
    switched off and on, a rate limit hit."""
    say("== investments: durable jobs, dividends, feature flags, rate limits")
    operator = c.create_staff(f"demo operator {run}").id
    world = c.open_system_account("EUR", "system", name=f"investment funding {run}").id
    product = c.create_investment_product(f"Demo fund {run}", "EUR", operator, f"{run}-product")
    say("   " + describe_product(product, 2))
    investors = []
    for i, (funds, amount) in enumerate(((50_000, 10_000), (50_000, 25_000), (50_000, 40_000), (1_000, 5_000))):
        wallet = c.open_account("EUR", "user_wallet", name=f"investor {i} {run}", owner=f"investor-{i}-{run}").id
        c.fund_account(world, wallet, funds, f"{run}-fund-{i}")
        investment = c.create_investment(wallet, product.product_id, amount, f"{run}-invest-{i}",
                                         acting_user=f"investor-{i}-{run}")
        ticket: JobTicket = c.execute_investment(investment.investment_id, f"{run}-execute-{i}",
                                                 acting_user=f"investor-{i}-{run}")
        investors.append((wallet, investment.investment_id))
        say(f"-- {ticket.message} (the call returned at once)")
    say("-- a job worker runs them (the last investor cannot cover 50.00: its job fails at once)")
    JobWorker(url, poll_interval=0.05).run(once=True)
    for _, investment_id in investors:
        say("   " + describe_investment(c.get_investment(investment_id), 2))
    c.fund_account(world, product.dividend_account_id, 1000_01, f"{run}-fund-dividends")
    ticket = c.distribute_dividend(product.product_id, 1000_01, f"{run}-dividend", operator)
    say(f"-- {ticket.message}: 1,000.01 pro rata to 100.00 / 250.00 / 400.00")
    JobWorker(url, poll_interval=0.05).run(once=True)
    PayoutWorker(url, poll_interval=0.05).run(once=True)
    say("   " + describe_dividend(c.get_dividend(ticket.dividend_id or 0), 2))
    for wallet, _ in investors[:3]:
        say(f"   wallet {wallet}: balance {format_minor(c.get_account(wallet).balance, 2)}")
    say("-- switch investment_module_enabled off: the next call is refused; on again: accepted")
    wallet = investors[0][0]
    c.set_feature_flag("investment_module_enabled", False, operator)
    try:
        c.create_investment(wallet, product.product_id, 100, f"{run}-off", acting_user=f"investor-0-{run}")
    except FeatureDisabled as exc:
        say(f"   refused: {exc.code} ({exc.http_status}): {exc.detail}")
    finally:
        c.set_feature_flag("investment_module_enabled", True, operator)
    say("   " + describe_investment(c.create_investment(wallet, product.product_id, 100, f"{run}-on",
                                                    acting_user=f"investor-0-{run}"), 2))
    say("-- the same investor keeps creating investments: 5 an hour, then RATE_LIMITED")
    for n in range(2, 10):
        try:
            c.create_investment(wallet, product.product_id, 100, f"{run}-more-{n}", acting_user=f"investor-0-{run}")
        except RateLimited as exc:
            say(f"   call {n + 1} refused: {exc.code} ({exc.http_status}), retry after {exc.retry_after} s")
            break


COMMANDS = (invest,)
