"""Queue commands for staff: show a performer's queue, move items through it, refund, sweep, watch.

``finish`` pays the performer (minus the platform fee); ``abandon`` and ``refund`` give the user the
tokens back. Each asks for confirmation on a terminal (``--yes`` to skip) and makes a fresh idempotency
key unless ``--key`` is given: repeat a call with the printed key to replay its first result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
