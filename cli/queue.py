"""Queue commands for staff: show a performer's queue, move items through it, refund, sweep, watch.

``finish`` pays the performer (minus the platform fee); ``abandon`` and ``refund`` give the user the
tokens back. Each asks for confirmation on a terminal (``--yes`` to skip) and makes a fresh idempotency
key unless ``--key`` is given: repeat a call with the printed key to replay its first result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, yes_option
from cli.ledger import _key, describe, key_option
from pyapp.client import Client
from pyapp.events import QueueEvent, QueueEvents
from pyapp.money import format_minor
from pyapp.queue import QueueEntry, QueueItem

Say = Callable[[str], None]


def describe_item(item: QueueItem, exponent: int = 0) -> str:
    text = (f"item {item.item_id} {item.status}: {format_minor(item.tokens, exponent)} tokens, {item.title!r}, "
            f"user {item.user_id} -> performer {item.performer_id}")
    if item.position is not None:
        text += f", position {item.position} of {item.total_in_queue}, wait ~{item.estimated_wait_seconds} s"
    if item.status == "FINISHED":
        text += f", fee {format_minor(item.fee, exponent)}"
    if item.refund_reason:
        text += f" ({item.refund_reason})"
    return text + (" (replayed)" if item.replayed else "")


def describe_entry(entry: QueueEntry) -> str:
    return (f"{entry.position:>4}. item {entry.item_id:<8} {entry.status:<8} {entry.tokens:>8} tokens  "
            f"user {entry.user_id:<8} wait ~{entry.estimated_wait_seconds:>5} s  {entry.title}")


def _exponent(client: Client, account_id: int) -> int:
    return client.get_account(account_id).exponent


@click.group()
def queue() -> None:
    """Performer queues: paid requests held in escrow until finished, abandoned or refunded."""


@queue.command("configure")
@click.argument("performer_id", type=int)
@click.argument("fee_account_id", type=int)
@click.option("--fee-bps", type=int, default=None, help="Platform fee in basis points (default 2000 = 20 %).")
@click.option("--max-open", type=int, default=None, help="Most open items (default 50).")
@click.option("--start-timeout", "start_timeout_seconds", type=int, default=None,
              help="Seconds an item may wait before the sweep abandons it (default 1800).")
@click.option("--grace-percent", type=int, default=None,
              help="A started item is refunded after this percentage of its expected duration (default 200).")
@json_option
@pass_app
def queue_configure(app: AppContext, performer_id: int, fee_account_id: int, fee_bps: int | None,
                    max_open: int | None, start_timeout_seconds: int | None, grace_percent: int | None,
                    as_json: bool) -> None:
    """Open or change the queue of PERFORMER_ID; fees go to FEE_ACCOUNT_ID."""
    done = app.client.configure_performer_queue(performer_id, fee_account_id, fee_bps=fee_bps, max_open=max_open,
                                                start_timeout_seconds=start_timeout_seconds,
                                                grace_percent=grace_percent)
    emit(done, as_json, f"queue of performer {done.performer_id}: fee {done.fee_bps} bps to account "
                        f"{done.fee_account_id}, at most {done.max_open} open items, start within "
                        f"{done.start_timeout_seconds} s, grace {done.grace_percent} %")


@queue.command("show")
@click.argument("performer_id", type=int)
@json_option
@pass_app
def queue_show(app: AppContext, performer_id: int, as_json: bool) -> None:
    """The open items of PERFORMER_ID in queue order, with positions and estimated waits."""
    depth = app.client.get_queue_depth(performer_id)
    entries = app.client.get_performer_queue(performer_id)
    head = (f"performer {performer_id}: {depth.depth} open of at most {depth.max_open} "
            f"({depth.started} started, {depth.waiting} waiting)")
    emit({"depth": depth, "items": entries}, as_json, "\n".join([head, *map(describe_entry, entries)]))


@queue.command("item")
@click.argument("item_id", type=int)
@json_option
@pass_app
def queue_item(app: AppContext, item_id: int, as_json: bool) -> None:
    """One item, its status, settlement and live position."""
    found = app.client.get_queue_item(item_id)
    emit(found, as_json, describe_item(found, _exponent(app.client, found.performer_id)))


def _transition(app: AppContext, item: QueueItem, key: str, as_json: bool) -> None:
    text = describe_item(item, _exponent(app.client, item.performer_id)) + f" (key {key})"
    if item.status == "FINISHED":
        text += "\n" + describe(app.client.get_account(item.performer_id))
    elif item.status in ("ABANDONED", "REFUNDED"):
        text += "\n" + describe(app.client.get_account(item.user_id))
    emit({"item": item, "idempotency_key": key}, as_json, text)


@queue.command("start")
@click.argument("item_id", type=int)
@key_option
@json_option
@pass_app
def queue_start(app: AppContext, item_id: int, idempotency_key: str | None, as_json: bool) -> None:
    """CREATED -> STARTED (one started item per performer)."""
    key = _key(idempotency_key)
    _transition(app, app.client.start_item(item_id, key), key, as_json)


@queue.command("finish")
@click.argument("item_id", type=int)
@key_option
@yes_option
@json_option
@pass_app
def queue_finish(app: AppContext, item_id: int, idempotency_key: str | None, yes: bool, as_json: bool) -> None:
    """STARTED -> FINISHED: pay the performer the held tokens minus the platform fee."""
    confirm(f"Finish item {item_id} and pay the performer?", yes)
    key = _key(idempotency_key)
    _transition(app, app.client.complete_item(item_id, key), key, as_json)


@queue.command("abandon")
@click.argument("item_id", type=int)
@click.option("--reason", required=True, help="Why the item is abandoned (kept on the item).")
@key_option
@yes_option
@json_option
@pass_app
def queue_abandon(app: AppContext, item_id: int, reason: str, idempotency_key: str | None, yes: bool,
                  as_json: bool) -> None:
    """CREATED or STARTED -> ABANDONED: the user gets the tokens back."""
    confirm(f"Abandon item {item_id} and give the user the tokens back?", yes)
    key = _key(idempotency_key)
    _transition(app, app.client.abandon_item(item_id, reason, key), key, as_json)


@queue.command("refund")
@click.argument("item_id", type=int)
@click.option("--reason", default=None, help="Why the item is refunded (kept on the item).")
@key_option
@yes_option
@json_option
@pass_app
def queue_refund(app: AppContext, item_id: int, reason: str | None, idempotency_key: str | None, yes: bool,
                 as_json: bool) -> None:
    """Any item not settled yet -> REFUNDED: the user gets the tokens back."""
    confirm(f"Refund item {item_id}?", yes)
    key = _key(idempotency_key)
    _transition(app, app.client.refund_item(item_id, key, reason=reason), key, as_json)


@queue.command("sweep")
@click.option("--batch-size", default=1000, show_default=True, type=int)
@json_option
@pass_app
def queue_sweep(app: AppContext, batch_size: int, as_json: bool) -> None:
    """Abandon items not started in time, refund started items that overran; in batches, until none is left.

    Schedule it every minute: cron or a loop (`while true; do pgwallet queue sweep; sleep 60; done`), or
    pg_cron: select cron.schedule('pgwallet-queue-sweep', '* * * * *',
    'select pgwallet.expire_stale_queue_items()').
    """
    abandoned = refunded = 0
    while True:
        done = app.client.expire_stale_queue_items(batch_size)
        abandoned, refunded = abandoned + done.abandoned, refunded + done.refunded
        if done.abandoned + done.refunded < batch_size:
            break
    emit({"abandoned": abandoned, "refunded": refunded}, as_json,
         f"abandoned {abandoned} items not started in time, refunded {refunded} overrun items")


@queue.command("relay")
@click.option("--batch-size", default=1000, show_default=True, type=int)
@click.option("--loop", "every", type=float, default=None, metavar="SECONDS",
              help="Keep relaying, pausing this long when nothing is waiting (Ctrl-C to stop).")
@json_option
@pass_app
def queue_relay(app: AppContext, batch_size: int, every: float | None, as_json: bool) -> None:
    """With queue_events = 'outbox': send the stored queue events (pg_notify), oldest first."""
    total = 0
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            done = app.client.relay_queue_events(batch_size)
            total += done
            if done < batch_size:
                if every is None:
                    break
                time.sleep(every)
    emit({"relayed": total}, as_json, f"relayed {total} queue events")


@queue.command("watch")
@click.argument("performer_ids", type=int, nargs=-1, required=True)
@click.option("--purchases", is_flag=True, help="Also show tip-grid purchases that succeed.")
@click.option("--count", type=int, default=None, help="Stop after this many events.")
@click.option("--timeout", type=float, default=None, help="Stop when no event came for this many seconds.")
@json_option
@pass_app
def queue_watch(app: AppContext, performer_ids: tuple[int, ...], purchases: bool, count: int | None,
                timeout: float | None, as_json: bool) -> None:
    """Print the queue events of PERFORMER_IDS as they commit (Ctrl-C to stop)."""

    async def watch() -> None:
        seen = 0
        async with QueueEvents(app.url, performer_ids=performer_ids, purchases=purchases) as events:
            while count is None or seen < count:
                try:
                    event = await (events.next(timeout) if timeout else events.__anext__())
                except TimeoutError:
                    return
                seen += 1
                emit_event(event, as_json)

    def emit_event(event: QueueEvent, as_json: bool) -> None:
        p = event.payload
        text = (f"{event.channel}: purchase {p.get('purchased_item_id')} SUCCESS (item {event.item_id})"
                if event.kind == "purchase" else
                f"{event.channel}: item {event.item_id} {p.get('previous_status') or 'new'} -> {event.status}, "
                f"depth {p.get('depth')}")
        click.echo(json.dumps({"channel": event.channel, **p}, sort_keys=True) if as_json else text)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch())


COMMANDS = (queue,)


def demo_live_show(c: Client, url: str, run: str, say: Say) -> None:
    """A live show: tip-grid purchases both ways, the performer works through the queue, a user abandons,
    the sweep refunds an item that overran, and every queue event is counted by a listener."""
    import psycopg

    from pyapp.errors import AlreadyProcessing

    say("== live show (queue with escrow, tip grid)")
    mint = c.open_system_account("TOKEN", "system", name=f"token mint {run}").id
    fees = c.open_account("TOKEN", "fees", name=f"platform fees {run}").id
    luna = c.open_account("TOKEN", "performer", name=f"luna {run}").id
    max_ = c.open_account("TOKEN", "performer", name=f"max {run}").id
    users = {name: c.open_account("TOKEN", "user_wallet", name=f"{name} {run}", owner=f"{name}-{run}").id
             for name in ("alice", "bob", "carol", "dave")}
    for name, user in users.items():
        c.fund_account(mint, user, 1000, f"{run}-tokens-{name}")
    c.configure_performer_queue(luna, fees, fee_bps=2000)
    c.configure_performer_queue(max_, fees, fee_bps=2000, grace_percent=100)
    say(f"-- luna's and max's queues: 20 % platform fee to account {fees}; four users with 1000 tokens each")
    flash = c.create_tip_menu_item(luna, "flash", 50, expected_duration_seconds=30)
    song = c.create_tip_menu_item(luna, "song request", 100, expected_duration_seconds=180)
    dance = c.create_tip_menu_item(luna, "dance", 200, expected_duration_seconds=120)

    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"listen pgwallet_queue_{luna}")
        listener.execute("listen purchased_item_success")

        say("-- alice buys a flash, IMMEDIATE: paid to luna at once")
        bought = c.purchase_tip_grid_item(users["alice"], luna, flash.tip_menu_item_id,
                                          idempotency_key=f"{run}-alice-flash", acting_user=f"alice-{run}")
        say(f"   purchase {bought.purchased_item_id} {bought.status} ({bought.price} tokens)")
        say("-- bob and carol buy QUEUED items, alice adds a chip-menu request: they wait in escrow")
        bob = c.purchase_tip_grid_item(users["bob"], luna, song.tip_menu_item_id, "QUEUED",
                                       idempotency_key=f"{run}-bob-song", acting_user=f"bob-{run}")
        carol = c.purchase_tip_grid_item(users["carol"], luna, dance.tip_menu_item_id, "QUEUED",
                                         idempotency_key=f"{run}-carol-dance", acting_user=f"carol-{run}")
        chip = c.create_queue_item(luna, users["alice"], 75, "say my name", f"{run}-alice-chip",
                                   source_feature="chip_menu", expected_duration_seconds=20,
                                   acting_user=f"alice-{run}")
        for p in (bob, carol):
            say(f"   purchase {p.purchased_item_id} {p.status}: item {p.queue_item_id}, position {p.position}")
        say(f"   chip item {chip.item_id}: position {chip.position} of {chip.total_in_queue}, "
            f"wait ~{chip.estimated_wait_seconds} s")
        for entry in c.get_performer_queue(luna):
            say("   " + describe_entry(entry))

        say("-- luna starts bob's song; starting carol's dance too is refused")
        c.start_item(bob.queue_item_id, f"{run}-start-bob")
        try:
            c.start_item(carol.queue_item_id, f"{run}-start-carol")
        except AlreadyProcessing as exc:
            say(f"   {exc.code}: {exc.detail}")
        done = c.complete_item(bob.queue_item_id, f"{run}-finish-bob")
        say("   " + describe_item(done))
        say(f"   bob's purchase is now {c.get_purchased_item(bob.purchased_item_id).status}")
        say("-- carol gives up waiting: her dance is abandoned, her tokens come back")
        c.abandon_item(carol.queue_item_id, "had to leave", f"{run}-abandon-carol")
        say(f"   carol's purchase is now {c.get_purchased_item(carol.purchased_item_id).status}")
        c.start_item(chip.item_id, f"{run}-start-chip")
        say("   " + describe_item(c.complete_item(chip.item_id, f"{run}-finish-chip")))
        events = list(listener.notifies(timeout=0.5))

    say("-- max starts dave's 1-second request and overruns it; the sweep refunds it")
    stale = c.create_queue_item(max_, users["dave"], 300, "one-second trick", f"{run}-dave",
                                expected_duration_seconds=1, acting_user=f"dave-{run}")
    c.start_item(stale.item_id, f"{run}-start-dave")
    time.sleep(1.2)
    swept = c.expire_stale_queue_items()
    say(f"   sweep: {swept.abandoned} abandoned, {swept.refunded} refunded; "
        + describe_item(c.get_queue_item(stale.item_id)))
    say(f"-- a listener on luna's channel and purchased_item_success saw {len(events)} events: "
        + ", ".join(sorted({n.channel.replace(str(luna), 'LUNA') for n in events})))
    say("-- balances")
    for account in (*users.values(), luna, max_, fees):
        say("   " + describe(c.get_account(account)))
