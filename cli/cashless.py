"""Cashless festival commands: cards, manual recharges, bars, staff, checkpoints, drawers, close-out.

A CARD argument is a card id (digits) or an NFC uid (anything else; prefix ``uid:`` for a uid made of digits
only); a uid is resolved through ``lookup_card``, so the scan log records the staff lookup (location ``cli``).
Amounts are decimals in the card's currency. Money-moving commands take ``--request-id``; without it a
fresh one is made and printed, so a call whose answer was lost can be replayed safely.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable
from typing import Any

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, yes_option
from pyapp.cashless import PAYMENT_METHODS, PAYOUT_METHODS, STAFF_STATUSES, Card, Recharge
from pyapp.client import Client
from pyapp.money import format_minor, to_minor

#: Close-out fees are typed in the festival's currency, two decimals (EUR, USD, GBP).
FESTIVAL_EXPONENT = 2

request_id_option = click.option("--request-id", "request_id", default=None, metavar="ID",
                                 help="Idempotency key; repeat it to print the first result again. Default: a new one.")


def card_id(app: AppContext, ref: str) -> int:
    """The id of the card ``ref`` names: digits are an id, ``uid:...`` or anything else an NFC uid."""
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        return int(ref)
    uid = ref.removeprefix("uid:")
    return app.client.lookup_card(uid, location="cli", device="pgwallet-cli").card_id


def staff_id(app: AppContext, ref: str) -> int:
    """A staff member by id or by name (an active one; a name two of them share is refused)."""
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        return int(ref)
    found = [m for m in app.client.list_staff("active", 1000) if m.name.casefold() == ref.casefold()]
    if len(found) != 1:
        raise click.BadParameter(f"{ref!r}: {'no active staff member' if not found else 'several staff members'} "
                                 "of that name (`pgwallet staff list`); give the id", param_hint="--staff")
    return found[0].id


def checkpoint_id(app: AppContext, ref: str) -> int:
    """A checkpoint by id or by name."""
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        return int(ref)
    found = [k for k in app.client.list_checkpoints(1000) if k.name.casefold() == ref.casefold()]
    if len(found) != 1:
        raise click.BadParameter(f"{ref!r}: {'no checkpoint' if not found else 'several checkpoints'} of that name "
                                 "(`pgwallet checkpoint list`); give the id", param_hint="--checkpoint")
    return found[0].id


def describe_card(card: Card) -> str:
    money = format_minor(card.balance, card.exponent)
    extra = f", replaced by card {card.replaced_by}" if card.replaced_by else ""
    extra += f" ({card.status_reason})" if card.status_reason else ""
    return (f"card {card.card_id} uid {card.uid}{' of ' + card.holder if card.holder else ''}: {card.status}{extra}, "
            f"balance {money} {card.currency}")


def describe_recharge(recharge: Recharge, exponent: int) -> str:
    via = {"stripe": "Stripe", "cash": "cash", "card": "card payment"}[recharge.method]
    return (f"{'replayed' if recharge.replayed else 'recharged'} {format_minor(recharge.amount, exponent)} "
            f"{recharge.currency} by {via} onto card {recharge.card_id}: new balance "
            f"{format_minor(recharge.card_balance, exponent)} {recharge.currency}")


def amount_or_zero(text: str, exponent: int, field: str) -> int:
    """A decimal that may be zero (a count, a fee), in minor units."""
    stripped = text.strip()
    if stripped and set(stripped) <= set("0.") and stripped.count(".") <= 1 and stripped[0] == "0":
        return 0
    return to_minor(text, exponent, field=field)


def _key(given: str | None) -> str:
    return given or str(uuid.uuid4())


@click.group()
def card() -> None:
    """NFC cards: issue, show, block, unblock, replace, history."""


@card.command("issue")
@click.argument("uid")
@click.option("--holder", default=None, help="The holder's name (optional).")
@click.option("--currency", default="EUR", show_default=True)
@click.option("--payout-method", type=click.Choice(PAYOUT_METHODS), default=None,
              help="Where the close-out pays the rest (default bank_transfer).")
@json_option
@pass_app
def card_issue(app: AppContext, uid: str, holder: str | None, currency: str, payout_method: str | None,
               as_json: bool) -> None:
    """Issue a card for NFC UID."""
    issued = app.client.issue_card(uid, currency=currency.upper(), holder=holder, payout_method=payout_method)
    emit(issued, as_json, "issued " + describe_card(issued))


@card.command("list")
@click.option("--status", default=None, type=click.Choice(("active", "blocked", "cashed_out")))
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--after", "after_id", default=None, type=int, help="The last id seen, for the next page.")
@json_option
@pass_app
def card_list(app: AppContext, status: str | None, limit: int, after_id: int | None, as_json: bool) -> None:
    """The cards with their balances (commands take the id or the NFC uid)."""
    found = app.client.list_cards(status, limit, after_id)
    emit(found, as_json, "\n".join(describe_card(c) for c in found) or "no card")


@card.command("show")
@click.argument("card_ref", metavar="CARD")
@json_option
@pass_app
def card_show(app: AppContext, card_ref: str, as_json: bool) -> None:
    """Status and balance of CARD (id or NFC uid)."""
    found = app.client.get_card(card_id(app, card_ref))
    emit(found, as_json, describe_card(found))


@card.command("block")
@click.argument("card_ref", metavar="CARD")
@click.option("--reason", default=None, help="lost, stolen, ...")
@json_option
@pass_app
def card_block(app: AppContext, card_ref: str, reason: str | None, as_json: bool) -> None:
    """Block CARD: every debit is refused (CARD_BLOCKED) until it is unblocked."""
    changed = app.client.set_card_status(card_id(app, card_ref), "blocked", reason=reason)
    emit(changed, as_json, describe_card(changed))


@card.command("unblock")
@click.argument("card_ref", metavar="CARD")
@json_option
@pass_app
def card_unblock(app: AppContext, card_ref: str, as_json: bool) -> None:
    """Unblock CARD."""
    changed = app.client.set_card_status(card_id(app, card_ref), "active")
    emit(changed, as_json, describe_card(changed))


@card.command("replace")
@click.argument("card_ref", metavar="CARD")
@click.argument("new_uid")
@click.option("--reason", default=None)
@request_id_option
@yes_option
@json_option
@pass_app
def card_replace(app: AppContext, card_ref: str, new_uid: str, reason: str | None, request_id: str | None,
                 yes: bool, as_json: bool) -> None:
    """Issue a card NEW_UID, move CARD's whole balance to it and block CARD."""
    old = app.client.get_card(card_id(app, card_ref))
    confirm(f"Move {format_minor(old.available, old.exponent)} {old.currency} from card {old.card_id} to a new "
            f"card {new_uid} and block card {old.card_id}?", yes)
    key = _key(request_id)
    done = app.client.replace_card(old.card_id, new_uid, key, reason=reason)
    new = app.client.get_card(done.new_card_id)
    emit({"replacement": done, "request_id": key, "new_card": new}, as_json,
         f"{'replayed: ' if done.replayed else ''}moved {format_minor(done.moved_amount, old.exponent)} "
         f"{done.currency} from card {done.old_card_id} (blocked) (request id {key})\n{describe_card(new)}")


@card.command("history")
@click.argument("card_ref", metavar="CARD")
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--before", "before_entry_id", default=None, type=int, help="Entry id to page back from.")
@json_option
@pass_app
def card_history(app: AppContext, card_ref: str, limit: int, before_entry_id: int | None, as_json: bool) -> None:
    """The entries of CARD, newest first: orders, refunds, recharges, replacement, cash-out."""
    found = app.client.get_card(card_id(app, card_ref))
    entries = app.client.card_history(found.card_id, limit=limit, before_entry_id=before_entry_id)
    lines = [f"{e.entry_id:>8}  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.kind:<20} "
             f"{format_minor(e.amount, found.exponent):>10}  -> {format_minor(e.new_balance, found.exponent):>10}"
             for e in entries]
    emit(entries, as_json, "\n".join(lines) or "no entries")


@click.command()
@click.argument("card_ref", metavar="CARD")
@click.argument("amount")
@click.option("--method", "payment_method", type=click.Choice(PAYMENT_METHODS), required=True,
              help="cash (into the checkpoint's drawer) or card (a card payment).")
@click.option("--staff", "staff_ref", required=True, envvar="PGWALLET_STAFF_ID",
              help="The staff member taking the payment: id or name ($PGWALLET_STAFF_ID).")
@click.option("--checkpoint", "checkpoint_ref", required=True, help="The checkpoint: id or name.")
@request_id_option
@yes_option
@json_option
@pass_app
def recharge(app: AppContext, card_ref: str, amount: str, payment_method: str, staff_ref: str, checkpoint_ref: str,
             request_id: str | None, yes: bool, as_json: bool) -> None:
    """Recharge CARD (id or NFC uid) with AMOUNT (a decimal such as 20.00) at a checkpoint."""
    staff_member, desk = staff_id(app, staff_ref), checkpoint_id(app, checkpoint_ref)
    target = app.client.get_card(card_id(app, card_ref))
    minor = to_minor(amount, target.exponent)
    confirm(f"Recharge {format_minor(minor, target.exponent)} {target.currency} ({payment_method}) onto card "
            f"{target.card_id}?", yes)
    key = _key(request_id)
    done = app.client.process_checkpoint_recharge(target.card_id, minor, staff_member, desk, payment_method, key)
    emit({"recharge": done, "request_id": key}, as_json,
         f"{describe_recharge(done, target.exponent)} (request id {key})")


@click.group()
def bar() -> None:
    """Bars (points of sale) and their revenue."""


@bar.command("create")
@click.argument("code")
@click.argument("name", required=False)
@click.option("--currency", default="EUR", show_default=True)
@json_option
@pass_app
def bar_create(app: AppContext, code: str, name: str | None, currency: str, as_json: bool) -> None:
    """Create bar CODE (its terminals' point_of_sale; NAME, if given, for people) with a revenue account."""
    made = app.client.create_bar(code, name or code, currency=currency.upper())
    emit(made, as_json, f"bar {made.code} ({made.name}): revenue account {made.revenue_account_id}")


@bar.command("list")
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--after", "after_id", default=None, type=int, help="The last id seen, for the next page.")
@json_option
@pass_app
def bar_list(app: AppContext, limit: int, after_id: int | None, as_json: bool) -> None:
    """The bars: code, name, currency, revenue account."""
    found = app.client.list_bars(limit, after_id)
    emit(found, as_json, "\n".join(f"bar {b.id} {b.code} ({b.name}), {b.currency}: revenue account "
                                   f"{b.revenue_account_id}" for b in found) or "no bar")


@click.group()
def order() -> None:
    """Bar orders: show and refund."""


@order.command("show")
@click.argument("order_id", type=int)
@json_option
@pass_app
def order_show(app: AppContext, order_id: int, as_json: bool) -> None:
    """ORDER_ID with its items and refunds."""
    found = app.client.get_bar_order(order_id)
    exponent = app.client.get_card(found.card_id).exponent
    lines = [f"order {found.order_id} at {found.point_of_sale}, card {found.card_id}: "
             f"{format_minor(found.total_amount, exponent)} {found.currency}, refunded "
             f"{format_minor(found.refunded_amount, exponent)}"]
    lines += [f"  {i.quantity} x {i.name} ({i.sku}) at {format_minor(i.unit_price, exponent)}"
              + (f", {i.refunded_quantity} refunded" if i.refunded_quantity else "") for i in found.items]
    emit(found, as_json, "\n".join(lines))


def _refund_items(values: tuple[str, ...]) -> list[dict[str, Any]] | None:
    items = []
    for value in values:
        sku, _, quantity = value.rpartition("=")
        if not sku or not (quantity.isascii() and quantity.isdigit() and len(quantity) <= 4):
            raise click.BadParameter(f"{value!r}: expected SKU=QUANTITY, a quantity of 1 to 9999", param_hint="--item")
        items.append({"sku": sku, "quantity": int(quantity)})
    return items or None


@order.command("refund")
@click.argument("order_id", type=int)
@click.option("--item", "item_values", multiple=True, metavar="SKU=QTY", help="Refund only these (repeatable).")
@request_id_option
@yes_option
@json_option
@pass_app
def order_refund(app: AppContext, order_id: int, item_values: tuple[str, ...], request_id: str | None, yes: bool,
                 as_json: bool) -> None:
    """Refund ORDER_ID to its card: the whole rest of it, or the --item given."""
    items = _refund_items(item_values)
    confirm(f"Refund {'the rest of' if items is None else 'items of'} order {order_id}?", yes)
    key = _key(request_id)
    done = app.client.refund_bar_order(order_id, key, items=items)
    exponent = app.client.get_card(done.card_id).exponent
    emit({"refund": done, "request_id": key}, as_json,
         f"{'replayed: ' if done.replayed else ''}refunded {format_minor(done.amount, exponent)} {done.currency} "
         f"to card {done.card_id} ({format_minor(done.refunded_amount, exponent)} of "
         f"{format_minor(done.total_amount, exponent)} refunded; request id {key})")


@click.group()
def staff() -> None:
    """Staff members who take recharges and close drawers."""


@staff.command("add")
@click.argument("name")
@json_option
@pass_app
def staff_add(app: AppContext, name: str, as_json: bool) -> None:
    """Add an active staff member."""
    made = app.client.create_staff(name)
    emit(made, as_json, f"staff {made.id} {made.name}: {made.status}")


@staff.command("list")
@click.option("--status", default=None, type=click.Choice(STAFF_STATUSES))
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--after", "after_id", default=None, type=int, help="The last id seen, for the next page.")
@json_option
@pass_app
def staff_list(app: AppContext, status: str | None, limit: int, after_id: int | None, as_json: bool) -> None:
    """The staff members: id, name, status (commands take the id or the name)."""
    found = app.client.list_staff(status, limit, after_id)
    emit(found, as_json, "\n".join(f"staff {m.id} {m.name}: {m.status}" for m in found) or "no staff member")


@staff.command("status")
@click.argument("staff_id", type=int)
@click.argument("status", type=click.Choice(STAFF_STATUSES))
@json_option
@pass_app
def staff_status(app: AppContext, staff_id: int, status: str, as_json: bool) -> None:
    """Activate or deactivate STAFF_ID."""
    changed = app.client.set_staff_status(staff_id, status)
    emit(changed, as_json, f"staff {changed.id} {changed.name}: {changed.status}")


@click.group()
def checkpoint() -> None:
    """Recharge checkpoints and their cash drawers."""


@checkpoint.command("create")
@click.argument("name")
@click.option("--currency", default="EUR", show_default=True)
@json_option
@pass_app
def checkpoint_create(app: AppContext, name: str, currency: str, as_json: bool) -> None:
    """Create a checkpoint with its cash drawer account."""
    made = app.client.create_checkpoint(name, currency=currency.upper())
    emit(made, as_json, f"checkpoint {made.id} ({made.name}): drawer account {made.drawer_account_id}")


@checkpoint.command("list")
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--after", "after_id", default=None, type=int, help="The last id seen, for the next page.")
@json_option
@pass_app
def checkpoint_list(app: AppContext, limit: int, after_id: int | None, as_json: bool) -> None:
    """The checkpoints and the cash each drawer should hold."""
    found = app.client.list_checkpoints(limit, after_id)
    emit(found, as_json, "\n".join(f"checkpoint {k.id} {k.name}: drawer account {k.drawer_account_id}, expected "
                                   f"cash {format_minor(k.expected_cash, k.exponent)} {k.currency}" for k in found)
         or "no checkpoint")


@click.group()
def drawer() -> None:
    """Cash drawers of the checkpoints."""


@drawer.command("close")
@click.argument("checkpoint_ref", metavar="CHECKPOINT")
@click.option("--staff", "staff_ref", required=True, envvar="PGWALLET_STAFF_ID", help="Id or name.")
@click.option("--counted", required=True, help="The cash counted in the drawer, a decimal.")
@request_id_option
@yes_option
@json_option
@pass_app
def drawer_close(app: AppContext, checkpoint_ref: str, staff_ref: str, counted: str, request_id: str | None,
                 yes: bool, as_json: bool) -> None:
    """End of shift at CHECKPOINT (id or name): hand the drawer's cash to the cash office, record the count."""
    desk, staff_member = checkpoint_id(app, checkpoint_ref), staff_id(app, staff_ref)
    state = app.client.get_checkpoint(desk)
    exp = state.exponent
    minor = amount_or_zero(counted, exp, "counted")
    confirm(f"Close the drawer of checkpoint {desk}: {format_minor(minor, exp)} {state.currency} counted, "
            f"{format_minor(state.expected_cash, exp)} expected?", yes)
    key = _key(request_id)
    done = app.client.close_drawer(desk, staff_member, minor, key)
    difference = ("exact" if done.difference == 0 else
                  f"{'over' if done.difference > 0 else 'short'} by {format_minor(abs(done.difference), exp)}")
    emit({"closing": done, "request_id": key}, as_json,
         f"{'replayed: ' if done.replayed else ''}drawer of checkpoint {desk} closed: expected "
         f"{format_minor(done.expected_amount, exp)} {done.currency}, counted "
         f"{format_minor(done.counted_amount, exp)}, {difference} (request id {key})")


@click.command()
@click.option("--fee", default=None, help="Fee kept per card, a decimal (default: the cashless_cash_out_fee setting).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@yes_option
@json_option
@pass_app
def closeout(app: AppContext, fee: str | None, batch_size: int, yes: bool, as_json: bool) -> None:
    """After the event: pay every card's remaining balance (minus the fee) to its payout method, in batches
    (one transaction each; a rerun continues and never pays a card twice)."""
    fee_minor = None if fee is None else amount_or_zero(fee, FESTIVAL_EXPONENT, "fee")
    client: Client = app.client
    total = client.cards_to_cash_out()
    confirm(f"Cash out {total} cards?", yes)
    done = {"cards": 0, "amount": 0, "fee": 0}
    after = 0
    step: Callable[[], Any] = lambda: client.cash_out_cards(after, batch_size=batch_size, fee=fee_minor)  # noqa: E731
    # the bar goes to stderr and only on a terminal: --json output and scripts stay clean
    progress: Any = (click.progressbar(length=total, label="cashing out", file=sys.stderr) if sys.stderr.isatty()
                     else contextlib.nullcontext())
    with progress as bar_:
        while (batch := step()).cards:
            after = batch.last_card_id
            for k in done:
                done[k] += getattr(batch, k)
            if bar_ is not None:
                bar_.update(batch.cards)
    emit(done, as_json, f"cashed out {done['cards']} cards: {format_minor(done['amount'], FESTIVAL_EXPONENT)} "
                        f"paid out, {format_minor(done['fee'], FESTIVAL_EXPONENT)} in fees")


COMMANDS = (card, recharge, bar, order, staff, checkpoint, drawer, closeout)


def demo_festival(c: Client, url: str, run: str, say: Callable[[str], None], terminals: int = 8) -> None:
    """A festival: cards, recharges both ways (a Stripe webhook redelivered, a checkpoint), bar orders from
    concurrent terminals, a refund, a lost card replaced, a drawer closed, and the cards cashed out."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from pyapp import stripe_signature
    from pyapp.edge import Edge
    from pyapp.errors import InsufficientFunds

    say("== cashless festival")
    tag = run.upper()
    bars = [c.create_bar(f"bar-{run}-{i}", f"Bar {i}") for i in range(2)]
    staff_member = c.create_staff(f"Sam {run}")
    gate = c.create_checkpoint(f"North gate {run}")
    alice = c.issue_card(f"04A{tag}", holder="Alice")
    bob = c.issue_card(f"04B{tag}", holder="Bob")
    say(f"-- issued {describe_card(alice)}; {describe_card(bob)}")

    say("-- Alice pays 40.00 online: Stripe delivers the webhook three times, one recharge")
    secret = f"whsec_demo_{run}"
    edge = Edge(c, stripe_secret=secret)
    payload = json.dumps({"id": f"evt_{run}", "type": "checkout.session.completed", "data": {"object": {
        "id": f"cs_demo_{run}", "amount_total": 4000, "currency": "eur", "payment_status": "paid",
        "metadata": {"card_id": str(alice.card_id)}}}}).encode()
    for delivery in range(3):
        status, body = edge.handle("stripe_webhook", payload,
                                   {"Stripe-Signature": stripe_signature.header(payload, secret)})
        say(f"   delivery {delivery + 1}: HTTP {status}, replayed={body['data']['recharge']['replayed']}")
    forged = edge.handle("stripe_webhook", payload, {"Stripe-Signature": "t=1,v1=00"})
    say(f"   a forged delivery: HTTP {forged[0]} {forged[1]['error']['code']}")

    say("-- Bob pays 25.00 cash at the North gate (the terminal retries: same request id, one recharge)")
    for _ in range(2):
        done = c.process_checkpoint_recharge(bob.card_id, 2500, staff_member.id, gate.id, "cash", f"{run}-bob-cash")
        say("   " + describe_recharge(done, 2))

    say(f"-- {terminals} terminals on two bars sell Alice 3.00 orders at once until her card is empty")
    order_items = [{"sku": "beer", "name": "Beer", "quantity": 1, "unit_price": 250},
                   {"sku": "cup", "name": "Cup deposit", "quantity": 1, "unit_price": 50}]
    with ThreadPoolExecutor(terminals) as pool, Client(url, max_size=terminals) as terminal_client:
        def sell(i: int) -> int | None:
            try:
                return terminal_client.process_bar_order(alice.card_id, order_items, 300,
                                                         f"{run}-t{i % terminals}-{i}", bars[i % 2].code).order_id
            except InsufficientFunds:
                return None

        sold = list(pool.map(sell, range(16)))
    orders = [o for o in sold if o is not None]
    say(f"   {len(orders)} orders accepted, {sold.count(None)} refused with INSUFFICIENT_FUNDS; "
        + describe_card(c.get_card(alice.card_id)))

    say("-- the bar refunds the cup deposit of one order")
    refund = c.refund_bar_order(orders[0], f"{run}-refund", items=[{"sku": "cup", "quantity": 1}])
    say(f"   refunded {format_minor(refund.amount, 2)} EUR to card {refund.card_id}")

    say("-- Bob loses his card: a new one takes the whole balance, the old one is blocked")
    swap = c.replace_card(bob.card_id, f"04C{tag}", f"{run}-replace", reason="lost")
    say(f"   {describe_card(c.get_card(swap.old_card_id))}\n   {describe_card(c.get_card(swap.new_card_id))}")
    scan = c.lookup_card(bob.uid, location="bar 1", device="terminal 3")
    say(f"   a terminal scans the old card: {scan.status} (written to the scan log)")

    say("-- end of shift: the drawer is counted and handed to the cash office")
    closing = c.close_drawer(gate.id, staff_member.id, 2500, f"{run}-drawer")
    say(f"   expected {format_minor(closing.expected_amount, 2)}, counted {format_minor(closing.counted_amount, 2)}, "
        f"difference {format_minor(closing.difference, 2)}")

    say("-- close-out (pgwallet closeout does this for every card, in batches): 0.50 fee per card")
    for card_ in (alice.card_id, swap.new_card_id):
        out = c.cash_out_card(card_, f"{run}-cashout-{card_}", fee=50)
        say(f"   card {card_}: {format_minor(out.amount, 2)} EUR to {out.payout_method}, "
            f"fee {format_minor(out.fee, 2)}")
