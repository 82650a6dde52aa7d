"""``pgwallet jobs ...``, ``pgwallet flags ...`` and ``pgwallet invest ...``: through click's CliRunner, and
as the installed console script. What a command changed is checked through the client; no output may
carry a traceback; a refusal is one ``error: CODE: ...`` line and exit code 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import snapshot
from invest_stage import Stage
from test_cli import PGWALLET, ok, process, refused, run

from pyapp import Client


def test_jobs_work_list_show_retry_cancel(client: Client, db_url: str) -> None:
    stage = Stage(client, db_url)
    wallet = stage.wallet(1000)
    ok_ticket = stage.execute(stage.invest(wallet, 400).investment_id)
    poor = stage.execute(stage.invest(wallet, 5000).investment_id)
    worked = run(db_url, "jobs", "work", "--once", "--json")
    assert worked.exit_code == 0 and json.loads(worked.stdout)["ran"] == 2
    assert f"job {ok_ticket.job_id} (investment_execution, key investment:" in worked.stderr  # lines off the JSON
    assert f"job {poor.job_id} (investment_execution" in worked.stderr and "INSUFFICIENT_FUNDS" in worked.stderr
    listed = json.loads(ok(db_url, "jobs", "list", "--json").stdout)
    assert [j["job_id"] for j in listed] == [poor.job_id, ok_ticket.job_id]
    failed = ok(db_url, "jobs", "list", "--status", "failed").stdout
    assert failed.startswith(f"job {poor.job_id} (investment_execution") and "attempt 1/3" in failed
    shown = ok(db_url, "jobs", "show", str(ok_ticket.job_id)).stdout
    assert "succeeded: attempt 1/3" in shown and "result: {" in shown
    assert json.loads(ok(db_url, "jobs", "show", str(poor.job_id), "--json").stdout)["status"] == "failed"
    retried = json.loads(ok(db_url, "jobs", "retry", str(poor.job_id), "--json").stdout)
    assert (retried["status"], retried["attempts"]) == ("queued", 0)
    cancelled = ok(db_url, "jobs", "cancel", str(poor.job_id), "--yes").stdout
    assert cancelled.startswith(f"job {poor.job_id} (investment_execution") and " cancelled: " in cancelled
    assert client.get_investment(client.get_job(poor.job_id).payload["investment_id"]).status == "cancelled"
    assert ok(db_url, "jobs", "purge").stdout.startswith("purged 0 jobs and 0 rate-limit hits")
    assert stage.balance(wallet) == 600


def test_flags_list_enable_disable(client: Client, db_url: str) -> None:
    stage = Stage(client, db_url)
    listed = ok(db_url, "flags", "list").stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [["on", "dividend_distribution_enabled:"],
                                                     ["on", "investment_execution_enabled:"],
                                                     ["on", "investment_module_enabled:"]]
    off = json.loads(ok(db_url, "flags", "disable", "investment_module_enabled", "--yes", "--staff", str(stage.ops),
                        "--json").stdout)
    assert (off["enabled"], off["updated_by"]) == (False, f"ops (staff {stage.ops})")
    assert "OFF investment_module_enabled" in ok(db_url, "flags", "list").stdout
    staff = ("--staff", str(stage.ops))
    refused(db_url, "FEATURE_DISABLED", "invest", "create-product", "--name", "Off", *staff)
    ok(db_url, "flags", "enable", "investment_module_enabled", *staff)
    created = json.loads(ok(db_url, "invest", "create-product", "--name", "On", "--key", "p1", "--json",
                            *staff).stdout)
    assert created["product"]["name"] == "On" and created["idempotency_key"] == "p1"
    refused(db_url, "INVALID_REQUEST", "flags", "enable", "no_such_flag", *staff)
    refused(db_url, "STAFF_NOT_AUTHORIZED", "flags", "enable", "investment_module_enabled", "--staff", "999999")
    assert stage.product.product_id


def test_invest_commands(client: Client, db_url: str) -> None:
    stage = Stage(client, db_url)
    wallet = stage.wallet(10_000)
    investment = stage.invested(wallet, 2550)
    product_id = stage.product.product_id
    assert "25.50 invested by 1 holders" in ok(db_url, "invest", "product", str(product_id)).stdout
    assert ok(db_url, "invest", "show", str(investment.investment_id)).stdout.startswith(
        f"investment {investment.investment_id}: 25.50 from wallet {wallet} in product {product_id}, executed")
    staff = ("--staff", str(stage.ops))
    refused(db_url, "INSUFFICIENT_FUNDS", "invest", "dividend", str(product_id), "--amount", "5.00", "--yes", *staff)
    stage.fund_dividends(500)
    ticket = json.loads(ok(db_url, "invest", "dividend", str(product_id), "--amount", "5.00", "--yes", "--key", "d",
                           "--json", *staff).stdout)
    assert ticket["status"] == "queued"
    ok(db_url, "jobs", "work", "--once", "--kinds", "dividend")
    ok(db_url, "payouts", "work", "--once")
    shown = ok(db_url, "invest", "dividend-show", str(ticket["dividend_id"])).stdout
    assert "distributed" in shown and "completed, 5.00 paid to 1 holders" in shown
    refused(db_url, "PRODUCT_NOT_FOUND", "invest", "product", "424242")
    refused(db_url, "DIVIDEND_NOT_FOUND", "invest", "dividend-show", "424242")
    refused(db_url, "INVESTMENT_NOT_FOUND", "invest", "show", "424242")


def test_refusals_are_one_line_and_change_nothing(client: Client, db_url: str) -> None:
    for command in ("show", "retry"):
        refused(db_url, "JOB_NOT_FOUND", "jobs", command, "424242")
    refused(db_url, "JOB_NOT_FOUND", "jobs", "cancel", "424242", "--yes")
    refused(db_url, "INVALID_REQUEST", "jobs", "work", "--kinds", "nobody")
    refused(db_url, "INVALID_REQUEST", "jobs", "work", "--lease", "0")
    refused(db_url, "INVALID_REQUEST", "jobs", "list", "--limit", "0")
    as_json = run(db_url, "jobs", "show", "424242", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stderr)["error"]["code"] == "JOB_NOT_FOUND"


def test_the_console_script_works_and_stops_on_sigterm(client: Client, db_url: str) -> None:
    stage = Stage(client, db_url)
    wallet = stage.wallet(1000)
    flags = process(db_url, "flags", "list", "--json")
    assert flags.returncode == 0 and len(json.loads(flags.stdout)) == 3
    missing = process(db_url, "jobs", "show", "424242")
    assert missing.returncode == 1 and missing.stderr.startswith("error: JOB_NOT_FOUND")
    worker = subprocess.Popen([str(PGWALLET), "jobs", "work", "--poll", "0.1"], env={**os.environ,
                              "DATABASE_URL": db_url}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        ticket = stage.execute(stage.invest(wallet, 300).investment_id)  # the worker is woken by NOTIFY
        deadline = time.monotonic() + 20
        while client.get_job(ticket.job_id).status != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get_job(ticket.job_id).status == "succeeded"
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Traceback" not in out + err and "worker stopped: 1 jobs run" in out
    assert stage.balance(wallet) == 700
    assert snapshot(db_url) == snapshot(db_url)


def test_demo_investments(client: Client, db_url: str) -> None:
    from cli.invest import demo_investments

    lines: list[str] = []
    demo_investments(client, db_url, "t1", lines.append)
    text = "\n".join(lines)
    assert "executed" in text and "INSUFFICIENT_FUNDS" in text
    assert "payout job 1 completed, 1000.01 paid to 3 holders" in text
    assert "refused: FEATURE_DISABLED (403)" in text and "RATE_LIMITED (429)" in text
