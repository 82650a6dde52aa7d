"""The staff's path without guesswork: a list command for every entity a command takes an id of, names
where people know names, spreadsheet CSVs, no traceback for odd input, --version, global options after
the subcommand, workers' lines with their time."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import snapshot
from test_cli import PGWALLET, ok, refused, run

from pyapp import Client


def test_list_commands_show_what_other_commands_take(client: Client, db_url: str) -> None:
    client.create_bar("north", "North bar")
    sam = client.create_staff("Sam").id
    gate = client.create_checkpoint("Main gate").id
    card = client.issue_card("04LIST01", holder="Ada")
    assert "bar 1 north (North bar), EUR" in ok(db_url, "bar", "list").output
    assert f"staff {sam} Sam: active" in ok(db_url, "staff", "list").output
    assert f"checkpoint {gate} Main gate" in ok(db_url, "checkpoint", "list").output
    assert "04LIST01" in ok(db_url, "card", "list").output
    accounts = json.loads(ok(db_url, "account", "list", "--kind", "card", "--json").output)
    assert [a["id"] for a in accounts] == [card.account_id]
    assert json.loads(ok(db_url, "card", "list", "--status", "blocked", "--json").output) == []
    assert ok(db_url, "payouts", "list").output == "no payout job\n"
    # people's names and codes where people know them: the recharge desk by names
    done = ok(db_url, "recharge", "04LIST01", "20.00", "--method", "cash", "--staff", "sam", "--checkpoint",
              "Main gate", "--yes")
    assert "20.00" in done.output and client.get_card(card.card_id).balance == 2000
    before = snapshot(db_url)
    unknown = run(db_url, "recharge", "04LIST01", "1.00", "--method", "cash", "--staff", "Nobody", "--checkpoint",
                  str(gate), "--yes")
    assert unknown.exit_code == 2 and "staff list" in unknown.output and snapshot(db_url) == before


def test_odd_input_is_a_usage_error_not_a_traceback(client: Client, db_url: str) -> None:
    for args in (["order", "refund", "1", "--item", "beer=\u00b2"], ["order", "refund", "1", "--item", "beer=99999"]):
        result = run(db_url, *args)  # run() also checks: no traceback, no exception but SystemExit
        assert result.exit_code == 2 and "SKU=QUANTITY" in result.output, result.output


def test_payouts_from_a_spreadsheet_csv(client: Client, db_url: str, tmp_path: Path) -> None:
    world = client.open_system_account("EUR", "system").id
    pool = client.open_account("EUR", "pool").id
    a, b = (client.open_account("EUR", "user_wallet").id for _ in range(2))
    empty_pool = run(db_url, "payouts", "create", "--challenge", "c0", "--pool", str(pool), "--winners", "-",
                     "--yes", input=f"account_id,share\n{a},1\n")
    assert empty_pool.exit_code == 2 and "fund it first, or give --total" in empty_pool.output
    client.fund_account(world, pool, 10_000, "fund-pool")
    header_only = tmp_path / "header.csv"
    header_only.write_bytes(b"\xef\xbb\xbfaccount_id;share\r\n")
    refused(db_url, "INVALID_REQUEST", "payouts", "create", "--challenge", "c1", "--pool", str(pool), "--winners",
            str(header_only), "--yes")
    saved = tmp_path / "winners.csv"
    saved.write_bytes(f'\ufeff"account_id";"share"\r\n"{a}";"1"\r\n"{b}";"3"\r\n'.encode())
    created = json.loads(ok(db_url, "payouts", "create", "--challenge", "c1", "--pool", str(pool), "--winners",
                            str(saved), "--yes", "--json").output)
    assert created["job"]["total_winners"] == 2  # the refused header-only file left the challenge id free
    work = subprocess.run([str(PGWALLET), "payouts", "work", "--once", "--give-way", "0"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, env={"DATABASE_URL": db_url, "PATH": ""})
    assert work.returncode == 0, work.stderr
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d job \d+: completed", work.stdout), work.stdout
    assert client.get_account(b).balance == 7500


def test_version_and_global_options_after_the_subcommand(client: Client, db_url: str) -> None:
    version = subprocess.run([str(PGWALLET), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and re.fullmatch(r"pgwallet, version \d+\.\d+\.\d+\n", version.stdout)
    account = client.open_account("EUR", "user_wallet").id
    after = subprocess.run([str(PGWALLET), "account", "show", str(account), "--database-url", db_url],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env={"PATH": ""})
    assert after.returncode == 0 and f"account {account}" in after.stdout, after.stderr


def test_short_help_is_not_cut_at_an_abbreviation() -> None:
    listing = subprocess.run([str(PGWALLET), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "e.g." not in listing and "transfer" in listing
