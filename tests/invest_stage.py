"""An investment platform in EUR for the investment tests: a product, funded investor wallets, helpers
that run the job workers and the payout workers."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg

from pyapp import Client
from pyapp.investments import Investment, JobTicket, Product
from pyapp.job_worker import JobWorker
from pyapp.payout_worker import PayoutWorker


class Stage:
    def __init__(self, client: Client, url: str) -> None:
        self.client = client
        self.url = url
        self.world = client.open_system_account("EUR", "system", name="world").id
        self._keys = itertools.count()
        self.owners: dict[int, str] = {}  # wallet -> the end user who owns it
        self.ops = client.create_staff("ops").id  # the staff member the staff calls act as
        self.product = self.new_product("Green bonds")

    def key(self, prefix: str = "k") -> str:
        return f"{prefix}-{next(self._keys)}"

    def new_product(self, name: str, currency: str = "EUR") -> Product:
        return self.client.create_investment_product(name, currency, self.ops, self.key("product"))

    def wallet(self, amount: int = 100_000, currency: str = "EUR") -> int:
        owner = self.key("investor")
        wallet = self.client.open_account(currency, "user_wallet", owner=owner).id
        self.owners[wallet] = owner
        if amount:
            world = self.world if currency == "EUR" else self.client.open_system_account(currency, "system").id
            self.client.fund_account(world, wallet, amount, self.key("fund"))
        return wallet

    def fund_dividends(self, amount: int, product: Product | None = None) -> None:
        account = (product or self.product).dividend_account_id
        self.client.fund_account(self.world, account, amount, self.key("fund-dividends"))

    def balance(self, account_id: int) -> int:
        return self.client.get_account(account_id).balance

    def invest(self, wallet: int, amount: int, product: Product | None = None) -> Investment:
        return self.client.create_investment(wallet, (product or self.product).product_id, amount,
                                             self.key("invest"))

    def execute(self, investment_id: int) -> JobTicket:
        return self.client.execute_investment(investment_id, self.key("execute"))

    def invested(self, wallet: int, amount: int, product: Product | None = None) -> Investment:
        """An executed investment (through a job worker)."""
        investment = self.invest(wallet, amount, product)
        self.execute(investment.investment_id)
        self.work()
        return self.client.get_investment(investment.investment_id)

    def work(self, **kwargs: Any) -> int:
        """Run every due job (execution and dividend jobs) until none is due."""
        return JobWorker(self.url, poll_interval=0.05, **kwargs).run(once=True)

    def pay(self) -> int:
        """Run the payout workers until no payout job has work left."""
        return PayoutWorker(self.url, poll_interval=0.05).run(once=True)

    def set_flag(self, name: str, enabled: bool) -> None:
        self.client.set_feature_flag(name, enabled, self.ops)

    def sql(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement, args)
            return cur.fetchall() if cur.description else []


def largest_remainder(amount: int, shares: list[int]) -> list[int]:
    """The exact split the payouts promise: floor shares, leftover units to the largest remainders,
    ties to the earlier holder."""
    total = sum(shares)
    base = [amount * s // total for s in shares]
    remainders = sorted(range(len(shares)), key=lambda i: (-(amount * shares[i] % total), i))
    for i in remainders[:amount - sum(base)]:
        base[i] += 1
    return base
