"""The trust boundary: each caller tier can do what its role allows and nothing more.

Every test here connects as a LOGIN role granted exactly one tier (``tier_client``), and each numbered
attack of the trust-boundary issue is replayed against it: refused with a typed error, nothing changed,
the invariants empty and the other domains' sweeps still running afterwards.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from conftest import Ledger, refused
from hypothesis import given, settings
from hypothesis import strategies as st

from pyapp import AsyncClient, Client, errors
from pyapp.roles import TIERS, privilege_matrix

README = Path(__file__).resolve().parent.parent / "README.md"
MATRIX_START, MATRIX_END = "<!-- privilege-matrix -->", "<!-- /privilege-matrix -->"


def login_url(db_url: str, tier: str) -> str:
    """A LOGIN role (cluster-wide, made once) granted only ``tier``, and the URL that logs in as it."""
    role = f"pgwallet_test_{tier.removeprefix('pgwallet_')}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"do $$ begin if not exists (select 1 from pg_roles where rolname = '{role}') then "
                     f"create role {role} login password 'test' in role {tier}; end if; end $$")
    parts = urlsplit(db_url)
    return urlunsplit(parts._replace(netloc=f"{role}:test@{parts.hostname}:{parts.port}"))


@pytest.fixture
def tier_client(db_url: str) -> Iterator[Callable[[str], Client]]:
    """``tier_client('pgwallet_app')``: a client that logs in with only that tier."""
    opened: list[Client] = []

    def make(tier: str) -> Client:
        client = Client(login_url(db_url, tier), max_size=2)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def sweeps_run(client: Client) -> None:
    """Every domain's sweep still runs to the end: nothing wedged."""
    client.expire_holds()
    client.expire_stale_queue_items()
    assert client.check_invariants() == []


# -- the matrix --------------------------------------------------------------------------------------


def test_the_readme_matrix_is_the_databases_grants(db_url: str) -> None:
    """Generated from pg_proc: a function granted to a tier the README does not name (or not granted where
    it does) fails here. Regenerate the README's block with `pgwallet roles`."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        generated = privilege_matrix(conn)
    text = README.read_text(encoding="utf-8")
    block = text[text.index(MATRIX_START) + len(MATRIX_START):text.index(MATRIX_END)].strip()
    assert block == generated, "README's privilege matrix is stale: paste the output of `pgwallet roles`"


def test_every_granted_function_is_a_definer_and_every_internal_one_is_granted_to_nobody(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "select p.proname, p.prosecdef, bool_or(has_function_privilege(t, p.oid, 'execute')) "
            "from pg_proc p cross join unnest(%s::text[]) t "
            "where p.pronamespace = 'pgwallet'::regnamespace group by p.proname, p.prosecdef", (list(TIERS),),
        ).fetchall()
        tiers = {r for (r,) in conn.execute("select rolname from pg_roles where rolname like 'pgwallet\\_%' "
                                             "and not rolcanlogin and rolname <> 'pgwallet_owner'")}
    assert tiers == set(TIERS)
    granted = {name for name, _, allowed in rows if allowed}
    assert {name for name, definer, allowed in rows if allowed and not definer} == set()
    # the doors money moves through, and the internal bodies behind them, are where the matrix says
    assert {"user_transfer", "open_account", "process_bar_order", "process_stripe_recharge", "transfer",
            "fund_account", "open_system_account", "process_payout_batch"} <= granted
    assert not granted & {"post_legs", "post_single_leg", "create_account", "hold_funds", "release_hold",
                          "transfer_request", "start_payout_job", "add_job", "cash_out", "capture_hold_split",
                          "pay_hold_parts", "place_parts_hold", "claim_idempotency_key"}


@pytest.mark.parametrize(("tier", "call", "allowed"), [
    ("pgwallet_app", "select pgwallet.transfer(1, 2, 1, 'k')", False),
    ("pgwallet_app", "select pgwallet.open_system_account('EUR', 'system')", False),
    ("pgwallet_app", "select pgwallet.process_stripe_recharge(1, 1, 'cs_1')", False),
    ("pgwallet_app", "select pgwallet.process_checkpoint_recharge(1, 1, 1, 1, 'cash', 'k')", False),
    ("pgwallet_app", "select pgwallet.create_payout_job('c', 1, 1, 0, '[]', 'k')", False),
    ("pgwallet_webhook", "select pgwallet.process_bar_order(1, '[]', 1, 'k', 'bar')", False),
    ("pgwallet_worker", "select pgwallet.create_payout_job('c', 1, 1, 0, '[]', 'k')", False),
    ("pgwallet_staff", "select pgwallet.fund_account(1, 2, 1, 'k')", False),
    ("pgwallet_staff", "select pgwallet.set_rate_limit('create_investment', 1, 1)", False),
    ("pgwallet_readonly", "select pgwallet.user_transfer('u', 1, 2, 1, 'k')", False),
    ("pgwallet_staff", "select pgwallet.process_payout_batch(1)", True),  # staff run workers
])
def test_a_tier_calls_only_what_it_is_granted(db_url: str, tier: str, call: str, allowed: bool) -> None:
    with psycopg.connect(login_url(db_url, tier), autocommit=True) as conn:
        if allowed:
            with pytest.raises(psycopg.Error) as raised:  # past the privilege check: a rule of the function
                conn.execute(call)
            assert raised.value.sqlstate != "42501"
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(call)


def test_a_permission_error_is_a_typed_403_naming_the_function(ledger: Ledger, tier_client: Any,
                                                               db_url: str) -> None:
    app = tier_client("pgwallet_app")
    a, b = ledger.funded(100), ledger.funded(0)
    error = refused(db_url, errors.Forbidden, lambda: app.transfer(a, b, 10, "k"))
    assert error.http_status == 403 and "function transfer" in (error.detail or "")


def test_the_async_client_maps_a_permission_error_the_same_way(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100), ledger.funded(0)

    async def call() -> None:
        async with AsyncClient(login_url(db_url, "pgwallet_app"), max_size=1) as app:
            await app.transfer(a, b, 10, "k")

    error = refused(db_url, errors.Forbidden, lambda: asyncio.run(call()))
    assert error.http_status == 403 and "function transfer" in (error.detail or "")


# -- 1. money from nothing ---------------------------------------------------------------------------


def test_the_app_tier_cannot_open_an_account_that_mints(tier_client: Any, db_url: str) -> None:
    app = tier_client("pgwallet_app")
    for kind in ("system", "clearing"):
        refused(db_url, errors.InvalidRequest, lambda k=kind: app.open_account("EUR", k), "kind")
    refused(db_url, errors.Forbidden, lambda: app.open_system_account("EUR", "user_wallet", allow_negative=True))
    # raw SQL cannot pass allow_negative either: the argument does not exist
    with psycopg.connect(login_url(db_url, "pgwallet_app"), autocommit=True) as conn, \
            pytest.raises(psycopg.errors.UndefinedFunction):
        conn.execute("select pgwallet.open_account('EUR', 'user_wallet', 'x', true, false, '{}', 'u', true)")
    opened = app.open_account("EUR", "user_wallet", owner="alice")
    assert not opened.allow_negative


def test_staff_cannot_move_money_out_of_an_account_that_may_go_negative(ledger: Ledger, tier_client: Any,
                                                                       db_url: str) -> None:
    staff = tier_client("pgwallet_staff")
    target = ledger.funded(0)
    world = ledger.world.id
    refused(db_url, errors.Forbidden, lambda: staff.transfer(world, target, 10**12, "mint"), "debit_account_id")
    refused(db_url, errors.Forbidden, lambda: staff.post_operation(
        [{"debit_account_id": world, "credit_account_id": target, "amount": 5}], "mint-op"), "debit_account_id")
    refused(db_url, errors.Forbidden, lambda: staff.place_hold(world, target, 5, "mint-hold"), "account_id")
    pool = ledger.funded(0, kind="pool", allow_negative=True)
    refused(db_url, errors.Forbidden, lambda: staff.create_payout_job(
        "ch-1", pool, 10**9, 0, [{"account_id": target, "share": 1}], "mint-payout"), "pool_account_id")
    admin = tier_client("pgwallet_admin")
    assert admin.fund_account(world, target, 10, "funding").amount == 10
    assert ledger.balance(target) == 10


def test_stripe_recharges_are_the_webhook_tiers_and_capped(client: Client, tier_client: Any,
                                                         db_url: str) -> None:
    card = client.issue_card("04TRUST01")
    refused(db_url, errors.Forbidden,
            lambda: tier_client("pgwallet_app").process_stripe_recharge(card.card_id, 1000, "cs_app"))
    webhook = tier_client("pgwallet_webhook")
    refused(db_url, errors.LimitExceeded, lambda: webhook.process_stripe_recharge(card.card_id, 10**13, "cs_big"),
            "amount")
    assert webhook.process_stripe_recharge(card.card_id, 50000, "cs_ok").amount == 50000
    webhook.process_stripe_recharge(card.card_id, 50000, "cs_ok2")
    # the card's balance cap (1000.00) holds on the Stripe path too
    refused(db_url, errors.LimitExceeded, lambda: webhook.process_stripe_recharge(card.card_id, 100, "cs_over"),
            "amount")


# -- 2. a domain guard that trusted a session setting ------------------------------------------------


def queue_item(client: Client, owner: str = "fan") -> tuple[int, int, int]:
    """A performer's queue and one CREATED item of 100 tokens; returns (item, hold, user)."""
    mint = client.open_system_account("TOKEN", "system").id
    fees = client.open_account("TOKEN", "fees").id
    performer = client.open_account("TOKEN", "performer", owner="star").id
    user = client.open_account("TOKEN", "user_wallet", owner=owner).id
    client.fund_account(mint, user, 1000, f"fund-{uuid.uuid4()}")
    client.configure_performer_queue(performer, fees, start_timeout_seconds=1)
    item = client.create_queue_item(performer, user, 100, "song", f"item-{uuid.uuid4()}", acting_user=owner)
    return item.item_id, item.hold_id, user


def test_no_caller_settles_a_queue_escrow_whatever_it_sets(client: Client, tier_client: Any,
                                                           db_url: str) -> None:
    item, hold, _ = queue_item(client)
    app, staff = tier_client("pgwallet_app"), tier_client("pgwallet_staff")
    with psycopg.connect(login_url(db_url, "pgwallet_staff"), autocommit=True) as conn:
        conn.execute("select set_config('pgwallet.queue_settling', %s, false)", (str(item),))
        for call in (f"select pgwallet.void_hold({hold}, 'v')", f"select pgwallet.capture_hold({hold}, 'c')"):
            with pytest.raises(psycopg.Error) as raised:
                conn.execute(call)
            assert raised.value.sqlstate == "W0011"  # INVALID_STATE_TRANSITION
    refused(db_url, errors.InvalidStateTransition, lambda: staff.void_hold(hold, "v2"), "hold_id")
    refused(db_url, errors.InvalidStateTransition, lambda: app.user_void_hold("fan", hold, "v3"), "hold_id")
    refused(db_url, errors.InvalidStateTransition, lambda: app.user_capture_hold("star", hold, "c3"), "hold_id")
    # the item is still the queue's to settle, and the sweep still runs
    assert client.abandon_item(item, "left", "abandon").status == "ABANDONED"
    sweeps_run(client)


# -- 3. internal keys and namespaces -----------------------------------------------------------------


def test_squatted_keys_and_namespaces_jam_nothing(client: Client, tier_client: Any, db_url: str) -> None:
    staff = tier_client("pgwallet_staff")
    item, _, user = queue_item(client)
    # the keys the queue used to take in the public scopes are nobody's now: squatting them changes nothing
    other = client.open_account("TOKEN", "performer").id
    for n in range(item, item + 3):
        staff.place_hold(user, other, 1, f"queue_item/{n}/hold")
        staff.void_hold(staff.place_hold(user, other, 1, f"squat-{n}").hold_id, f"queue_item/{n}/void")
    assert client.refund_item(item, "refund").status == "REFUNDED"
    # a payout job in the dividends' namespace, or a job of a domain's kind, is refused
    pool = client.open_account("TOKEN", "pool").id
    refused(db_url, errors.InvalidRequest, lambda: staff.create_payout_job(
        "dividend:1", pool, 1, 0, [{"account_id": user, "share": 1}], "squat-dividend"), "challenge_id")
    for kind in ("investment_execution", "dividend"):
        refused(db_url, errors.InvalidRequest,
                lambda k=kind: staff.enqueue_job(k, {"investment_id": 1}, f"investment:{k}"), "kind")
    refused(db_url, errors.InvalidRequest, lambda: staff.cash_out_card(1, "closeout:1:0"), "client_request_id")
    refused(db_url, errors.InvalidRequest, lambda: client.create_queue_item(
        other, user, 1, "x", "tip_grid/k", acting_user="fan"), "idempotency_key")
    sweeps_run(client)


# -- 4. reserved metadata, 5. forged kinds -----------------------------------------------------------


@pytest.mark.parametrize("key", ["queue_item_id", "card_id", "payout_job_id", "investment_id", "client_request_id"])
def test_reserved_metadata_keys_are_refused(ledger: Ledger, tier_client: Any, db_url: str, key: str) -> None:
    app, staff = tier_client("pgwallet_app"), tier_client("pgwallet_staff")
    mine = ledger.funded(100, kind="user_wallet", owner="alice")
    other = ledger.funded(0)
    forged = {key: 424242}
    refused(db_url, errors.InvalidRequest,
            lambda: app.user_place_hold("alice", mine, other, 1, "k1", 1, forged), "metadata")
    refused(db_url, errors.InvalidRequest, lambda: app.user_transfer("alice", mine, other, 1, "k2", forged),
            "metadata")
    refused(db_url, errors.InvalidRequest, lambda: staff.place_hold(other, mine, 1, "k3", 1, forged), "metadata")
    refused(db_url, errors.InvalidRequest, lambda: app.open_account("EUR", "user_wallet", metadata=forged),
            "metadata")
    ledger.client.expire_holds()


@pytest.mark.parametrize("kind", ["investment", "payout", "bar_order", "hold_capture", "funding", "transfer"])
def test_domain_transfer_kinds_cannot_be_forged(ledger: Ledger, tier_client: Any, db_url: str, kind: str) -> None:
    staff = tier_client("pgwallet_staff")
    a, b = ledger.funded(100), ledger.funded(0)
    refused(db_url, errors.InvalidRequest, lambda: staff.post_operation(
        [{"debit_account_id": a, "credit_account_id": b, "amount": 1}], "forge", kind), "kind")
    assert staff.post_operation([{"debit_account_id": a, "credit_account_id": b, "amount": 1}], "ok",
                                "adjustment").kind == "adjustment"
    assert ledger.client.check_invariants() == []


# -- 6. overflow -------------------------------------------------------------------------------------


def test_a_collector_never_overflows_and_check_always_runs(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    with psycopg.connect(db_url, autocommit=True) as conn:  # an admin raises the bound as far as it goes
        conn.execute("update pgwallet.settings set value = '9223372036854775807' where name = 'movement_max'")
    collector = c.open_account("EUR", "revenue").id
    huge = 2**63 - 1
    refused(db_url, errors.InvalidRequest, lambda: c.fund_account(ledger.world.id, collector, huge, "o1"), "amount")
    share = huge // 64
    for n in range(3):  # each may land in another slot: the sum of the slots stays within bigint
        try:
            c.fund_account(ledger.world.id, collector, share, f"fill-{n}")
        except errors.InvalidRequest as exc:
            assert exc.field == "amount"
    account = c.get_account(collector)
    assert 0 < account.balance <= huge
    assert c.check_invariants() == []


def test_one_movement_is_bounded(ledger: Ledger, tier_client: Any, db_url: str) -> None:
    app = tier_client("pgwallet_app")
    mine, other = ledger.funded(10, kind="user_wallet", owner="alice"), ledger.funded(0)
    error = refused(db_url, errors.InvalidRequest,
                    lambda: app.user_transfer("alice", mine, other, 10**14 + 1, "big"), "amount")
    assert "movement_max" in (error.detail or "")


# -- 7. stranded money -------------------------------------------------------------------------------


def test_money_that_reaches_a_cashed_out_card_is_paid_by_the_next_close_out(client: Client) -> None:
    bar = client.create_bar("trust-bar", "Bar")
    card = client.issue_card("04TRUST77")
    client.process_stripe_recharge(card.card_id, 2000, "cs_trust")
    order = client.process_bar_order(card.card_id, [{"sku": "b", "name": "beer", "quantity": 1, "unit_price": 500}],
                                     500, "o-1", bar.code)
    first = client.cash_out_cards()
    assert (first.cards, first.amount) == (1, 1500)
    client.refund_bar_order(order.order_id, "refund-late")
    assert client.get_card(card.card_id).balance == 500
    assert client.cards_to_cash_out() == 1
    second = client.cash_out_cards()
    assert (second.cards, second.amount, second.fee) == (1, 500, 0)
    assert client.get_card(card.card_id).balance == 0 and client.cards_to_cash_out() == 0
    assert client.cash_out_cards().cards == 0  # a rerun pays nothing twice


def test_a_hold_released_after_a_replacement_is_paid_by_the_close_out(client: Client, tier_client: Any) -> None:
    staff = tier_client("pgwallet_staff")
    card = client.issue_card("04TRUST88")
    client.process_stripe_recharge(card.card_id, 3000, "cs_trust_88")
    shop = client.open_account("EUR", "merchant").id
    hold = staff.place_hold(card.account_id, shop, 1000, "card-hold")
    replaced = client.replace_card(card.card_id, "04TRUST89", "replace-88")
    assert replaced.moved_amount == 2000  # what was held stays with the hold
    staff.void_hold(hold.hold_id, "release")
    assert client.get_card(card.card_id).balance == 1000  # back on the replaced card...
    assert client.cards_to_cash_out() == 2  # ...which the close-out now counts, with its replacement
    paid = client.cash_out_cards()
    assert (paid.cards, paid.amount) == (2, 3000)
    assert client.get_card(card.card_id).balance == 0 and client.cards_to_cash_out() == 0


def test_staff_rate_limits_count_a_staff_member_not_a_name(client: Client, tier_client: Any, db_url: str) -> None:
    staff = tier_client("pgwallet_staff")
    ops = client.create_staff("ops").id
    for n in range(11):  # eleven invented identities: none is a staff member
        refused(db_url, errors.StaffNotAuthorized,
                lambda n=n: staff.create_investment_product(f"fund {n}", "EUR", 10_000 + n, f"p-{n}"), "staff_id")
    for n in range(10):
        staff.create_investment_product(f"fund {n}", "EUR", ops, f"ok-{n}")
    refused(db_url, errors.RateLimited, lambda: staff.create_investment_product("fund 10", "EUR", ops, "ok-10"))
    client.set_staff_status(ops, "inactive")
    refused(db_url, errors.StaffNotAuthorized, lambda: staff.set_feature_flag("investment_module_enabled", False, ops),
            "staff_id")


# -- 8. whose money it is ----------------------------------------------------------------------------


def test_an_end_user_debits_only_their_own_accounts(ledger: Ledger, tier_client: Any, db_url: str) -> None:
    app = tier_client("pgwallet_app")
    alice = ledger.funded(100, kind="user_wallet", owner="alice")
    bob = ledger.funded(100, kind="user_wallet", owner="bob")
    bar = ledger.funded(100, kind="merchant")
    for victim in (bob, bar):
        refused(db_url, errors.Forbidden, lambda v=victim: app.user_transfer("alice", v, alice, 10, f"t{v}"),
                "debit_account_id")
        refused(db_url, errors.Forbidden, lambda v=victim: app.user_place_hold("alice", v, alice, 10, f"h{v}"),
                "account_id")
    assert app.user_transfer("alice", alice, bob, 10, "gift").amount == 10
    hold = app.user_place_hold("alice", alice, bob, 20, "escrow")
    refused(db_url, errors.Forbidden, lambda: app.user_void_hold("mallory", hold.hold_id, "v"), "hold_id")
    assert app.user_capture_hold("bob", hold.hold_id, "c").status == "captured"  # the payee captures
    assert (ledger.balance(alice), ledger.balance(bob)) == (70, 130)


def test_queue_intake_and_purchases_name_the_acting_user(client: Client, tier_client: Any, db_url: str) -> None:
    app = tier_client("pgwallet_app")
    item, _, user = queue_item(client, owner="fan")
    performer = client.get_queue_item(item).performer_id
    refused(db_url, errors.Forbidden, lambda: app.create_queue_item(performer, user, 10, "x", "q1",
                                                                     acting_user="mallory"), "user_id")
    menu = client.create_tip_menu_item(performer, "wave", 5)
    refused(db_url, errors.Forbidden, lambda: app.purchase_tip_grid_item(
        user, performer, menu.tip_menu_item_id, idempotency_key="p1", acting_user="mallory"), "user_id")
    assert app.purchase_tip_grid_item(user, performer, menu.tip_menu_item_id, idempotency_key="p2",
                                      acting_user="fan").status == "SUCCESS"


# -- sweeps skip a failing row -----------------------------------------------------------------------


def test_expire_holds_skips_a_hold_it_cannot_release(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    a, b = ledger.funded(100), ledger.funded(0)
    holds = [c.place_hold(a, b, 10, f"h{n}", 1).hold_id for n in range(3)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update pgwallet.holds set expires_at = now() - interval '1 second'")
        conn.execute(f"""create function pgwallet.test_refuse() returns trigger language plpgsql as $$
                         begin if old.id = {holds[1]} then raise exception 'refused'; end if; return new; end $$""")
        conn.execute("create trigger test_refuse before update on pgwallet.holds for each row "
                     "execute function pgwallet.test_refuse()")
    assert c.expire_holds() == 2
    assert [c.get_hold(h).status for h in holds] == ["expired", "open", "expired"]
    assert c.check_invariants() == []


# -- no creation of money by any sequence of app calls -----------------------------------------------

APP_CALLS = st.lists(st.tuples(
    st.sampled_from(["user_transfer", "user_place_hold", "user_capture_hold", "user_void_hold", "open_account",
                     "bar_order"]),
    st.sampled_from(["alice", "bob", "mallory"]),
    st.integers(min_value=0, max_value=7),  # an account index (the world and the bar revenue included)
    st.integers(min_value=0, max_value=7),
    st.one_of(st.integers(min_value=-5, max_value=10**15), st.just(2**63 - 1)),
    st.sampled_from(["system", "clearing", "user_wallet", "card", "revenue"]),
), min_size=1, max_size=12)


@settings(max_examples=15)
@given(calls=APP_CALLS)
def test_no_sequence_of_app_calls_creates_money(ledger: Ledger, tier_client: Any, db_url: str,
                                                calls: list[tuple[str, str, int, int, int, str]]) -> None:
    c = ledger.client
    suffix = uuid.uuid4().hex[:8]
    bar = c.create_bar(f"bar-{suffix}", "Bar")
    card = c.issue_card(f"04{suffix}")
    c.fund_account(ledger.world.id, card.account_id, 1000, f"card-{suffix}")
    accounts = [ledger.world.id, bar.revenue_account_id, card.account_id,
                ledger.funded(100, kind="user_wallet", owner="alice"),
                ledger.funded(100, kind="user_wallet", owner="bob"), ledger.funded(100, kind="merchant")]
    app = tier_client("pgwallet_app")
    holds: list[int] = []

    def sources() -> int:  # what the accounts that may go negative hold: money enters only through them
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute("select coalesce(sum(balance), 0) from pgwallet.account_balances "
                               "where allow_negative").fetchone()
        assert row is not None
        return int(row[0])

    before = sources()
    for n, (call, user, i, j, amount, kind) in enumerate(calls):
        debit, credit = accounts[i % len(accounts)], accounts[j % len(accounts)]
        key = f"{suffix}-{n}"
        try:
            if call == "user_transfer":
                app.user_transfer(user, debit, credit, amount, key)
            elif call == "user_place_hold":
                holds.append(app.user_place_hold(user, debit, credit, amount, key).hold_id)
            elif call in ("user_capture_hold", "user_void_hold") and holds:
                getattr(app, call)(user, holds[i % len(holds)], key)
            elif call == "open_account":
                accounts.append(app.open_account("EUR", kind, owner=user).id)
            elif call == "bar_order":
                app.process_bar_order(card.card_id, [{"sku": "x", "name": "x", "quantity": 1, "unit_price": amount}],
                                      amount, key, bar.code)
        except errors.PgWalletError as exc:
            assert exc.code != "SERVER_ERROR", exc
    assert sources() == before
    assert c.check_invariants() == []


def test_readme_names_every_tier() -> None:
    text = README.read_text(encoding="utf-8")
    for tier in TIERS:
        assert re.search(rf"`{tier}`", text), tier


def test_only_staff_pause_or_resume_a_payout_job(ledger: Ledger, tier_client: Any, db_url: str) -> None:
    pool = ledger.funded(1000, kind="pool")
    winner = ledger.funded(0, kind="user_wallet")
    job = ledger.client.create_payout_job("tiers", pool, 100, 0, [{"account_id": winner, "share": 1}], "k").job_id
    for tier in ("pgwallet_app", "pgwallet_webhook", "pgwallet_worker", "pgwallet_readonly"):
        caller = tier_client(tier)
        refused(db_url, errors.Forbidden, lambda caller=caller: caller.pause_payout_job(job))
        ledger.client.pause_payout_job(job)
        refused(db_url, errors.Forbidden, lambda caller=caller: caller.resume_payout_job(job))
        ledger.client.resume_payout_job(job)
    staff = tier_client("pgwallet_staff")
    assert staff.pause_payout_job(job).status == "paused" and staff.resume_payout_job(job).status == "queued"
