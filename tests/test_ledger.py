"""The ledger core, procedure by procedure: happy path, each error, replay, replay with a changed payload."""

from __future__ import annotations

import itertools
import threading
import time

import psycopg
import pytest
from conftest import Ledger, snapshot

from pyapp import Client, errors


def refused(url: str, error: type[errors.PgWalletError], call: object, *args: object,
            **kwargs: object) -> errors.PgWalletError:
    """Call and expect ``error``, with nothing changed in the database."""
    before = snapshot(url)
    with pytest.raises(error) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    assert snapshot(url) == before
    return caught.value


# ---------------------------------------------------------------- accounts


def test_open_account_defaults(client: Client) -> None:
    card = client.open_account("EUR", "card", name="alice")
    assert (card.currency, card.exponent, card.status, card.balance, card.held) == ("EUR", 2, "active", 0, 0)
    assert not card.allow_negative and not card.collector
    revenue = client.open_account("EUR", "revenue")
    assert revenue.collector and not revenue.allow_negative
    clearing = client.open_system_account("USD", "clearing")
    assert clearing.collector and clearing.allow_negative
    tokens = client.open_account("TOKEN", "user_wallet")
    assert tokens.exponent == 0


def test_open_account_refuses_unknown_currency_and_kind(client: Client, db_url: str) -> None:
    assert refused(db_url, errors.InvalidRequest, client.open_account, "XXX", "card").field == "currency"
    assert refused(db_url, errors.InvalidRequest, client.open_account, "EUR", "piggy").field == "kind"


def test_set_account_status(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    a = ledger.funded(100)
    assert c.set_account_status(a, "frozen").status == "frozen"
    assert c.set_account_status(a, "active").status == "active"
    err = refused(db_url, errors.InvalidStateTransition, c.set_account_status, a, "closed")
    assert err.field == "status"
    empty = ledger.funded(0)
    assert c.set_account_status(empty, "closed").status == "closed"
    refused(db_url, errors.InvalidStateTransition, c.set_account_status, empty, "active")
    refused(db_url, errors.AccountNotFound, c.set_account_status, 10**12, "frozen")


def test_get_account_not_found(client: Client, db_url: str) -> None:
    assert refused(db_url, errors.AccountNotFound, client.get_account, 10**12).field == "account_id"


# ---------------------------------------------------------------- transfer


def test_transfer_happy_path_keeps_entries(ledger: Ledger) -> None:
    c = ledger.client
    a, b = ledger.funded(1000), ledger.funded(0)
    done = c.transfer(a, b, 300, "t1", metadata={"order": 7})
    assert (done.debit_account_id, done.credit_account_id, done.amount, done.currency) == (a, b, 300, "EUR")
    assert not done.replayed and len(done.transfer_ids) == 1
    assert (ledger.balance(a), ledger.balance(b)) == (700, 300)
    [latest, funding] = c.account_history(a)
    assert (latest.amount, latest.previous_balance, latest.new_balance) == (-300, 1000, 700)
    assert latest.account_version == funding.account_version + 1
    assert latest.counterparty_account_id == b and latest.metadata == {"order": 7}


def test_transfer_replay_returns_first_response(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    a, b = ledger.funded(1000), ledger.funded(0)
    first = c.transfer(a, b, 300, "same")
    before = snapshot(db_url)
    again = c.transfer(a, b, 300, "same")
    assert snapshot(db_url) == before
    assert again.replayed and again.transfer_ids == first.transfer_ids and again.created_at == first.created_at
    assert ledger.balance(a) == 700


def test_transfer_replay_with_changed_payload_is_duplicate(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    a, b = ledger.funded(1000), ledger.funded(0)
    c.transfer(a, b, 300, "same")
    err = refused(db_url, errors.DuplicateRequest, c.transfer, a, b, 301, "same")
    assert err.field == "idempotency_key" and err.http_status == 409
    refused(db_url, errors.DuplicateRequest, c.transfer, a, b, 300, "same", metadata={"x": 1})


def test_transfer_errors(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    a, b = ledger.funded(100), ledger.funded(0)
    tokens = c.open_account("TOKEN", "user_wallet").id
    assert refused(db_url, errors.InsufficientFunds, c.transfer, a, b, 101, "k").field == "debit_account_id"
    assert refused(db_url, errors.AccountNotFound, c.transfer, a, 10**12, 1, "k").field == "credit_account_id"
    assert refused(db_url, errors.AccountNotFound, c.transfer, 10**12, a, 1, "k").field == "debit_account_id"
    assert refused(db_url, errors.CurrencyMismatch, c.transfer, a, tokens, 1, "k").http_status == 422
    assert refused(db_url, errors.InvalidRequest, c.transfer, a, a, 1, "k").field == "credit_account_id"
    assert refused(db_url, errors.InvalidRequest, c.transfer, a, b, 0, "k").field == "amount"
    c.set_account_status(b, "frozen")
    assert refused(db_url, errors.AccountFrozen, c.transfer, a, b, 1, "k").field == "credit_account_id"
    c.set_account_status(b, "active")
    c.set_account_status(b, "closed")
    refused(db_url, errors.AccountClosed, c.transfer, a, b, 1, "k")


def test_refused_request_stores_no_key_so_retry_succeeds(ledger: Ledger) -> None:
    c = ledger.client
    a, b = ledger.funded(100), ledger.funded(0)
    with pytest.raises(errors.InsufficientFunds):
        c.transfer(a, b, 150, "retry-me")
    c.fund_account(ledger.world.id, a, 100, "top-up")
    assert not c.transfer(a, b, 150, "retry-me").replayed
    assert ledger.balance(b) == 150


def test_allow_negative_account_may_go_negative(ledger: Ledger) -> None:
    a = ledger.funded(0)
    ledger.client.fund_account(ledger.world.id, a, 500, "mint")
    assert ledger.balance(ledger.world.id) < 0


# ---------------------------------------------------------------- collectors and multi-leg operations


def test_collector_balance_is_the_sum_of_its_slots(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    bar = c.open_account("EUR", "revenue").id
    cards = [ledger.funded(1000) for _ in range(5)]
    for i, card in enumerate(cards):
        c.transfer(card, bar, 100 + i, f"pay-{i}")
    assert ledger.balance(bar) == sum(100 + i for i in range(5))
    assert all(e.slot is not None for e in c.account_history(bar))
    # money leaves a collector only when its whole balance covers it
    refused(db_url, errors.InsufficientFunds, c.transfer, bar, cards[0], 511, "too-much")
    c.transfer(bar, cards[0], 510, "refund-all")
    assert ledger.balance(bar) == 0


def test_single_legs_take_one_slot_and_pass_busy_ones(ledger: Ledger, db_url: str) -> None:
    """One leg with no hold takes post_legs' short path (post_single_leg): into a collector it takes the first
    free slot from a random one on and wraps around past busy ones without waiting; out of a collector that may
    go negative it takes one slot; legs it cannot take (two collectors, money leaving a collector that must stay
    covered) go the general way. Every entry chains its account's balance and version."""
    c = ledger.client
    bar, clearing = c.open_account("EUR", "revenue").id, c.open_system_account("EUR", "clearing").id
    card = ledger.funded(10_000)
    with psycopg.connect(db_url) as other:  # holds every slot of the bar but slot 0
        busy = other.execute("select count(*) from (select 1 from pgwallet.account_slots where account_id = %s "
                             "and slot > 0 for update) x", (bar,)).fetchone()
        assert busy is not None and busy[0] > 0
        paid: list[int] = []
        worker = threading.Thread(target=lambda: paid.extend(c.transfer(card, bar, 10, f"busy-{i}").amount
                                                             for i in range(12)))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive() and paid == [10] * 12, "a payer waited for a busy slot"
    assert [e.slot for e in c.account_history(bar)] == [0] * 12
    c.fund_account(clearing, card, 500, "recharge")   # out of a collector that may go negative: one slot
    c.transfer(bar, card, 100, "refund")              # leaves a covered collector: the general path
    c.fund_account(clearing, bar, 7, "clearing-to-bar")  # two collectors: the general path
    assert (ledger.balance(bar), ledger.balance(clearing), ledger.balance(card)) == (27, -507, 10_000 - 120 + 600)
    assert all(e.slot is not None for e in c.account_history(clearing))
    history = sorted(c.account_history(card), key=lambda e: e.account_version)
    assert [e.account_version for e in history] == list(range(1, len(history) + 1))
    assert all(a.new_balance == b.previous_balance for a, b in itertools.pairwise(history))


def test_post_operation_is_all_or_nothing(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    buyer = ledger.funded(1000)
    seller, fees = ledger.funded(0, kind="merchant"), c.open_account("EUR", "fees").id
    legs = [{"debit_account_id": buyer, "credit_account_id": seller, "amount": 900},
            {"debit_account_id": buyer, "credit_account_id": fees, "amount": 100}]
    op = c.post_operation(legs, "buy-1", kind="purchase")
    assert op.legs == 2 and len(op.transfer_ids) == 2 and op.kind == "purchase"
    assert (ledger.balance(buyer), ledger.balance(seller), ledger.balance(fees)) == (0, 900, 100)
    assert c.post_operation(legs, "buy-1", kind="purchase").replayed
    refused(db_url, errors.DuplicateRequest, c.post_operation, legs[:1], "buy-1", kind="purchase")
    # the second leg cannot be paid: the first is not posted either
    refused(db_url, errors.InsufficientFunds, c.post_operation,
            [{"debit_account_id": seller, "credit_account_id": buyer, "amount": 900},
             {"debit_account_id": fees, "credit_account_id": buyer, "amount": 101}], "refund-1")
    bad = refused(db_url, errors.InvalidRequest, c.post_operation,
                  [{"debit_account_id": buyer, "credit_account_id": seller, "amount": "ten"}], "bad")
    assert bad.field == "legs"


def test_legs_within_one_operation_chain_their_entries(ledger: Ledger) -> None:
    c = ledger.client
    treasury, a, b = ledger.funded(50, kind="pool"), ledger.funded(0), ledger.funded(0)
    c.post_operation([{"debit_account_id": treasury, "credit_account_id": a, "amount": 50},
                      {"debit_account_id": a, "credit_account_id": b, "amount": 50}], "chain")
    [out, into] = c.account_history(a)
    assert (into.previous_balance, into.new_balance, out.previous_balance, out.new_balance) == (0, 50, 50, 0)


# ---------------------------------------------------------------- holds


def test_hold_place_and_capture_in_part(ledger: Ledger) -> None:
    c = ledger.client
    user, performer = ledger.funded(1000), ledger.funded(0, kind="performer")
    hold = c.place_hold(user, performer, 600, "h1", timeout_seconds=60)
    assert hold.status == "open" and hold.expires_at is not None
    account = c.get_account(user)
    assert (account.balance, account.held, account.available) == (1000, 600, 400)
    captured = c.capture_hold(hold.hold_id, "c1", amount=450)
    assert (captured.status, captured.captured_amount, captured.released_amount) == ("captured", 450, 150)
    account = c.get_account(user)
    assert (account.balance, account.held, account.available) == (550, 0, 550)
    assert ledger.balance(performer) == 450
    assert c.capture_hold(hold.hold_id, "c1", amount=450).replayed
    assert c.get_hold(hold.hold_id).status == "captured"


def test_hold_capture_all_by_default_and_void(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    user, performer = ledger.funded(1000), ledger.funded(0, kind="performer")
    h1 = c.place_hold(user, performer, 300, "h1")
    assert c.capture_hold(h1.hold_id, "c1").captured_amount == 300
    h2 = c.place_hold(user, performer, 200, "h2")
    voided = c.void_hold(h2.hold_id, "v2")
    assert (voided.status, voided.released_amount) == ("voided", 200)
    assert c.void_hold(h2.hold_id, "v2").replayed
    assert c.get_account(user).available == 700
    err = refused(db_url, errors.InvalidStateTransition, c.capture_hold, h2.hold_id, "c2")
    assert err.field == "hold_id"
    refused(db_url, errors.InvalidStateTransition, c.void_hold, h1.hold_id, "v1")
    refused(db_url, errors.DuplicateRequest, c.capture_hold, h1.hold_id, "c1", amount=5)


def test_hold_errors(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    user, performer = ledger.funded(100), ledger.funded(0, kind="performer")
    tokens = c.open_account("TOKEN", "performer").id
    revenue = c.open_account("EUR", "revenue").id
    assert refused(db_url, errors.InsufficientFunds, c.place_hold, user, performer, 101, "h").field == "account_id"
    refused(db_url, errors.CurrencyMismatch, c.place_hold, user, tokens, 1, "h")
    refused(db_url, errors.AccountNotFound, c.place_hold, 10**12, performer, 1, "h")
    assert refused(db_url, errors.InvalidRequest, c.place_hold, revenue, user, 1, "h").field == "account_id"
    refused(db_url, errors.HoldNotFound, c.capture_hold, 10**12, "c")
    refused(db_url, errors.HoldNotFound, c.void_hold, 10**12, "v")
    refused(db_url, errors.HoldNotFound, c.get_hold, 10**12)
    hold = c.place_hold(user, performer, 60, "h")
    # the available amount already excludes the hold
    refused(db_url, errors.InsufficientFunds, c.transfer, user, performer, 41, "t")
    assert refused(db_url, errors.InvalidRequest, c.capture_hold, hold.hold_id, "c", amount=61).field == "amount"
    c.set_account_status(user, "frozen")
    refused(db_url, errors.AccountFrozen, c.capture_hold, hold.hold_id, "c")
    assert c.void_hold(hold.hold_id, "v").status == "voided"  # giving money back is allowed when frozen


def test_expired_hold_cannot_be_captured_and_is_swept_never_early(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    user, performer = ledger.funded(100), ledger.funded(0, kind="performer")
    short = c.place_hold(user, performer, 10, "short", timeout_seconds=1)
    long = c.place_hold(user, performer, 20, "long", timeout_seconds=3600)
    assert c.expire_holds() == 0
    time.sleep(1.2)
    refused(db_url, errors.HoldExpired, c.capture_hold, short.hold_id, "c")
    assert c.expire_holds() == 1
    assert c.get_hold(short.hold_id).status == "expired"
    assert c.get_hold(long.hold_id).status == "open"
    assert c.get_account(user).held == 20


# ---------------------------------------------------------------- history, keys


def test_account_history_pages_backwards(ledger: Ledger) -> None:
    c = ledger.client
    a, b = ledger.funded(100), ledger.funded(0)
    for i in range(5):
        c.transfer(a, b, 1, f"p{i}")
    first = c.account_history(a, limit=3)
    rest = c.account_history(a, limit=3, before_entry_id=first[-1].entry_id)
    ids = [e.entry_id for e in first + rest]
    assert len(ids) == 6 and ids == sorted(ids, reverse=True)
    assert [e.new_balance for e in first + rest] == [95, 96, 97, 98, 99, 100]


def test_expired_keys_are_purged_in_batches_and_become_free(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    a, b = ledger.funded(100), ledger.funded(0)
    for i in range(5):
        c.transfer(a, b, 1, f"old-{i}")
    assert c.purge_idempotency_keys() == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update pgwallet.idempotency_keys set expires_at = now() - interval '1 second' "
                     "where key like 'old-%'")
    # an expired key that was not purged yet no longer replays
    assert not c.transfer(a, b, 2, "old-0").replayed
    assert c.purge_idempotency_keys(batch_size=2) == 2
    assert c.purge_idempotency_keys(batch_size=2) == 2
    assert c.purge_idempotency_keys(batch_size=2) == 0
    assert ledger.balance(b) == 7
