"""The admin page in a real browser: headless Chromium (Debian's, through Playwright's executable_path)
drives ``/admin`` of a real ``pgwallet serve`` while a real ``pgwallet payouts work`` process pays a job of
3,000 winners; the page's progress bar reaches 100% with the final counts, and its retry button pays the
winner that failed once staff unfroze it. The screenshot is saved in the test's output folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Ledger
from test_cli import PGWALLET

from pyapp.http.tokens import token_hash

CHROMIUM = next((p for p in (os.environ.get("PGWALLET_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), "/usr/bin/chromium") if p and Path(p).exists()), None)
STAFF_TOKEN = "browser-staff-token"
WINNERS = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "PGWALLET_HTTP_TOKENS": f"desk:staff:{token_hash(STAFF_TOKEN)}"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(PGWALLET), "serve", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_admin_page_follows_a_payout_and_retries_a_failed_entry(ledger: Ledger, server: str, db_url: str,
                                                                tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no Chromium: `make test` installs Debian's chromium with apt-get when run as root")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
    c = ledger.client
    pool = ledger.funded(3_000_000, kind="pool")
    winners = [c.open_account("EUR", "user_wallet").id for _ in range(WINNERS)]
    frozen = winners[1234]
    c.set_account_status(frozen, "frozen")
    job = c.create_payout_job("browser-challenge", pool, 3_000_000, 0,
                              [{"account_id": w, "share": 1} for w in winners], "browser-job")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"{server}/admin")
            page.fill("#token", STAFF_TOKEN)
            page.click("#connect")
            row = page.locator(f'tr[data-job="{job.job_id}"]')
            row.wait_for(timeout=15_000)
            worker = subprocess.Popen([str(PGWALLET), "payouts", "work", "--give-way", "0", "--batch-size", "200"],
                                      env={**os.environ, "DATABASE_URL": db_url}, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                seen: list[str] = []
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    percent = row.locator(".percent").inner_text()
                    if not seen or seen[-1] != percent:
                        seen.append(percent)
                    if percent == "100%":
                        break
                    time.sleep(0.05)
                assert seen[-1] == "100%", seen
                page.wait_for_function(f'document.querySelector(\'tr[data-job="{job.job_id}"] .counts\')'
                                       f'.textContent.startsWith("2,999 paid, 1 failed")', timeout=15_000)
                assert row.locator(".status").inner_text() == "completed_with_errors"
                page.screenshot(path=str(tmp_path / "admin-after-payout.png"), full_page=True)
                # the failed entry, with its error; staff unfreeze the winner and retry from the page
                row.locator("button.show-failed").click()
                page.locator("table.failed-entries").wait_for(timeout=10_000)
                assert "ACCOUNT_FROZEN" in page.locator("table.failed-entries").inner_text()
                c.set_account_status(frozen, "active")
                row.locator("button.retry").click()
                page.wait_for_function(f'document.querySelector(\'tr[data-job="{job.job_id}"] .counts\')'
                                       f'.textContent.startsWith("3,000 paid, 0 failed")', timeout=30_000)
                assert row.locator(".status").inner_text() == "completed"
                page.screenshot(path=str(tmp_path / "admin-after-retry.png"), full_page=True)
            finally:
                worker.terminate()
                worker.wait(10)
        finally:
            browser.close()
    assert len(seen) >= 2, seen  # the bar moved while the worker paid, not only at the end
    assert c.get_payout_job_status(job.job_id).paid_winners == WINNERS
    print(f"screenshots: {tmp_path}")
