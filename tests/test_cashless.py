"""Cashless festival: cards, bar orders and refunds, recharges, drawers, scans, close-out.

Every error code each procedure can raise, replays and replays with a changed payload; the invariants
(ledger and cashless) are checked at teardown by the ``client`` fixture.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from conftest import refused

from pyapp import Client, errors
from pyapp.cashless import Card

_uids = itertools.count(1)


def uid() -> str:
    return f"04A1{next(_uids):08X}"


def items(*lines: tuple[str, int, int]) -> list[dict[str, Any]]:
    return [{"sku": sku, "name": sku.title(), "quantity": q, "unit_price": p} for sku, q, p in lines]


BEER = items(("beer", 2, 450), ("water", 1, 200), ("crisps", 1, 250))  # 13.50


@dataclass(frozen=True)
class Festival:
    client: Client
    bar: str
    revenue: int
    staff: int
    checkpoint: int
    drawer: int

    def card(self, balance: int = 0, **kwargs: Any) -> Card:
        card = self.client.issue_card(uid(), **kwargs)
        if balance:
            self.client.process_stripe_recharge(card.card_id, balance, f"cs_test_{uid()}")
        return self.client.get_card(card.card_id)


@pytest.fixture
def fest(client: Client) -> Festival:
    bar = client.create_bar("main-bar", "Main bar")
    staff = client.create_staff("Sam")
    checkpoint = client.create_checkpoint("North gate")
    return Festival(client, bar.code, bar.revenue_account_id, staff.id, checkpoint.id, checkpoint.drawer_account_id)


# -- cards ---------------------------------------------------------------------------------------


def test_issue_and_show_a_card(fest: Festival) -> None:
    c = fest.client
    card = c.issue_card("04AABBCCDD", holder="Alice", payout_method="stripe_refund")
    assert (card.uid, card.holder, card.status, card.balance, card.currency, card.exponent) == (
        "04AABBCCDD", "Alice", "active", 0, "EUR", 2)
    account = c.get_account(card.account_id)
    assert account.kind == "card" and account.status == "active"
    assert c.get_card(card.card_id) == card


def test_issue_card_errors(fest: Festival, db_url: str) -> None:
    fest.client.issue_card("04TAKEN")
    refused(db_url, errors.CardUidTaken, lambda: fest.client.issue_card("04TAKEN"), "uid")
    refused(db_url, errors.InvalidRequest, lambda: fest.client.issue_card("bad uid"), "uid")
    refused(db_url, errors.InvalidRequest, lambda: fest.client.issue_card("04X", currency="XXX"), "currency")
    refused(db_url, errors.CardNotFound, lambda: fest.client.get_card(10**12), "card_id")


def test_lookup_logs_every_scan_found_unknown_blocked(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card()
    assert c.lookup_card(card.uid, location="bar 1", device="t-7").card_id == card.card_id
    with pytest.raises(errors.CardNotFound) as unknown:
        c.lookup_card("04UNKNOWN", location="gate", device="t-8")
    assert unknown.value.field == "uid" and unknown.value.http_status == 404
    c.set_card_status(card.card_id, "blocked", reason="lost")
    assert c.lookup_card(card.uid).status == "blocked"
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select uid, card_id, status, location, device from pgwallet.card_scans "
                            "order by scanned_at, status").fetchall()
    assert sorted(rows, key=str) == sorted([(card.uid, card.card_id, "found", "bar 1", "t-7"),
                                            ("04UNKNOWN", None, "unknown", "gate", "t-8"),
                                            (card.uid, card.card_id, "blocked", None, None)], key=str)


def test_order_path_writes_no_scan(fest: Festival, db_url: str) -> None:
    card = fest.card(5000)
    fest.client.process_bar_order(card.card_id, BEER, 1350, "no-scan", fest.bar)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select count(*) from pgwallet.card_scans").fetchone() == (0,)


def test_block_refuses_every_debit_and_unblock_restores(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card(5000)
    blocked = c.set_card_status(card.card_id, "blocked", reason="stolen")
    assert (blocked.status, blocked.status_reason) == ("blocked", "stolen")
    assert c.get_account(card.account_id).status == "active"  # the card's status, not the account's
    refused(db_url, errors.CardBlocked, lambda: c.process_bar_order(card.card_id, BEER, 1350, "b1", fest.bar),
            "card_id")
    refused(db_url, errors.CardBlocked, lambda: c.process_checkpoint_recharge(
        card.card_id, 1000, fest.staff, fest.checkpoint, "cash", "b2"), "card_id")
    assert c.set_card_status(card.card_id, "active").status == "active"
    assert c.process_bar_order(card.card_id, BEER, 1350, "b1", fest.bar).card_balance == 3650


def test_a_blocked_card_refuses_debits_through_the_ledger_calls_too(fest: Festival, db_url: str) -> None:
    """transfer, post_operation and place_hold are granted to the application as well: a blocked card's
    account refuses debits there with CARD_BLOCKED (nothing changes), still takes credits, and pays again
    once unblocked. A hold placed before the block is still captured: that money was reserved already."""
    c = fest.client
    card, other = fest.card(5000), fest.card(1000)
    early = c.place_hold(card.account_id, other.account_id, 500, "early-hold")
    c.set_card_status(card.card_id, "blocked", reason="stolen")
    debits = [
        lambda: c.transfer(card.account_id, other.account_id, 100, "t1"),
        lambda: c.post_operation([{"debit_account_id": card.account_id, "credit_account_id": other.account_id,
                                   "amount": 100}], "op1"),
        lambda: c.place_hold(card.account_id, other.account_id, 100, "h1"),
    ]
    for debit in debits:
        refused(db_url, errors.CardBlocked, debit, "debit_account_id" if debit is not debits[2] else "account_id")
    # a payout job's pool is a hold paid out in parts: a blocked card cannot be one either
    refused(db_url, errors.CardBlocked, lambda: c.create_payout_job(
        "from-a-blocked-card", card.account_id, 100, 0, [{"account_id": other.account_id, "share": 1}], "p1"))
    assert c.transfer(other.account_id, card.account_id, 100, "credit").amount == 100
    assert c.capture_hold(early.hold_id, "early-capture").status == "captured"
    assert c.get_card(card.card_id).balance == 5000 + 100 - 500
    c.set_card_status(card.card_id, "active")
    assert c.transfer(card.account_id, other.account_id, 100, "t1").amount == 100
    replaced = c.replace_card(card.card_id, uid(), "replace")  # moves the balance, then refuses debits
    assert c.get_card(replaced.new_card_id).balance == 4500
    refused(db_url, errors.CardBlocked, lambda: c.transfer(card.account_id, other.account_id, 1, "t2"),
            "debit_account_id")


def test_replacing_or_cashing_out_a_blocked_card_moves_its_money(fest: Festival, db_url: str) -> None:
    """The card's own moves of a blocked card (to its replacement, to the payout at close-out) are not refused;
    the cards stay refusing debits afterwards."""
    c = fest.client
    lost, kept = fest.card(3000), fest.card(2000)
    c.set_card_status(lost.card_id, "blocked", reason="lost")
    c.set_card_status(kept.card_id, "blocked", reason="left early")
    moved = c.replace_card(lost.card_id, uid(), "replace-blocked")
    assert moved.moved_amount == 3000 and c.get_card(moved.new_card_id).balance == 3000
    assert c.cash_out_card(kept.card_id, "cash-out-blocked").amount == 2000
    target = c.get_card(moved.new_card_id).account_id
    for card in (lost, kept):
        refused(db_url, errors.CardBlocked,
                lambda card=card: c.transfer(card.account_id, target, 1, f"after-{card.card_id}"), "debit_account_id")


def test_set_card_status_errors(fest: Festival, db_url: str) -> None:
    c = fest.client
    refused(db_url, errors.CardNotFound, lambda: c.set_card_status(10**12, "blocked"), "card_id")
    refused(db_url, errors.InvalidRequest, lambda: c.set_card_status(1, "lost"), "status")
    old = fest.card(100)
    c.replace_card(old.card_id, uid(), "r")
    refused(db_url, errors.InvalidStateTransition, lambda: c.set_card_status(old.card_id, "active"), "card_id")


def test_replace_moves_the_whole_balance_and_blocks_the_old_card(fest: Festival, db_url: str) -> None:
    c = fest.client
    old = fest.card(4200, holder="Bob")
    new_uid = uid()
    done = c.replace_card(old.card_id, new_uid, "replace-1", reason="lost")
    assert (done.moved_amount, done.new_uid, done.replayed) == (4200, new_uid, False)
    new = c.get_card(done.new_card_id)
    assert (new.balance, new.holder, new.status) == (4200, "Bob", "active")
    after = c.get_card(old.card_id)
    assert (after.balance, after.status, after.replaced_by) == (0, "blocked", new.card_id)
    again = c.replace_card(old.card_id, new_uid, "replace-1", reason="lost")
    assert again.replayed and again.new_card_id == done.new_card_id
    refused(db_url, errors.DuplicateRequest, lambda: c.replace_card(old.card_id, uid(), "replace-1"))
    refused(db_url, errors.InvalidStateTransition, lambda: c.replace_card(old.card_id, uid(), "replace-2"), "card_id")
    refused(db_url, errors.CardUidTaken, lambda: c.replace_card(new.card_id, old.uid, "replace-3"), "uid")
    refused(db_url, errors.CardNotFound, lambda: c.replace_card(10**12, uid(), "replace-4"), "card_id")
    history = c.card_history(new.card_id)
    assert [(h.kind, h.amount) for h in history] == [("card_replacement", 4200)]


def test_card_history_newest_first(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card(5000)
    c.process_bar_order(card.card_id, BEER, 1350, "h1", fest.bar)
    c.process_checkpoint_recharge(card.card_id, 1000, fest.staff, fest.checkpoint, "card", "h2")
    history = c.card_history(card.card_id, limit=10)
    assert [(h.kind, h.amount, h.new_balance) for h in history] == [
        ("checkpoint_recharge", 1000, 4650), ("bar_order", -1350, 3650), ("stripe_recharge", 5000, 5000)]
    assert [h.kind for h in c.card_history(card.card_id, limit=1, before_entry_id=history[0].entry_id)] == [
        "bar_order"]
    refused(db_url, errors.CardNotFound, lambda: c.card_history(10**12), "card_id")


# -- bar orders ----------------------------------------------------------------------------------


def test_bar_order_debits_the_card_and_credits_the_bar(fest: Festival) -> None:
    c = fest.client
    card = fest.card(5000)
    order = c.process_bar_order(card.card_id, BEER, 1350, "order-1", fest.bar)
    assert (order.total_amount, order.card_balance, order.items, order.replayed) == (1350, 3650, 3, False)
    revenue = c.get_account(c.create_bar("other", "Other").revenue_account_id)
    assert revenue.collector and revenue.balance == 0
    details = c.get_bar_order(order.order_id)
    assert details.point_of_sale == fest.bar and [(i.sku, i.quantity, i.unit_price) for i in details.items] == [
        ("beer", 2, 450), ("water", 1, 200), ("crisps", 1, 250)]
    assert c.get_account(fest.revenue).balance == 1350


def test_bar_order_replay_and_changed_payload(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card(5000)
    first = c.process_bar_order(card.card_id, BEER, 1350, "order-r", fest.bar)
    again = c.process_bar_order(card.card_id, BEER, 1350, "order-r", fest.bar)
    assert again.replayed and again.order_id == first.order_id and again.created_at == first.created_at
    assert c.get_card(card.card_id).balance == 3650
    other = items(("beer", 1, 450))
    refused(db_url, errors.DuplicateRequest, lambda: c.process_bar_order(card.card_id, other, 450, "order-r",
                                                                         fest.bar), "idempotency_key")


def test_bar_order_errors(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card(1000)
    refused(db_url, errors.InvalidRequest, lambda: c.process_bar_order(card.card_id, BEER, 1351, "e1", fest.bar),
            "total_amount")
    refused(db_url, errors.InvalidRequest, lambda: c.process_bar_order(card.card_id, [], 1, "e1", fest.bar), "items")
    refused(db_url, errors.CardNotFound, lambda: c.process_bar_order(10**12, BEER, 1350, "e1", fest.bar), "card_id")
    refused(db_url, errors.BarNotFound, lambda: c.process_bar_order(card.card_id, BEER, 1350, "e1", "nowhere"),
            "point_of_sale")
    refused(db_url, errors.InsufficientFunds, lambda: c.process_bar_order(card.card_id, BEER, 1350, "e1", fest.bar))
    c.set_card_status(card.card_id, "blocked")
    refused(db_url, errors.CardBlocked, lambda: c.process_bar_order(card.card_id, items(("beer", 1, 450)), 450, "e1",
                                                                    fest.bar), "card_id")


def test_sql_checks_the_items_too(fest: Festival, db_url: str) -> None:
    """The database is the authority: items the Python layer would refuse are refused by SQL as well."""
    card = fest.card(1000)
    bad = ['{"sku": "x"}', '[1]', '[{"sku": "a", "name": "A", "quantity": "2", "unit_price": 1}]',
           '[{"sku": "a", "name": "A", "quantity": 1.5, "unit_price": 1}]',
           '[{"sku": "a", "name": "A", "quantity": 1, "unit_price": 1, "extra": 1}]']
    with psycopg.connect(db_url, autocommit=True) as conn:
        for value in bad:
            with pytest.raises(psycopg.Error) as raised:
                conn.execute("select pgwallet.process_bar_order(%s, %s::jsonb, 1, 'k', %s)",
                             (card.card_id, value, fest.bar))
            assert raised.value.sqlstate == "W0001" and raised.value.diag.column_name == "items", value


# -- refunds -------------------------------------------------------------------------------------


def test_partial_then_full_refund_never_more_than_paid(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card(5000)
    order = c.process_bar_order(card.card_id, BEER, 1350, "to-refund", fest.bar)
    part = c.refund_bar_order(order.order_id, "refund-1", items=[{"sku": "beer", "quantity": 1}])
    assert (part.amount, part.refunded_amount, part.card_id) == (450, 450, card.card_id)
    assert c.refund_bar_order(order.order_id, "refund-1", items=[{"sku": "beer", "quantity": 1}]).replayed
    refused(db_url, errors.DuplicateRequest, lambda: c.refund_bar_order(order.order_id, "refund-1"))
    refused(db_url, errors.InvalidRequest, lambda: c.refund_bar_order(
        order.order_id, "refund-2", items=[{"sku": "beer", "quantity": 2}]), "items")
    refused(db_url, errors.InvalidRequest, lambda: c.refund_bar_order(
        order.order_id, "refund-2", items=[{"sku": "wine", "quantity": 1}]), "items")
    rest = c.refund_bar_order(order.order_id, "refund-2")
    assert (rest.amount, rest.refunded_amount) == (900, 1350)
    assert c.get_card(card.card_id).balance == 5000
    refused(db_url, errors.InvalidStateTransition, lambda: c.refund_bar_order(order.order_id, "refund-3"),
            "order_id")
    refused(db_url, errors.OrderNotFound, lambda: c.refund_bar_order(10**12, "refund-4"), "order_id")
    assert all(i.refunded_quantity == i.quantity for i in c.get_bar_order(order.order_id).items)


def test_refund_goes_to_the_replacement_card(fest: Festival) -> None:
    c = fest.client
    old = fest.card(2000)
    order = c.process_bar_order(old.card_id, BEER, 1350, "before-loss", fest.bar)
    new = c.replace_card(old.card_id, uid(), "lost-it").new_card_id
    refund = c.refund_bar_order(order.order_id, "refund-lost")
    assert refund.card_id == new and c.get_card(new).balance == 2000


# -- recharges -----------------------------------------------------------------------------------


def test_stripe_recharge_and_redelivery(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card()
    first = c.process_stripe_recharge(card.card_id, 2500, "cs_test_a1", metadata={"event": "evt_1"})
    assert (first.method, first.card_balance, first.replayed) == ("stripe", 2500, False)
    again = c.process_stripe_recharge(card.card_id, 2500, "cs_test_a1", metadata={"event": "evt_1"})
    assert again.replayed and again.recharge_id == first.recharge_id
    refused(db_url, errors.DuplicateRequest, lambda: c.process_stripe_recharge(card.card_id, 9999, "cs_test_a1"))
    refused(db_url, errors.CardNotFound, lambda: c.process_stripe_recharge(10**12, 100, "cs_test_a2"), "card_id")
    refused(db_url, errors.InvalidRequest, lambda: c.process_stripe_recharge(card.card_id, 100, "cs test"),
            "stripe_session_id")
    assert c.get_card(card.card_id).balance == 2500


def test_stripe_recharge_of_a_blocked_card_is_credited(fest: Festival) -> None:
    c = fest.client
    card = fest.card()
    c.set_card_status(card.card_id, "blocked")
    assert c.process_stripe_recharge(card.card_id, 700, "cs_blocked").card_balance == 700


def test_checkpoint_recharge_cash_and_card(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card()
    cash = c.process_checkpoint_recharge(card.card_id, 2000, fest.staff, fest.checkpoint, "cash", "cp-1")
    assert (cash.method, cash.card_balance, cash.staff_id, cash.checkpoint_id) == ("cash", 2000, fest.staff,
                                                                                   fest.checkpoint)
    assert c.get_account(fest.drawer).balance == -2000  # minus the cash the drawer should hold
    by_card = c.process_checkpoint_recharge(card.card_id, 500, fest.staff, fest.checkpoint, "card", "cp-2")
    assert by_card.card_balance == 2500 and c.get_account(fest.drawer).balance == -2000
    replay = c.process_checkpoint_recharge(card.card_id, 2000, fest.staff, fest.checkpoint, "cash", "cp-1")
    assert replay.replayed and replay.recharge_id == cash.recharge_id and replay.card_balance == 2000
    refused(db_url, errors.DuplicateRequest, lambda: c.process_checkpoint_recharge(
        card.card_id, 2000, fest.staff, fest.checkpoint, "card", "cp-1"))


def test_checkpoint_recharge_errors(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card()

    def call(**kw: Any) -> Any:
        args = {"card_id": card.card_id, "amount": 1000, "staff_id": fest.staff, "checkpoint_id": fest.checkpoint,
                "payment_method": "cash", "client_request_id": "cp-err", **kw}
        return lambda: c.process_checkpoint_recharge(**args)

    refused(db_url, errors.CardNotFound, call(card_id=10**12), "card_id")
    refused(db_url, errors.StaffNotAuthorized, call(staff_id=10**12), "staff_id")
    c.set_staff_status(fest.staff, "inactive")
    refused(db_url, errors.StaffNotAuthorized, call(), "staff_id")
    c.set_staff_status(fest.staff, "active")
    refused(db_url, errors.CheckpointNotFound, call(checkpoint_id=10**12), "checkpoint_id")
    refused(db_url, errors.InvalidRequest, call(payment_method="cheque"), "payment_method")
    refused(db_url, errors.LimitExceeded, call(amount=99), "amount")  # below 1.00
    refused(db_url, errors.LimitExceeded, call(amount=50_001), "amount")  # above 500.00
    c.process_stripe_recharge(card.card_id, 50_000, "cs_big")  # a Stripe recharge is at most 500.00
    c.process_stripe_recharge(card.card_id, 49_500, "cs_big_2")
    refused(db_url, errors.LimitExceeded, call(amount=501), "amount")  # the card would pass 1,000.00
    assert c.process_checkpoint_recharge(card.card_id, 500, fest.staff, fest.checkpoint, "cash", "cp-ok"
                                         ).card_balance == 100_000
    usd = c.create_checkpoint("USD desk", currency="USD")
    refused(db_url, errors.CurrencyMismatch, call(checkpoint_id=usd.id, amount=100, client_request_id="cp-usd"),
            "checkpoint_id")


def test_limits_live_in_the_settings_table(fest: Festival, db_url: str) -> None:
    card = fest.card()
    with psycopg.connect(db_url) as conn:
        conn.execute("update pgwallet.settings set value = '5000' where name = 'cashless_recharge_min'")
    with pytest.raises(errors.LimitExceeded):
        fest.client.process_checkpoint_recharge(card.card_id, 4999, fest.staff, fest.checkpoint, "cash", "lim")


# -- drawers and close-out -----------------------------------------------------------------------


def test_drawer_close_reconciles_a_shift(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card()
    c.process_checkpoint_recharge(card.card_id, 2000, fest.staff, fest.checkpoint, "cash", "d1")
    c.process_checkpoint_recharge(card.card_id, 1500, fest.staff, fest.checkpoint, "cash", "d2")
    c.process_checkpoint_recharge(card.card_id, 900, fest.staff, fest.checkpoint, "card", "d3")
    closing = c.close_drawer(fest.checkpoint, fest.staff, 3400, "shift-1")
    assert (closing.expected_amount, closing.counted_amount, closing.difference) == (3500, 3400, -100)
    assert c.get_account(fest.drawer).balance == 0
    assert c.close_drawer(fest.checkpoint, fest.staff, 3400, "shift-1").replayed
    refused(db_url, errors.DuplicateRequest, lambda: c.close_drawer(fest.checkpoint, fest.staff, 3500, "shift-1"))
    empty = c.close_drawer(fest.checkpoint, fest.staff, 0, "shift-2")
    assert (empty.expected_amount, empty.difference, empty.operation_id) == (0, 0, None)
    refused(db_url, errors.CheckpointNotFound, lambda: c.close_drawer(10**12, fest.staff, 0, "shift-3"),
            "checkpoint_id")
    refused(db_url, errors.StaffNotAuthorized, lambda: c.close_drawer(fest.checkpoint, 10**12, 0, "shift-3"),
            "staff_id")


def test_cash_out_card_minus_fee(fest: Festival, db_url: str) -> None:
    c = fest.client
    card = fest.card(2000)
    done = c.cash_out_card(card.card_id, "co-1", fee=150)
    assert (done.amount, done.fee, done.payout_method) == (1850, 150, "bank_transfer")
    after = c.get_card(card.card_id)
    assert (after.balance, after.status) == (0, "cashed_out")
    assert c.cash_out_card(card.card_id, "co-1", fee=150).replayed
    refused(db_url, errors.InvalidStateTransition, lambda: c.cash_out_card(card.card_id, "co-2"), "card_id")
    refused(db_url, errors.CardBlocked, lambda: c.process_bar_order(card.card_id, BEER, 1350, "late", fest.bar))
    refused(db_url, errors.CardNotFound, lambda: c.cash_out_card(10**12, "co-3"), "card_id")
    small = fest.card(100)
    assert (c.cash_out_card(small.card_id, "co-4", fee=500).amount, c.get_card(small.card_id).balance) == (0, 0)


def test_close_out_in_batches_pays_every_card_once(fest: Festival) -> None:
    c = fest.client
    cards = [fest.card(100 * (i + 1)) for i in range(7)]
    lost = c.replace_card(cards[0].card_id, uid(), "lost-before-closeout").new_card_id
    c.set_card_status(cards[1].card_id, "blocked")  # a blocked card is still paid out
    assert c.cards_to_cash_out() == 7
    after, paid = 0, 0
    while (batch := c.cash_out_cards(after, batch_size=3)).cards:
        after, paid = batch.last_card_id, paid + batch.amount
    assert paid == sum(100 * (i + 1) for i in range(7)) and c.cards_to_cash_out() == 0
    assert all(c.get_card(x.card_id).balance == 0 for x in cards) and c.get_card(lost).status == "cashed_out"
    assert c.cash_out_cards(0).cards == 0  # a second run pays nothing


def test_roles_terminals_run_as_app_setup_is_staff_work(fest: Festival, db_url: str) -> None:
    card = fest.card(5000)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("set role pgwallet_app")
        conn.execute("select pgwallet.process_bar_order(%s, %s::jsonb, 450, 'as-app', %s)",
                     (card.card_id, '[{"sku": "beer", "name": "Beer", "quantity": 1, "unit_price": 450}]', fest.bar))
        conn.execute("select pgwallet.lookup_card(%s)", (card.uid,))
        for staff_only in ("select pgwallet.issue_card('04APP')", "select pgwallet.cash_out_card(1, 'k')",
                           "select pgwallet.set_card_status(1, 'blocked')", "select * from pgwallet.cards",
                           "update pgwallet.cards set status = 'active'", "select pgwallet.cash_out_cards(0)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(staff_only)
        conn.execute("set role pgwallet_staff")
        assert conn.execute("select pgwallet.issue_card('04STAFF') ->> 'uid'").fetchone() == ("04STAFF",)
    assert fest.client.get_card(card.card_id).balance == 4550


def test_a_request_id_is_never_reused_after_its_key_expired(fest: Festival, db_url: str) -> None:
    """The idempotency keys expire (24 h); the domain tables' own unique request ids still refuse a second
    order, recharge, refund or drawer closing under an old id, and a late Stripe redelivery still replays."""
    c = fest.client
    card = fest.card(10_000)
    order = c.process_bar_order(card.card_id, BEER, 1350, "old-order", fest.bar)
    c.process_checkpoint_recharge(card.card_id, 1000, fest.staff, fest.checkpoint, "cash", "old-recharge")
    c.refund_bar_order(order.order_id, "old-refund", items=[{"sku": "water", "quantity": 1}])
    c.close_drawer(fest.checkpoint, fest.staff, 1000, "old-drawer")
    stripe = c.process_stripe_recharge(card.card_id, 500, "cs_old")
    with psycopg.connect(db_url) as conn:
        conn.execute("update pgwallet.idempotency_keys set expires_at = now() - interval '1 second'")
    refused(db_url, errors.DuplicateRequest,
            lambda: c.process_bar_order(card.card_id, BEER, 1350, "old-order", fest.bar), "client_request_id")
    refused(db_url, errors.DuplicateRequest, lambda: c.process_checkpoint_recharge(
        card.card_id, 1000, fest.staff, fest.checkpoint, "cash", "old-recharge"), "client_request_id")
    refused(db_url, errors.DuplicateRequest, lambda: c.refund_bar_order(order.order_id, "old-refund"),
            "client_request_id")
    refused(db_url, errors.DuplicateRequest, lambda: c.close_drawer(fest.checkpoint, fest.staff, 0, "old-drawer"),
            "client_request_id")
    late = c.process_stripe_recharge(card.card_id, 500, "cs_old")
    assert late.replayed and late.recharge_id == stripe.recharge_id
