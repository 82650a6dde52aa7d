"""``pgwallet payouts ...``: through click's CliRunner, and as the installed console script.

What a command changed is checked through the client, not only through its output; no output may
carry a traceback.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import Ledger, snapshot
from test_cli import ok, process, refused, run

from cli.payouts import Progress, read_winners
from pyapp import errors
from pyapp.payouts import PayoutJob


def csv_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "winners.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_create_work_status_from_a_csv(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    fees = c.open_account("EUR", "fees").id
    people = [ledger.funded(0, kind="user_wallet") for _ in range(3)]
    winners = csv_file(tmp_path, "account_id,share\n" + "".join(f"{p},{s}\n" for p, s in zip(people, (1, 1, 2),
                                                                                               strict=True)))
    created = json.loads(ok(db_url, "payouts", "create", "--challenge", "cli-1", "--pool", str(pool), "--fee-bps",
                            "500", "--winners", winners, "--total", "100.00", "--fee-account", str(fees), "--json",
                            "--key", "cli-key").output)
    job = created["job"]
    assert (job["status"], job["total_winners"], job["platform_fee"], created["idempotency_key"]) == (
        "queued", 3, 500, "cli-key")
    again = ok(db_url, "payouts", "create", "--challenge", "cli-1", "--pool", str(pool), "--fee-bps", "500",
               "--winners", winners, "--total", "100.00", "--fee-account", str(fees), "--key", "cli-key").output
    assert "(replayed)" in again and f"payout job {job['job_id']}" in again
    result = run(db_url, "payouts", "work", "--once", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["processed"] == 3
    assert f"job {job['job_id']}: completed, 3/3 paid" in result.stderr  # progress stays off the JSON
    status = ok(db_url, "payouts", "status", str(job["job_id"])).output
    assert status.startswith(f"payout job {job['job_id']} (challenge cli-1) completed: 3/3 paid")
    assert "paid 95.00 of 95.00" in status
    assert [ledger.balance(p) for p in people] == [2375, 2375, 4750]
    watched = ok(db_url, "payouts", "status", str(job["job_id"]), "--watch").output
    assert f"job {job['job_id']}: completed, 3/3 paid, 0 failed, 100%" in watched  # plain lines off a terminal


def test_amounts_csv_retry_and_cancel(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    a, b = (ledger.funded(0, kind="user_wallet") for _ in range(2))
    c.set_account_status(b, "frozen")
    winners = csv_file(tmp_path, f"account,amount\n{a},12.50\n{b},7.50\n")
    out = ok(db_url, "payouts", "create", "--challenge", "cli-2", "--pool", str(pool), "--winners", winners,
             "--total", "20").output
    job_id = int(out.split()[2])
    ok(db_url, "payouts", "work", "--once")
    assert c.get_payout_job_status(job_id).status == "completed_with_errors"
    retried = ok(db_url, "payouts", "retry", str(job_id)).output
    assert retried.startswith("1 entries to pay again")
    ok(db_url, "payouts", "work", "--once", "--batch-size", "1")
    cancelled = json.loads(ok(db_url, "payouts", "cancel", str(job_id), "--yes", "--json").output)
    assert (cancelled["status"], cancelled["cancelled"], cancelled["paid_winners"]) == ("cancelled", 1, 1)
    assert ledger.balance(a) == 1250 and ledger.balance(pool) == 10_000 - 1250
    assert c.get_account(pool).held == 0


def test_pause_and_resume(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    a, b = (ledger.funded(0, kind="user_wallet") for _ in range(2))
    winners = csv_file(tmp_path, f"account_id,share\n{a},1\n{b},1\n")
    job_id = int(ok(db_url, "payouts", "create", "--challenge", "cli-p", "--pool", str(pool), "--winners", winners,
                    "--total", "20").output.split()[2])
    paused = ok(db_url, "payouts", "pause", str(job_id)).output
    assert paused.startswith(f"payout job {job_id} (challenge cli-p) paused: 0/2 paid")
    assert json.loads(ok(db_url, "payouts", "work", "--once", "--json").output)["processed"] == 0
    listed = json.loads(ok(db_url, "payouts", "list", "--status", "paused", "--json").output)
    assert [j["job_id"] for j in listed] == [job_id]
    resumed = json.loads(ok(db_url, "payouts", "resume", str(job_id), "--json").output)
    assert (resumed["status"], resumed["paused_at"]) == ("queued", None)
    ok(db_url, "payouts", "work", "--once")
    assert c.get_payout_job_status(job_id).status == "completed" and ledger.balance(a) == 1000
    refused(db_url, "INVALID_STATE_TRANSITION", "payouts", "pause", str(job_id))


def test_refusals_are_one_line_and_change_nothing(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    pool = ledger.funded(1000, kind="pool")
    a = ledger.funded(0, kind="user_wallet")
    refused(db_url, "INVALID_REQUEST", "payouts", "create", "--challenge", "x", "--pool", str(pool), "--winners",
            csv_file(tmp_path, "who,share\n1,1\n"))
    refused(db_url, "INVALID_REQUEST", "payouts", "create", "--challenge", "x", "--pool", str(pool), "--winners",
            csv_file(tmp_path, f"account_id,amount\n{a},1.234\n"))
    refused(db_url, "INSUFFICIENT_FUNDS", "payouts", "create", "--challenge", "x", "--pool", str(pool), "--winners",
            csv_file(tmp_path, f"account_id,share\n{a},1\n"), "--total", "10.01")
    for command in ("status", "retry", "cancel", "pause", "resume"):
        extra = ["--yes"] if command == "cancel" else []
        refused(db_url, "PAYOUT_JOB_NOT_FOUND", "payouts", command, "999999", *extra)
    refused(db_url, "INVALID_REQUEST", "payouts", "work", "--batch-size", "0")
    as_json = run(db_url, "payouts", "status", "999999", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stderr)["error"]["code"] == "PAYOUT_JOB_NOT_FOUND"


def test_the_console_script_creates_and_works(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    pool = ledger.funded(1000, kind="pool")
    people = [ledger.funded(0, kind="user_wallet") for _ in range(4)]
    winners = csv_file(tmp_path, "account_id,share\n" + "".join(f"{p},0.25\n" for p in people))
    created = process(db_url, "payouts", "create", "--challenge", "proc", "--pool", str(pool), "--winners", winners,
                      "--json")
    assert created.returncode == 0, created.stderr
    job_id = json.loads(created.stdout)["job"]["job_id"]
    worked = process(db_url, "payouts", "work", "--once", "--batch-size", "3")
    assert worked.returncode == 0 and "worker stopped: 4 entries processed" in worked.stdout
    assert f"job {job_id}: completed, 4/4 paid" in worked.stdout
    assert [ledger.balance(p) for p in people] == [250] * 4
    missing = process(db_url, "payouts", "status", "424242")
    assert missing.returncode == 1 and missing.stderr.startswith("error: PAYOUT_JOB_NOT_FOUND")
    assert snapshot(db_url) == snapshot(db_url)


def test_reading_winners() -> None:
    assert read_winners(b"account_id,share\n7,0.5\n8,1.25\n", 2) == [
        {"account_id": 7, "share": 50}, {"account_id": 8, "share": 125}]
    assert read_winners(b"Account, Amount\n7, 12.5\n", 2) == [{"account_id": 7, "amount": 1250}]
    # as spreadsheets save it: a BOM, CRLF, ; or tab, quoted fields, blank lines
    for saved in (b"\xef\xbb\xbfaccount_id;share\r\n7;1\r\n8;2\r\n", b"account_id\tshare\n7\t1\n\n8\t2\n",
                  b'"account_id","share"\r\n"7","1"\r\n"8","2"\r\n'):
        assert read_winners(saved, 2) == [{"account_id": 7, "share": 1}, {"account_id": 8, "share": 2}], saved
    for data, says in ((b"account_id,share\nx,1\n", "line 2: account_id"), (b"account_id,share\n7,-1\n", "line 2"),
                       (b"account_id,share\n7,abc\n", "line 2: share"), (b"a,b\n", "line 1"),
                       (b"account_id,share\n7,1\n8,1,9\n", "line 3: 3 fields"),
                       (b"account_id,share\n7,1e999999\n", "line 2: share"),
                       (b"account_id,share,amount\n7,1,2\n", "not both"),
                       (b"account_id,share\n", "no winner"), (b"", "empty"),
                       (b"account_id,share\n7,\xff\n", "not UTF-8"),
                       (b"account_id,amount\n7,1.001\n", "account 7"),
                       (b'account_id,share\n"7,1\n', "line")):
        with pytest.raises(errors.InvalidRequest) as bad:
            read_winners(data, 2)
        assert bad.value.field == "winners" and says in (bad.value.detail or ""), (data, bad.value.detail)


def test_progress_on_a_terminal_draws_a_bar() -> None:
    out = io.StringIO()
    progress = Progress(out, interactive=True)
    base = {"job_id": 3, "challenge_id": "c", "pool_account_id": 1, "currency": "EUR", "total_pool": 10,
            "platform_fee_bps": 0, "platform_fee": 0, "payout_total": 10, "total_winners": 10, "failed_winners": 0,
            "cancelled_winners": 0, "paid_amount": 0, "replayed": False}
    progress.update(PayoutJob.from_mapping({**base, "status": "running", "processed_winners": 4, "paid_winners": 4,
                                            "pending_winners": 6, "progress_percent": 40.0}))
    progress.update(PayoutJob.from_mapping({**base, "status": "completed", "processed_winners": 10,
                                            "paid_winners": 10, "pending_winners": 0, "progress_percent": 100.0}))
    progress.close()
    assert "job 3" in out.getvalue() and "job 3 completed" in out.getvalue()
