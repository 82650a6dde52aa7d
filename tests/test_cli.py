"""The ``pgwallet`` command line: through click's CliRunner, and as the installed console script.

Every test runs against a fresh migrated database; what a command changed is checked through the
``client`` fixture (or a snapshot of the ledger tables), not only through its own output. No output
may carry a traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import Ledger, snapshot

from cli.main import cli
from pyapp import Client

PGWALLET = Path(sys.executable).parent / "pgwallet"


def run(db_url: str, *args: str, input: Any = None) -> Result:
    """``pgwallet --database-url URL ARGS...`` in-process; no exception but SystemExit may escape."""
    result = CliRunner().invoke(cli, ["--database-url", db_url, *args], input=input)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def ok(db_url: str, *args: str, input: Any = None) -> Result:
    result = run(db_url, *args, input=input)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result


def refused(db_url: str, code: str, *args: str) -> Result:
    """A command refused by a rule: exit 1, one ``error: CODE: ...`` line on stderr, nothing on stdout."""
    before = snapshot(db_url)
    result = run(db_url, *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {code}: ") and result.stderr.count("\n") == 1, result.stderr
    assert snapshot(db_url) == before
    return result


def process(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``pgwallet`` console script as a real process, with ``DATABASE_URL`` set."""
    done = subprocess.run([str(PGWALLET), *args], env={**os.environ, "DATABASE_URL": db_url},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in done.stdout and "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module", autouse=True)
def unreachable() -> Iterator[subprocess.Popen[str]]:
    """``pgwallet`` on a port nobody listens on, started with the module: it gives up only after the
    CLI's 5 s connection timeout, so it waits in the background while the other tests run."""
    proc = subprocess.Popen([str(PGWALLET), "--database-url", "postgresql://postgres@127.0.0.1:1/x", "account",
                             "show", "1"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


class TtyInput(io.BytesIO):
    """Standard input that claims to be a terminal: CliRunner wraps it, and ``isatty`` follows it."""

    def isatty(self) -> bool:
        return True


# -- accounts ------------------------------------------------------------------------------------


def test_account_open_plain(db_url: str, client: Client) -> None:
    result = ok(db_url, "account", "open", "eur", "card", "--name", "alice")
    match = re.fullmatch(r"opened account (\d+) \(card, alice\) active: balance 0\.00 EUR, held 0\.00, "
                         r"available 0\.00\n", result.output)
    assert match, result.output
    opened = client.get_account(int(match.group(1)))
    assert (opened.currency, opened.kind, opened.name, opened.balance) == ("EUR", "card", "alice", 0)
    assert not opened.allow_negative and not opened.collector


def test_account_open_json(db_url: str, client: Client) -> None:
    data = json.loads(ok(db_url, "account", "open", "EUR", "revenue", "--json").output)
    assert data["kind"] == "revenue" and data["currency"] == "EUR" and data["exponent"] == 2
    assert data["collector"] is True and data["balance"] == 0 and data["status"] == "active"
    assert client.get_account(data["id"]).collector
    system = json.loads(ok(db_url, "account", "open", "TOKEN", "system", "--no-allow-negative", "--json").output)
    assert system["exponent"] == 0 and system["allow_negative"] is False


def test_account_open_refusals(db_url: str) -> None:
    before = snapshot(db_url)
    result = run(db_url, "account", "open", "EUR", "piggybank")
    assert result.exit_code == 2 and "piggybank" in result.stderr
    assert snapshot(db_url) == before
    result = refused(db_url, "INVALID_REQUEST", "account", "open", "XYZ", "card")
    assert "currency" in result.stderr


def test_account_show(db_url: str, ledger: Ledger) -> None:
    card = ledger.funded(1234, name="bob")
    result = ok(db_url, "account", "show", str(card))
    assert result.output == (f"account {card} (card, bob) active: balance 12.34 EUR, held 0.00, "
                             "available 12.34\n")
    data = json.loads(ok(db_url, "account", "show", str(card), "--json").output)
    assert (data["id"], data["balance"], data["available"]) == (card, 1234, 1234)
    result = refused(db_url, "ACCOUNT_NOT_FOUND", "account", "show", "999999")
    assert "999999" in result.stderr


def test_account_history(db_url: str, ledger: Ledger) -> None:
    card = ledger.funded(1000)
    other = ledger.funded(0)
    ledger.client.transfer(card, other, 250, ledger.key())
    lines = ok(db_url, "account", "history", str(card)).output.splitlines()
    assert len(lines) == 2
    assert "-2.50" in lines[0] and f"counterparty {other}" in lines[0] and lines[0].rstrip().split()[-3] == "7.50"
    assert "10.00" in lines[1] and f"counterparty {ledger.world.id}" in lines[1]
    entries = json.loads(ok(db_url, "account", "history", str(card), "--json", "--limit", "1").output)
    assert [e["amount"] for e in entries] == [-250]
    older = json.loads(ok(db_url, "account", "history", str(card), "--json", "--before",
                          str(entries[0]["entry_id"])).output)
    assert [e["amount"] for e in older] == [1000]
    assert ok(db_url, "account", "history", str(other), "--before", str(entries[0]["entry_id"])).output == \
        "no entries\n"


def test_account_history_bad_limit(db_url: str, ledger: Ledger) -> None:
    card = ledger.funded(0)
    result = refused(db_url, "INVALID_REQUEST", "account", "history", str(card), "--limit", "0")
    assert "limit" in result.stderr


def test_frozen_account_refuses_a_transfer(db_url: str, ledger: Ledger, client: Client) -> None:
    card, other = ledger.funded(1000), ledger.funded(0)
    result = ok(db_url, "account", "status", str(card), "frozen")
    assert f"account {card} (card) frozen" in result.output
    assert client.get_account(card).status == "frozen"
    refused(db_url, "ACCOUNT_FROZEN", "transfer", str(card), str(other), "1")
    assert ledger.balance(card) == 1000 and ledger.balance(other) == 0
    data = json.loads(ok(db_url, "account", "status", str(card), "active", "--json").output)
    assert data["status"] == "active"
    ok(db_url, "transfer", str(card), str(other), "1")
    assert ledger.balance(other) == 100
    # closing needs a zero balance
    refused(db_url, "INVALID_STATE_TRANSITION", "account", "status", str(card), "closed")
    assert ok(db_url, "account", "status", str(other), "frozen").output.startswith(f"account {other} (card) frozen")
    refused(db_url, "ACCOUNT_FROZEN", "transfer", str(card), str(other), "1")  # frozen receives nothing either


# -- transfers -----------------------------------------------------------------------------------


def test_transfer_decimal_amount(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0, kind="merchant")
    result = ok(db_url, "transfer", str(card), str(bar), "12.50")
    assert result.output.startswith("moved 12.50 EUR: transfer ")
    assert f"account {card} (card) active: balance 37.50 EUR" in result.output
    assert ledger.balance(card) == 5000 - 1250 and ledger.balance(bar) == 1250


def test_transfer_whole_amount_and_trailing_zeros(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    ok(db_url, "transfer", str(card), str(bar), "3")
    ok(db_url, "transfer", str(card), str(bar), "0.100")  # 0.100 has one significant decimal: 10 cents
    assert ledger.balance(bar) == 310


def test_transfer_too_many_decimals(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    for amount in ("12.505", "0.001"):
        result = refused(db_url, "INVALID_REQUEST", "transfer", str(card), str(bar), amount)
        assert "(amount: " in result.stderr and "decimals" in result.stderr
    assert ledger.balance(card) == 5000 and ledger.balance(bar) == 0


def test_transfer_malformed_amount(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    for amount in ("0", "0.00", "-5", "1e3", "12,50", "abc", "1.5.0", "", "99999999999999999999",
                   "92233720368547758.08"):
        result = refused(db_url, "INVALID_REQUEST", "transfer", str(card), str(bar), "--", amount)
        assert "(amount: " in result.stderr, amount
    assert ledger.balance(card) == 5000 and ledger.balance(bar) == 0


def test_transfer_insufficient_funds(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(1000), ledger.funded(0)
    result = refused(db_url, "INSUFFICIENT_FUNDS", "transfer", str(card), str(bar), "10.01")
    assert str(card) in result.stderr
    assert ledger.balance(card) == 1000 and ledger.balance(bar) == 0


def test_transfer_other_refusals(db_url: str, ledger: Ledger, client: Client) -> None:
    card = ledger.funded(1000)
    refused(db_url, "ACCOUNT_NOT_FOUND", "transfer", str(card), "987654", "1")
    refused(db_url, "ACCOUNT_NOT_FOUND", "transfer", "987654", str(card), "1")
    usd = client.open_account("USD", "card").id
    refused(db_url, "CURRENCY_MISMATCH", "transfer", str(card), str(usd), "1")
    refused(db_url, "INVALID_REQUEST", "transfer", str(card), str(card), "1")


def test_transfer_usage_error(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(1000), ledger.funded(0)
    before = snapshot(db_url)
    for args in (["abc", str(bar), "1"], [str(card), "2.5", "1"], [str(card), str(bar)],
                 [str(card), str(bar), "1", "4"], [str(card), str(bar), "1", "--bogus"]):
        result = run(db_url, "transfer", *args)
        assert result.exit_code == 2, (args, result.output)
        assert "Usage:" in result.stderr and result.stdout == ""
    assert snapshot(db_url) == before


def test_transfer_replayed_with_the_same_key(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    first = ok(db_url, "transfer", str(card), str(bar), "7.25", "--key", "K")
    assert first.output.startswith("moved 7.25 EUR") and "(key K)" in first.output
    second = ok(db_url, "transfer", str(card), str(bar), "7.25", "--key", "K")
    assert second.output.startswith("replayed 7.25 EUR") and "(key K)" in second.output
    transfer_id = re.search(r"transfer (\d+)", first.output)
    assert transfer_id and f"transfer {transfer_id.group(1)} " in second.output
    assert ledger.balance(card) == 5000 - 725 and ledger.balance(bar) == 725
    # the same key for another amount is a different request
    refused(db_url, "DUPLICATE_REQUEST", "transfer", str(card), str(bar), "7.26", "--key", "K")


def test_transfer_without_key_makes_a_fresh_one(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    keys = set()
    for _ in range(2):
        data = json.loads(ok(db_url, "transfer", str(card), str(bar), "1", "--json").output)
        keys.add(data["idempotency_key"])
        assert data["transfer"]["replayed"] is False
    assert len(keys) == 2 and ledger.balance(bar) == 200


def test_transfer_json(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    data = json.loads(ok(db_url, "transfer", str(card), str(bar), "0.01", "--json", "--key", "json-key").output)
    assert data["idempotency_key"] == "json-key"
    assert data["transfer"]["amount"] == 1 and data["transfer"]["currency"] == "EUR"
    assert data["transfer"]["debit_account_id"] == card and data["transfer"]["credit_account_id"] == bar
    assert data["debit_account"]["id"] == card and data["debit_account"]["balance"] == 4999
    assert ledger.balance(bar) == 1


def test_transfer_confirmation_on_a_terminal(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    before = snapshot(db_url)
    no = run(db_url, "transfer", str(card), str(bar), "12.50", input=TtyInput(b"n\n"))
    assert no.exit_code == 1
    assert f"Move 12.50 EUR from account {card} to account {bar}?" in no.output and "Aborted" in no.output
    assert snapshot(db_url) == before
    empty = run(db_url, "transfer", str(card), str(bar), "12.50", input=TtyInput(b"\n"))  # default: no
    assert empty.exit_code == 1 and snapshot(db_url) == before
    yes = run(db_url, "transfer", str(card), str(bar), "12.50", input=TtyInput(b"y\n"))
    assert yes.exit_code == 0, yes.output
    assert "moved 12.50 EUR" in yes.output
    assert ledger.balance(card) == 3750 and ledger.balance(bar) == 1250
    # --yes skips the question even on a terminal
    skipped = run(db_url, "transfer", str(card), str(bar), "1", "--yes", input=TtyInput(b""))
    assert skipped.exit_code == 0 and "?" not in skipped.output
    assert ledger.balance(bar) == 1350
    before = snapshot(db_url)
    hold = run(db_url, "hold", "place", str(card), str(bar), "1", input=TtyInput(b"n\n"))
    assert hold.exit_code == 1 and f"Hold 1.00 EUR on account {card}?" in hold.output
    assert snapshot(db_url) == before


# -- holds ---------------------------------------------------------------------------------------


def test_hold_place_capture_in_part(db_url: str, ledger: Ledger, client: Client) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0, kind="merchant")
    placed = json.loads(ok(db_url, "hold", "place", str(card), str(bar), "20.00", "--json").output)
    assert placed["status"] == "open" and placed["amount"] == 2000
    account = client.get_account(card)
    assert (account.balance, account.held, account.available) == (5000, 2000, 3000)
    hold_id = placed["hold_id"]
    result = ok(db_url, "hold", "capture", str(hold_id), "12.75")
    assert result.output == (f"hold {hold_id} captured: 20.00 EUR from account {card} to account {bar}, "
                             "captured 12.75, released 7.25\n")
    account = client.get_account(card)
    assert (account.balance, account.held, account.available) == (5000 - 1275, 0, 5000 - 1275)
    assert ledger.balance(bar) == 1275
    hold = client.get_hold(hold_id)
    assert hold.status == "captured" and hold.captured_amount == 1275 and hold.released_amount == 725
    # a settled hold is settled once
    refused(db_url, "INVALID_STATE_TRANSITION", "hold", "capture", str(hold_id))


def test_hold_capture_all(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    hold_id = json.loads(ok(db_url, "hold", "place", str(card), str(bar), "5", "--json").output)["hold_id"]
    key = "capture-all"
    first = ok(db_url, "hold", "capture", str(hold_id), "--key", key)
    assert first.output == f"hold {hold_id} captured: 5.00 EUR from account {card} to account {bar}, captured 5.00\n"
    second = ok(db_url, "hold", "capture", str(hold_id), "--key", key)
    assert second.output.endswith("(replayed)\n")
    assert ledger.balance(card) == 4500 and ledger.balance(bar) == 500


def test_hold_capture_refusals(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    hold_id = json.loads(ok(db_url, "hold", "place", str(card), str(bar), "5", "--json").output)["hold_id"]
    assert "amount" in refused(db_url, "INVALID_REQUEST", "hold", "capture", str(hold_id), "5.01").stderr
    assert "amount" in refused(db_url, "INVALID_REQUEST", "hold", "capture", str(hold_id), "1.001").stderr
    refused(db_url, "HOLD_NOT_FOUND", "hold", "capture", "424242", "1")
    refused(db_url, "HOLD_NOT_FOUND", "hold", "capture", "424242")
    refused(db_url, "HOLD_NOT_FOUND", "hold", "void", "424242")


def test_hold_place_refusals(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(1000), ledger.funded(0)
    refused(db_url, "INSUFFICIENT_FUNDS", "hold", "place", str(card), str(bar), "10.01")
    refused(db_url, "INVALID_REQUEST", "hold", "place", str(card), str(bar), "1.001")
    refused(db_url, "INVALID_REQUEST", "hold", "place", str(card), str(bar), "1", "--timeout", "0")
    refused(db_url, "ACCOUNT_NOT_FOUND", "hold", "place", str(card), "55555", "1")


def test_hold_void(db_url: str, ledger: Ledger, client: Client) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    hold_id = json.loads(ok(db_url, "hold", "place", str(card), str(bar), "9.99", "--json").output)["hold_id"]
    assert client.get_account(card).available == 5000 - 999
    result = ok(db_url, "hold", "void", str(hold_id))
    assert result.output == f"hold {hold_id} voided: 9.99 EUR from account {card} to account {bar}, released 9.99\n"
    account = client.get_account(card)
    assert (account.balance, account.held, account.available) == (5000, 0, 5000)
    assert ledger.balance(bar) == 0
    refused(db_url, "INVALID_STATE_TRANSITION", "hold", "void", str(hold_id))


def test_hold_expire(db_url: str, ledger: Ledger, client: Client) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    short = json.loads(ok(db_url, "hold", "place", str(card), str(bar), "1", "--timeout", "1", "--json").output)
    long = json.loads(ok(db_url, "hold", "place", str(card), str(bar), "2", "--timeout", "3600", "--json").output)
    assert client.get_account(card).held == 300
    time.sleep(1.1)
    refused(db_url, "HOLD_EXPIRED", "hold", "capture", str(short["hold_id"]))
    assert ok(db_url, "hold", "expire").output == "expired 1 holds\n"
    assert client.get_hold(short["hold_id"]).status == "expired"
    assert client.get_hold(long["hold_id"]).status == "open"
    assert client.get_account(card).held == 200
    assert json.loads(ok(db_url, "hold", "expire", "--json", "--batch-size", "1").output) == {"expired": 0}
    refused(db_url, "INVALID_STATE_TRANSITION", "hold", "capture", str(short["hold_id"]))
    refused(db_url, "INVALID_REQUEST", "hold", "expire", "--batch-size", "0")


# -- maintenance ---------------------------------------------------------------------------------


def test_keys_purge(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    assert ok(db_url, "keys", "purge").output == "purged 0 expired keys\n"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update pgwallet.settings set value = '0 seconds' where name = 'idempotency_ttl'")
        ok(db_url, "transfer", str(card), str(bar), "1", "--key", "short-lived-1")
        ok(db_url, "transfer", str(card), str(bar), "1", "--key", "short-lived-2")
        count = "select count(*) as n from pgwallet.idempotency_keys"
        before = conn.execute(count).fetchone()
        assert before is not None
        assert ok(db_url, "keys", "purge", "--batch-size", "1").output == "purged 2 expired keys\n"
        after = conn.execute(count).fetchone()
        assert after is not None and after[0] == before[0] - 2
        left = conn.execute("select key from pgwallet.idempotency_keys where key like 'short-lived-%'").fetchall()
        assert left == []
    assert json.loads(ok(db_url, "keys", "purge", "--json").output) == {"purged": 0}
    refused(db_url, "INVALID_REQUEST", "keys", "purge", "--batch-size", "100001")


def test_check(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(5000), ledger.funded(0)
    ok(db_url, "transfer", str(card), str(bar), "1")
    assert ok(db_url, "check").output == "ok: every ledger invariant holds\n"
    assert json.loads(ok(db_url, "check", "--json").output) == {"ok": True, "violations": []}


def test_check_reports_a_violation(db_url: str, ledger: Ledger, client: Client) -> None:
    card = ledger.funded(500)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update pgwallet.accounts set balance = balance + 1 where id = %s", (card,))
        result = run(db_url, "check")
        assert result.exit_code == 1
        assert f"VIOLATED balance_matches_entries: account {card} EUR" in result.output
        conn.execute("update pgwallet.accounts set balance = balance - 1 where id = %s", (card,))
    assert client.check_invariants() == []


def all_migrations() -> list[str]:
    """Every migration id, in order (each domain adds its own)."""
    from pyapp.migrations import migrations_dir

    return sorted(p.name.removesuffix(".sql") for p in migrations_dir().glob("*.sql")
                  if not p.name.endswith(".rollback.sql"))


def test_migrate_list(db_url: str) -> None:
    every = all_migrations()
    assert every[:2] == ["0001_schema_and_roles", "0002_ledger"]
    assert ok(db_url, "migrate", "--list").output == "".join(f"[x] {m}\n" for m in every)
    states = json.loads(ok(db_url, "migrate", "--list", "--json").output)
    assert states == [{"id": m, "applied": True} for m in every]


def test_migrate_again_applies_nothing(db_url: str) -> None:
    before = snapshot(db_url)
    assert ok(db_url, "migrate").output == "procedures installed\n"
    assert json.loads(ok(db_url, "migrate", "--json").output) == {"applied": []}
    assert snapshot(db_url) == before


def test_migrate_all_needs_rollback(db_url: str) -> None:
    result = run(db_url, "migrate", "--all")
    assert result.exit_code == 2
    assert "--all goes with --rollback" in result.stderr
    assert ok(db_url, "migrate", "--list").output == "".join(f"[x] {m}\n" for m in all_migrations())


def test_no_database_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PGWALLET_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["account", "show", "1"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: DATABASE_ERROR") and "--database-url" in result.stderr


def test_demo(db_url: str, client: Client) -> None:
    result = ok(db_url, "demo")
    lines = result.output.splitlines()
    assert lines[0].startswith("== pgwallet demo (run ")
    assert lines[-1] == "-- pgwallet check: ok, every ledger invariant holds"
    accepted = re.search(r"(\d+) accepted, (\d+) refused with INSUFFICIENT_FUNDS", result.output)
    # alice: 50.00 funded, 10.00 spent on the purchase, 7.00 held then voided: 40 payments of 1.00 fit
    assert accepted and (int(accepted.group(1)), int(accepted.group(2))) == (40, 20)
    assert client.check_invariants() == []
    # it can run again on the same database
    assert ok(db_url, "demo").output.splitlines()[-1].endswith("ok, every ledger invariant holds")


# -- the installed console script, as a real process ---------------------------------------------


def test_process_open_transfer_check(db_url: str, client: Client) -> None:
    world = process(db_url, "account", "open", "EUR", "system", "--json")
    assert world.returncode == 0, world.stderr
    world_id = json.loads(world.stdout)["id"]
    card = process(db_url, "account", "open", "EUR", "card")
    assert card.returncode == 0, card.stderr
    match = re.match(r"opened account (\d+) ", card.stdout)
    assert match
    card_id = int(match.group(1))
    moved = process(db_url, "fund", str(world_id), str(card_id), "100.05", "--key", "p1")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("moved 100.05 EUR")
    assert client.get_account(card_id).balance == 10005
    assert client.get_account(world_id).balance == -10005
    checked = process(db_url, "check")
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "ok: every ledger invariant holds\n", "")


def test_json_error_envelope_in_process(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(100), ledger.funded(0)
    result = run(db_url, "transfer", str(card), str(bar), "1.01", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stderr)["error"]["code"] == "INSUFFICIENT_FUNDS"


def test_process_refused_transfer(db_url: str, ledger: Ledger) -> None:
    card, bar = ledger.funded(100), ledger.funded(0)
    before = snapshot(db_url)
    done = process(db_url, "transfer", str(card), str(bar), "1.01")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: INSUFFICIENT_FUNDS: ")
    json_done = process(db_url, "transfer", str(card), str(bar), "1.001", "--json")
    assert json_done.returncode == 1
    error = json.loads(json_done.stderr)["error"]
    assert error["code"] == "INVALID_REQUEST" and error["field"] == "amount"
    usage = process(db_url, "transfer", "x", str(bar), "1")
    assert usage.returncode == 2 and "Usage:" in usage.stderr
    assert snapshot(db_url) == before


def test_process_unreachable_database(unreachable: subprocess.Popen[str]) -> None:
    stdout, stderr = unreachable.communicate(timeout=60)
    assert unreachable.returncode == 1
    assert stdout == ""
    assert "Traceback" not in stderr
    # one line: no warning from the pool's connection attempts comes before it
    assert stderr.startswith("error: DATABASE_ERROR: The database is unavailable") and stderr.count("\n") == 1, stderr


def test_process_migrate_unreachable_database() -> None:
    done = subprocess.run([str(PGWALLET), "--database-url", "postgresql://postgres@127.0.0.1:1/x", "migrate",
                           "--list"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          check=False)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1 and "error: DATABASE_ERROR" in done.stderr
