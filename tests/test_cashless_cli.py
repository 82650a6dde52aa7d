"""Cashless commands through click's CliRunner, and ``pgwallet recharge`` as a real process.

What a command changed is checked through the client, not only its output; refusals leave every table as
it was (``refused`` from test_cli) and print one ``error: CODE: ...`` line.
"""

from __future__ import annotations

import json

import psycopg
from test_cli import ok, process, refused, run

from pyapp import Client


def world(client: Client) -> dict[str, int]:
    card = client.issue_card("04CLI001", holder="Alice")
    client.process_stripe_recharge(card.card_id, 1000, "cs_cli")
    staff = client.create_staff("Sam")
    checkpoint = client.create_checkpoint("North gate")
    return {"card": card.card_id, "staff": staff.id, "checkpoint": checkpoint.id}


def test_card_commands(client: Client, db_url: str) -> None:
    out = ok(db_url, "card", "issue", "04CLI777", "--holder", "Bob", "--json")
    card = json.loads(out.stdout)
    assert card["uid"] == "04CLI777" and card["holder"] == "Bob"
    assert "balance 0.00 EUR" in ok(db_url, "card", "show", "04CLI777").stdout
    assert "blocked (lost)" in ok(db_url, "card", "block", str(card["card_id"]), "--reason", "lost").stdout
    assert client.get_card(card["card_id"]).status == "blocked"
    assert ": active" in ok(db_url, "card", "unblock", "uid:04CLI777").stdout
    client.process_stripe_recharge(card["card_id"], 1234, "cs_cli_2")
    replaced = ok(db_url, "card", "replace", "04CLI777", "04CLI778", "--yes", "--request-id", "rep-1").stdout
    assert "moved 12.34 EUR" in replaced and "uid 04CLI778" in replaced
    assert client.get_card(card["card_id"]).replaced_by is not None
    again = ok(db_url, "card", "replace", "04CLI777", "04CLI778", "--yes", "--request-id", "rep-1").stdout
    assert again.startswith("replayed: moved 12.34 EUR")
    history = ok(db_url, "card", "history", "04CLI778").stdout
    assert "card_replacement" in history and "12.34" in history
    assert len(json.loads(ok(db_url, "card", "history", "04CLI777", "--json").stdout)) == 2
    refused(db_url, "CARD_NOT_FOUND", "card", "show", "999999")
    unknown = run(db_url, "card", "show", "04NOPE")  # refused, but the scan of an unknown uid is logged
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: CARD_NOT_FOUND: ")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select status, location from pgwallet.card_scans where uid = '04NOPE'").fetchall() == [
            ("unknown", "cli")]
    refused(db_url, "CARD_UID_TAKEN", "card", "issue", "04CLI777")


def test_recharge_prints_the_new_balance_and_replays_with_the_same_request_id(client: Client, db_url: str) -> None:
    w = world(client)
    args = ["recharge", "04CLI001", "20.00", "--method", "cash", "--staff", str(w["staff"]), "--checkpoint",
            str(w["checkpoint"]), "--request-id", "desk-1", "--yes"]
    first = ok(db_url, *args).stdout
    assert "recharged 20.00 EUR by cash onto card" in first and "new balance 30.00 EUR" in first
    again = ok(db_url, *args).stdout
    assert again.startswith("replayed 20.00 EUR") and "new balance 30.00 EUR" in again
    assert client.get_card(w["card"]).balance == 3000
    as_json = json.loads(ok(db_url, "recharge", str(w["card"]), "5", "--method", "card", "--staff", str(w["staff"]),
                            "--checkpoint", str(w["checkpoint"]), "--json").stdout)
    assert as_json["recharge"]["card_balance"] == 3500 and as_json["request_id"]
    # refusals name the card by id: a lookup by uid writes the scan log, which is what it is for
    refused(db_url, "LIMIT_EXCEEDED", "recharge", str(w["card"]), "600", "--method", "cash", "--staff",
            str(w["staff"]), "--checkpoint", str(w["checkpoint"]), "--yes")
    refused(db_url, "INVALID_REQUEST", "recharge", str(w["card"]), "1.005", "--method", "cash", "--staff",
            str(w["staff"]), "--checkpoint", str(w["checkpoint"]), "--yes")
    refused(db_url, "STAFF_NOT_AUTHORIZED", "recharge", str(w["card"]), "5", "--method", "cash", "--staff", "999999",
            "--checkpoint", str(w["checkpoint"]), "--yes")


def test_recharge_as_a_real_process(client: Client, db_url: str) -> None:
    w = world(client)
    args = ["recharge", "04CLI001", "12.50", "--method", "card", "--staff", str(w["staff"]), "--checkpoint",
            str(w["checkpoint"]), "--request-id", "proc-1", "--json"]
    done = process(db_url, *args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recharge"]["card_balance"] == 2250
    again = process(db_url, *args)
    assert json.loads(again.stdout)["recharge"]["replayed"] is True
    bad = process(db_url, "recharge", "04CLI001", "abc", "--method", "card", "--staff", "1", "--checkpoint", "1")
    assert bad.returncode == 1 and bad.stderr.startswith("error: INVALID_REQUEST")


def test_bars_orders_staff_checkpoints_drawers(client: Client, db_url: str) -> None:
    w = world(client)
    assert "bar main" in ok(db_url, "bar", "create", "main", "Main bar").stdout
    order = client.process_bar_order(w["card"], [{"sku": "beer", "name": "Beer", "quantity": 2, "unit_price": 450}],
                                     900, "cli-order", "main")
    shown = ok(db_url, "order", "show", str(order.order_id)).stdout
    assert "9.00 EUR" in shown and "2 x Beer (beer) at 4.50" in shown
    part = ok(db_url, "order", "refund", str(order.order_id), "--item", "beer=1", "--yes").stdout
    assert "refunded 4.50 EUR" in part
    assert client.get_card(w["card"]).balance == 550
    refused(db_url, "INVALID_REQUEST", "order", "refund", str(order.order_id), "--item", "beer=5", "--yes")
    staff = json.loads(ok(db_url, "staff", "add", "Kim", "--json").stdout)
    assert ": inactive" in ok(db_url, "staff", "status", str(staff["id"]), "inactive").stdout
    cp = json.loads(ok(db_url, "checkpoint", "create", "South", "--json").stdout)
    client.process_checkpoint_recharge(w["card"], 2000, w["staff"], cp["id"], "cash", "cash-1")
    closed = ok(db_url, "drawer", "close", str(cp["id"]), "--staff", str(w["staff"]), "--counted", "19.50",
                "--yes").stdout
    assert "expected 20.00 EUR, counted 19.50, short by 0.50" in closed
    assert client.get_account(cp["drawer_account_id"]).balance == 0
    refused(db_url, "CHECKPOINT_NOT_FOUND", "drawer", "close", "999999", "--staff", "1", "--counted", "0")


def test_closeout_pays_every_card(client: Client, db_url: str) -> None:
    w = world(client)
    for i in range(4):
        card = client.issue_card(f"04CLOSE{i}")
        client.process_stripe_recharge(card.card_id, 100 * (i + 1), f"cs_close_{i}")
    out = ok(db_url, "closeout", "--batch-size", "2", "--fee", "0.50", "--yes", "--json")
    done = json.loads(out.stdout)
    assert done == {"cards": 5, "amount": 1000 + 1000 - 250, "fee": 250}
    assert client.get_card(w["card"]).status == "cashed_out"
    assert json.loads(ok(db_url, "closeout", "--yes", "--json").stdout)["cards"] == 0


def test_demo_has_a_festival(client: Client, db_url: str) -> None:
    out = ok(db_url, "demo").stdout
    festival = out[out.index("== cashless festival"):]
    assert festival.count("replayed=True") == 2 and "replayed=False" in festival
    assert "a forged delivery: HTTP 400 INVALID_SIGNATURE" in festival
    assert "13 orders accepted, 3 refused with INSUFFICIENT_FUNDS" in festival  # 40.00 / 3.00
    assert "refunded 0.50 EUR" in festival and "replaced by card" in festival
    assert out.splitlines()[-1] == "-- pgwallet check: ok, every ledger invariant holds"
