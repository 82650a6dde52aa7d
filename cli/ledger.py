"""Ledger commands: accounts, transfers, holds and maintenance sweeps.

Amounts are typed as decimals (``12.50``) and converted exactly with the currency's exponent of the
account the money leaves. Without ``--key`` a money-moving command makes a fresh idempotency key and
prints it, so the same call can be replayed safely with ``--key``.
"""

from __future__ import annotations

import uuid

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, yes_option
from pyapp.ledger import ACCOUNT_KINDS, ACCOUNT_STATUSES
from pyapp.money import format_minor, to_minor
from pyapp.results import Account, Hold

key_option = click.option("--key", "idempotency_key", default=None, metavar="KEY",
                          help="Idempotency key; repeat it to replay the first result. Default: a new one.")


def describe(account: Account) -> str:
    def money(value: int) -> str:
        return format_minor(value, account.exponent)

    return (f"account {account.id} ({account.kind}{', ' + account.name if account.name else ''}) "
            f"{account.status}: balance {money(account.balance)} {account.currency}, "
            f"held {money(account.held)}, available {money(account.available)}")


def describe_hold(hold: Hold, exponent: int) -> str:
    text = (f"hold {hold.hold_id} {hold.status}: {format_minor(hold.amount, exponent)} {hold.currency} "
            f"from account {hold.account_id} to account {hold.credit_account_id}")
    if hold.status == "captured" and hold.captured_amount is not None:
        text += f", captured {format_minor(hold.captured_amount, exponent)}"
    if hold.released_amount:
        text += f", released {format_minor(hold.released_amount, exponent)}"
    return text + (" (replayed)" if hold.replayed else "")


def _key(given: str | None) -> str:
    return given or str(uuid.uuid4())


@click.group()
def account() -> None:
    """Open, show and list accounts."""


@account.command("open")
@click.argument("currency")
@click.argument("kind", type=click.Choice(ACCOUNT_KINDS))
@click.option("--name", default=None)
@click.option("--allow-negative/--no-allow-negative", default=None,
              help="Default: yes for clearing and system. Such accounts are an admin's to open.")
@click.option("--owner", default=None, help="The end user it belongs to (user_* calls debit it only for them).")
@click.option("--collector/--no-collector", default=None, help="Default: yes for revenue, fees and clearing.")
@json_option
@pass_app
def account_open(app: AppContext, currency: str, kind: str, name: str | None, allow_negative: bool | None,
                 owner: str | None, collector: bool | None, as_json: bool) -> None:
    """Open an account of KIND in CURRENCY (EUR, USD, GBP, TOKEN, ...).

    One that may go negative (system, clearing, or --allow-negative) is opened with the admin tier's
    open_system_account; any other with open_account."""
    if allow_negative or kind in ("system", "clearing"):
        if owner is not None:
            raise click.UsageError("--owner is for ordinary accounts: one that may go negative has no owner")
        opened = app.client.open_system_account(currency.upper(), kind, name=name, allow_negative=allow_negative,
                                                collector=collector)
    else:
        opened = app.client.open_account(currency.upper(), kind, name=name, collector=collector, owner=owner)
    emit(opened, as_json, "opened " + describe(opened))


@account.command("list")
@click.option("--kind", default=None, type=click.Choice(ACCOUNT_KINDS))
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--after", "after_id", default=None, type=int, help="The last id seen, for the next page.")
@json_option
@pass_app
def account_list(app: AppContext, kind: str | None, limit: int, after_id: int | None, as_json: bool) -> None:
    """Accounts with their balances, in id order (of one --kind)."""
    found = app.client.list_accounts(kind, limit, after_id)
    emit(found, as_json, "\n".join(describe(a) for a in found) or "no account")


@account.command("show")
@click.argument("account_id", type=int)
@json_option
@pass_app
def account_show(app: AppContext, account_id: int, as_json: bool) -> None:
    """Balance, held and available amounts of ACCOUNT_ID."""
    found = app.client.get_account(account_id)
    emit(found, as_json, describe(found))


@account.command("history")
@click.argument("account_id", type=int)
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--before", "before_entry_id", default=None, type=int, help="Entry id to page back from.")
@json_option
@pass_app
def account_history(app: AppContext, account_id: int, limit: int, before_entry_id: int | None,
                    as_json: bool) -> None:
    """The entries of ACCOUNT_ID, newest first."""
    exponent = app.client.get_account(account_id).exponent
    entries = app.client.account_history(account_id, limit=limit, before_entry_id=before_entry_id)
    lines = [f"{e.entry_id:>8}  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.kind:<14} "
             f"{format_minor(e.amount, exponent):>12}  -> {format_minor(e.new_balance, exponent):>12}"
             f"  counterparty {e.counterparty_account_id}" for e in entries]
    emit(entries, as_json, "\n".join(lines) or "no entries")


@account.command("status")
@click.argument("account_id", type=int)
@click.argument("status", type=click.Choice(ACCOUNT_STATUSES))
@json_option
@pass_app
def account_status(app: AppContext, account_id: int, status: str, as_json: bool) -> None:
    """Freeze (frozen), unfreeze (active) or close (closed) ACCOUNT_ID."""
    changed = app.client.set_account_status(account_id, status)
    emit(changed, as_json, describe(changed))


def _move(app: AppContext, from_account: int, to_account: int, amount: str, idempotency_key: str | None,
          yes: bool, as_json: bool, *, funding: bool) -> None:
    """transfer and fund: the same question, call and answer through the staff's or the admin's door."""
    source = app.client.get_account(from_account)
    minor = to_minor(amount, source.exponent)
    confirm(f"{'Fund' if funding else 'Move'} {format_minor(minor, source.exponent)} {source.currency} from "
            f"account {from_account} to account {to_account}?", yes)
    key = _key(idempotency_key)
    call = app.client.fund_account if funding else app.client.transfer
    done = call(from_account, to_account, minor, key)
    after = app.client.get_account(from_account)
    emit({"transfer": done, "idempotency_key": key, "debit_account": after}, as_json,
         f"{'replayed' if done.replayed else 'moved'} {format_minor(done.amount, source.exponent)} "
         f"{done.currency}: transfer {done.transfer_ids[0]} (key {key})\n{describe(after)}")


@click.command()
@click.argument("from_account", type=int)
@click.argument("to_account", type=int)
@click.argument("amount")
@key_option
@yes_option
@json_option
@pass_app
def transfer(app: AppContext, from_account: int, to_account: int, amount: str, idempotency_key: str | None,
             yes: bool, as_json: bool) -> None:
    """Move AMOUNT (a decimal such as 12.50) from FROM_ACCOUNT to TO_ACCOUNT (staff; never out of an
    account that may go negative: that is `pgwallet fund`)."""
    _move(app, from_account, to_account, amount, idempotency_key, yes, as_json, funding=False)


@click.command()
@click.argument("source_account", type=int)
@click.argument("to_account", type=int)
@click.argument("amount")
@key_option
@yes_option
@json_option
@pass_app
def fund(app: AppContext, source_account: int, to_account: int, amount: str, idempotency_key: str | None,
         yes: bool, as_json: bool) -> None:
    """Fund TO_ACCOUNT with AMOUNT out of SOURCE_ACCOUNT, one that may go negative included (admin)."""
    _move(app, source_account, to_account, amount, idempotency_key, yes, as_json, funding=True)


@click.group()
def hold() -> None:
    """Two-phase transfers: place a hold, then capture or void it."""


@hold.command("place")
@click.argument("account_id", type=int)
@click.argument("to_account", type=int)
@click.argument("amount")
@click.option("--timeout", "timeout_seconds", type=int, default=None, help="Expire after this many seconds.")
@key_option
@yes_option
@json_option
@pass_app
def hold_place(app: AppContext, account_id: int, to_account: int, amount: str, timeout_seconds: int | None,
               idempotency_key: str | None, yes: bool, as_json: bool) -> None:
    """Reserve AMOUNT on ACCOUNT_ID for a later capture to TO_ACCOUNT."""
    source = app.client.get_account(account_id)
    minor = to_minor(amount, source.exponent)
    confirm(f"Hold {format_minor(minor, source.exponent)} {source.currency} on account {account_id}?", yes)
    placed = app.client.place_hold(account_id, to_account, minor, _key(idempotency_key),
                                   timeout_seconds=timeout_seconds)
    emit(placed, as_json, describe_hold(placed, source.exponent))


@hold.command("capture")
@click.argument("hold_id", type=int)
@click.argument("amount", required=False)
@key_option
@yes_option
@json_option
@pass_app
def hold_capture(app: AppContext, hold_id: int, amount: str | None, idempotency_key: str | None, yes: bool,
                 as_json: bool) -> None:
    """Pay AMOUNT (default: all) of HOLD_ID to its credit account and release the rest."""
    key = _key(idempotency_key)
    exponent: int | None = None
    minor = None
    if amount is not None:
        placed = app.client.get_hold(hold_id)
        exponent = app.client.get_account(placed.account_id).exponent
        minor = to_minor(amount, exponent)
    confirm(f"Capture {amount or 'all'} of hold {hold_id}?", yes)
    captured = app.client.capture_hold(hold_id, key, amount=minor)
    exponent = exponent if exponent is not None else app.client.get_account(captured.account_id).exponent
    emit(captured, as_json, describe_hold(captured, exponent))


@hold.command("void")
@click.argument("hold_id", type=int)
@key_option
@yes_option
@json_option
@pass_app
def hold_void(app: AppContext, hold_id: int, idempotency_key: str | None, yes: bool, as_json: bool) -> None:
    """Cancel HOLD_ID: its amount becomes available again."""
    confirm(f"Void hold {hold_id}?", yes)
    voided = app.client.void_hold(hold_id, _key(idempotency_key))
    emit(voided, as_json, describe_hold(voided, app.client.get_account(voided.account_id).exponent))


@hold.command("expire")
@click.option("--batch-size", default=1000, show_default=True, type=int)
@json_option
@pass_app
def hold_expire(app: AppContext, batch_size: int, as_json: bool) -> None:
    """Release every hold past its expiry, in batches."""
    total = 0
    while (done := app.client.expire_holds(batch_size)) > 0:
        total += done
    emit({"expired": total}, as_json, f"expired {total} holds")


@click.group()
def keys() -> None:
    """Idempotency keys."""


@keys.command("purge")
@click.option("--batch-size", default=1000, show_default=True, type=int)
@json_option
@pass_app
def keys_purge(app: AppContext, batch_size: int, as_json: bool) -> None:
    """Delete expired idempotency keys, in small batches."""
    total = 0
    while (done := app.client.purge_idempotency_keys(batch_size)) > 0:
        total += done
    emit({"purged": total}, as_json, f"purged {total} expired keys")


COMMANDS = (account, transfer, fund, hold, keys)
