"""``pgwallet demo``: a tour of every domain against the configured database, then the invariant check.

Each domain contributes one section, a function ``(client, url, run, say)`` listed in ``SECTIONS``.
Every run opens fresh accounts (keys are unique per run), so the demo can be run again and again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import click

from cli.cashless import demo_festival
from cli.context import AppContext, pass_app
from cli.invest import demo_investments
from cli.ledger import describe, describe_hold
from cli.payouts import demo_challenge
from cli.queue import demo_live_show
from pyapp.client import Client
from pyapp.errors import InsufficientFunds

Say = Callable[[str], None]


def ledger_tour(c: Client, url: str, run: str, say: Say, terminals: int = 8) -> None:
    """Accounts, transfers, a two-leg operation, holds, and concurrent payers into one bar account."""
    say("== ledger core")
    world = c.open_system_account("EUR", "system", name=f"funding {run}")
    bar = c.open_account("EUR", "revenue", name=f"bar revenue {run}")
    fees = c.open_account("EUR", "fees", name=f"platform fees {run}")
    alice = c.open_account("EUR", "card", name=f"alice {run}")
    bob = c.open_account("EUR", "card", name=f"bob {run}")

    say("-- fund two cards (replaying the first call changes nothing)")
    c.fund_account(world.id, alice.id, 5000, f"{run}-fund-alice")
    replay = c.fund_account(world.id, alice.id, 5000, f"{run}-fund-alice")
    say(f"   replayed={replay.replayed}, same transfer {replay.transfer_ids[0]}")
    c.fund_account(world.id, bob.id, 2000, f"{run}-fund-bob")

    say("-- a purchase with a platform fee: two legs, one operation")
    op = c.post_operation([{"debit_account_id": alice.id, "credit_account_id": bar.id, "amount": 900},
                           {"debit_account_id": alice.id, "credit_account_id": fees.id, "amount": 100}],
                          f"{run}-purchase", kind="purchase")
    say(f"   operation {op.operation_id}: transfers {list(op.transfer_ids)}")

    say("-- escrow: a hold captured in part, another voided")
    h1 = c.place_hold(bob.id, bar.id, 1500, f"{run}-hold-1", timeout_seconds=600)
    say("   " + describe_hold(h1, 2))
    say("   " + describe_hold(c.capture_hold(h1.hold_id, f"{run}-capture-1", amount=1200), 2))
    h2 = c.place_hold(alice.id, bar.id, 700, f"{run}-hold-2")
    say("   " + describe_hold(c.void_hold(h2.hold_id, f"{run}-void-2"), 2))

    say(f"-- {terminals} terminals charge alice 1.00 at once until her card is empty")
    with ThreadPoolExecutor(terminals) as pool, Client(url, max_size=terminals) as terminal_client:
        def pay(i: int) -> bool:
            try:
                terminal_client.transfer(alice.id, bar.id, 100, f"{run}-terminal-{i}")
                return True
            except InsufficientFunds:
                return False

        results = list(pool.map(pay, range(60)))
    say(f"   {sum(results)} accepted, {results.count(False)} refused with INSUFFICIENT_FUNDS")

    say("-- balances")
    for acc in (world, bar, fees, alice, bob):
        say("   " + describe(c.get_account(acc.id)))


SECTIONS: tuple[Callable[[Client, str, str, Say], None], ...] = (
    ledger_tour, demo_festival, demo_live_show, demo_challenge, demo_investments)


@click.command()
@pass_app
def demo(app: AppContext) -> None:
    """Run every domain's section, print balances, end with the invariant check (exit 1 if violated)."""
    run = uuid.uuid4().hex[:8]
    say = click.echo
    say(f"== pgwallet demo (run {run})")
    for section in SECTIONS:
        section(app.client, app.url, run, say)
    violations = app.client.check_invariants()
    say("-- pgwallet check: " + ("ok, every ledger invariant holds" if not violations
                                 else f"{len(violations)} VIOLATIONS: {violations}"))
    if violations:
        raise SystemExit(1)
