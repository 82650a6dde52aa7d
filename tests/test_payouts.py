"""Batched payouts: exact splits, batches, frozen winners, retry, cancel, draws, fees, replays, errors.

Every test ends with the ledger invariants (and the payout invariants) checked by the ``client``
fixture's teardown.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from conftest import Ledger, snapshot

from pyapp import AsyncClient, Client, errors
from pyapp.pacing import GiveWay
from pyapp.payouts import PayoutBatch, PayoutJob


def entries(url: str, job_id: int) -> list[tuple[int, int, str, str | None, int]]:
    """(account_id, amount, status, error, attempts) of every entry of the job, in list order."""
    with psycopg.connect(url) as conn:
        return conn.execute("select account_id, amount, status, error, attempts from pgwallet.payout_entries "
                            "where job_id = %s order by id", (job_id,)).fetchall()  # type: ignore[return-value]


def drain(client: Client, job_id: int, batch_size: int = 500) -> PayoutJob:
    """Process batches until the job has nothing pending."""
    while True:
        batch = client.process_payout_batch(job_id, batch_size)
        if batch.processed == 0:
            return client.get_payout_job_status(job_id)


def winners(ledger: Ledger, count: int) -> list[int]:
    return [ledger.funded(0, kind="user_wallet") for _ in range(count)]


def test_shares_are_split_exactly_by_largest_remainder(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    a, b, d = winners(ledger, 3)
    job = c.create_payout_job("split", pool, 1000, 250, [{"account_id": a, "share": 1}, {"account_id": b, "share": 1},
                                                         {"account_id": d, "share": 1}], "k1")
    assert (job.platform_fee, job.payout_total, job.total_winners, job.status) == (25, 975, 3, "queued")
    # 975 / 3 = 325 each, no remainder; a second job shows the tie-break
    assert [e[1] for e in entries(db_url, job.job_id)] == [325, 325, 325]
    job2 = c.create_payout_job("split-2", pool, 100, 0, [{"account_id": a, "share": 1}, {"account_id": b, "share": 1},
                                                         {"account_id": d, "share": 1}], "k2")
    assert [e[1] for e in entries(db_url, job2.job_id)] == [34, 33, 33]  # the earlier winner takes the tie
    job3 = c.create_payout_job("split-3", pool, 1000, 0, [{"account_id": a, "share": 1}, {"account_id": b, "share": 2},
                                                          {"account_id": d, "share": 4}], "k3")
    # 1000/7: 142.86, 285.71, 571.43 -> 142, 285, 571 (sum 998); remainders .86 and .71 get the two units
    assert [e[1] for e in entries(db_url, job3.job_id)] == [143, 286, 571]
    for j in (job, job2, job3):
        drain(c, j.job_id)
    assert [ledger.balance(x) for x in (a, b, d)] == [325 + 34 + 143, 325 + 33 + 286, 325 + 33 + 571]
    assert ledger.balance(pool) == 10_000 - 1000 - 100 - 1000 + 25  # the fee stays in the pool without a fee account


def test_amounts_are_paid_as_given_and_must_add_up(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(5000, kind="pool")
    a, b = winners(ledger, 2)
    with pytest.raises(errors.InvalidRequest) as refused:
        c.create_payout_job("amounts", pool, 1000, 1000, [{"account_id": a, "amount": 500},
                                                          {"account_id": b, "amount": 500}], "k")
    assert refused.value.field == "winners"
    job = c.create_payout_job("amounts", pool, 1000, 1000, [{"account_id": a, "amount": 600},
                                                            {"account_id": b, "amount": 300}], "k")
    assert (job.platform_fee, job.payout_total) == (100, 900)
    assert drain(c, job.job_id).status == "completed"
    assert (ledger.balance(a), ledger.balance(b)) == (600, 300)


def test_a_job_is_paid_in_batches_and_settles_its_hold(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(100_000, kind="pool")
    fees = c.open_account("EUR", "fees").id
    people = winners(ledger, 25)
    job = c.create_payout_job("batches", pool, 10_000, 500, [{"account_id": p, "share": 1} for p in people], "k",
                              fee_account_id=fees)
    assert ledger.balance(fees) == 500
    hold = c.get_hold(job.hold_id or 0)
    assert (hold.status, hold.amount, hold.credit_account_id) == ("open", 9500, pool)
    account = c.get_account(pool)
    assert (account.balance, account.held, account.available) == (99_500, 9500, 90_000)
    first = c.process_payout_batch(job.job_id, 10)
    assert (first.processed, first.paid, first.failed, first.status, first.paid_winners) == (10, 10, 0, "running", 10)
    assert first.progress_percent == 40.0 and first.started_at is not None
    assert c.get_hold(job.hold_id or 0).amount == 9500 - 10 * 380
    assert c.get_account(pool).held == 9500 - 3800
    c.process_payout_batch(job.job_id, 10)
    last = c.process_payout_batch(job.job_id, 10)
    assert (last.processed, last.status, last.progress_percent, last.paid_amount) == (5, "completed", 100.0, 9500)
    assert last.completed_at is not None
    assert c.process_payout_batch(job.job_id, 10).processed == 0  # a finished job is left alone
    assert all(ledger.balance(p) == 380 for p in people)
    hold = c.get_hold(job.hold_id or 0)
    assert (hold.status, hold.amount, hold.captured_amount, hold.released_amount) == ("captured", 9500, 9500, 0)
    account = c.get_account(pool)
    assert (account.balance, account.held) == (90_000, 0)
    assert {e[2] for e in entries(db_url, job.job_id)} == {"completed"}
    history = c.account_history(people[0])
    assert history[0].kind == "payout" and history[0].hold_id == job.hold_id and history[0].amount == 380


def test_frozen_winners_fail_alone_retry_pays_them_after_unfreezing(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    people = winners(ledger, 6)
    frozen, closed = people[1], people[4]
    c.set_account_status(frozen, "frozen")
    job = c.create_payout_job("frozen", pool, 600, 0, [{"account_id": p, "share": 1} for p in people], "k")
    c.set_account_status(closed, "closed")  # closed after the job was created: it fails alone too
    done = drain(c, job.job_id)
    assert (done.status, done.paid_winners, done.failed_winners, done.processed_winners) == (
        "completed_with_errors", 4, 2, 6)
    rows = entries(db_url, job.job_id)
    assert [(r[2], r[3]) for r in rows if r[0] in (frozen, closed)] == [("failed", "ACCOUNT_FROZEN"),
                                                                         ("failed", "ACCOUNT_CLOSED")]
    assert c.get_hold(job.hold_id or 0).amount == 200 and c.get_account(pool).held == 200  # still owed, still held
    c.set_account_status(frozen, "active")
    retried = c.retry_failed_payout_entries(job.job_id)
    assert (retried.retried, retried.status, retried.failed_winners, retried.pending_winners) == (2, "running", 0, 2)
    again = drain(c, job.job_id)
    assert (again.status, again.paid_winners, again.failed_winners) == ("completed_with_errors", 5, 1)
    assert ledger.balance(frozen) == 100 and ledger.balance(closed) == 0
    assert [r[4] for r in entries(db_url, job.job_id) if r[0] == frozen] == [2]  # attempts
    cancelled = c.cancel_payout_job(job.job_id)  # gives up on the closed account: its 100 is released
    assert (cancelled.status, cancelled.cancelled, cancelled.failed_winners, cancelled.cancelled_winners) == (
        "cancelled", 1, 0, 1)
    hold = c.get_hold(job.hold_id or 0)
    assert (hold.status, hold.captured_amount, hold.released_amount) == ("captured", 500, 100)
    assert c.get_account(pool).balance == 9500 and c.get_account(pool).held == 0


def test_cancel_releases_what_is_still_pending(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    people = winners(ledger, 10)
    job = c.create_payout_job("cancel", pool, 1000, 0, [{"account_id": p, "share": 1} for p in people], "k")
    c.process_payout_batch(job.job_id, 4)
    cancelled = c.cancel_payout_job(job.job_id)
    assert (cancelled.status, cancelled.cancelled, cancelled.paid_winners, cancelled.progress_percent) == (
        "cancelled", 6, 4, 100.0)
    assert sum(ledger.balance(p) for p in people) == 400
    account = c.get_account(pool)
    assert (account.balance, account.held, account.available) == (9600, 0, 9600)
    assert c.cancel_payout_job(job.job_id).cancelled == 0  # cancelling again changes nothing
    assert c.process_payout_batch(job.job_id).processed == 0
    with pytest.raises(errors.InvalidStateTransition):
        c.retry_failed_payout_entries(job.job_id)
    # before any payment, cancelling voids the hold
    job2 = c.create_payout_job("cancel-2", pool, 1000, 0, [{"account_id": p, "share": 1} for p in people], "k2")
    c.cancel_payout_job(job2.job_id)
    hold = c.get_hold(job2.hold_id or 0)
    assert (hold.status, hold.released_amount) == ("voided", 1000)
    assert c.get_account(pool).available == 9600


def test_a_draw_or_no_winners_completes_at_once(ledger: Ledger) -> None:
    c = ledger.client
    pool = ledger.funded(1000, kind="pool")
    a, b = winners(ledger, 2)
    for name, listed in (("none", []), ("draw", [{"account_id": a, "share": 0}, {"account_id": b, "share": 0}])):
        job = c.create_payout_job(name, pool, 5000, 500, listed, name)  # nothing moves: no funds needed
        assert (job.status, job.total_winners, job.platform_fee, job.payout_total, job.hold_id) == (
            "completed", 0, 0, 0, None)
        assert job.progress_percent == 100.0 and job.completed_at is not None
    assert ledger.balance(pool) == 1000


def test_a_share_worth_nothing_is_done_at_once(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(1000, kind="pool")
    a, b = winners(ledger, 2)
    job = c.create_payout_job("tiny", pool, 1, 0, [{"account_id": a, "share": 1}, {"account_id": b, "share": 1}], "k")
    assert (job.paid_winners, job.pending_winners, job.status) == (1, 1, "queued")
    assert drain(c, job.job_id).status == "completed"
    assert (ledger.balance(a), ledger.balance(b)) == (1, 0)


def test_a_frozen_pool_fails_the_job_until_retried(ledger: Ledger) -> None:
    c = ledger.client
    pool = ledger.funded(1000, kind="pool")
    people = winners(ledger, 3)
    job = c.create_payout_job("pool-frozen", pool, 300, 0, [{"account_id": p, "share": 1} for p in people], "k")
    c.set_account_status(pool, "frozen")
    failed = c.process_payout_batch(job.job_id)
    assert (failed.status, failed.processed) == ("failed", 0)
    assert failed.error is not None and failed.error.startswith("ACCOUNT_FROZEN")
    assert c.process_payout_batch(job.job_id).processed == 0
    c.set_account_status(pool, "active")
    assert c.retry_failed_payout_entries(job.job_id).status == "running"
    assert drain(c, job.job_id).status == "completed"
    assert ledger.balance(pool) == 700


def test_replay_returns_the_first_job_and_a_changed_request_is_refused(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    a, b = winners(ledger, 2)
    listed = [{"account_id": a, "share": 1}, {"account_id": b, "share": 1}]
    first = c.create_payout_job("replay", pool, 1000, 0, listed, "the-key")
    again = c.create_payout_job("replay", pool, 1000, 0, listed, "the-key")
    assert (again.replayed, again.job_id, again.created_at) == (True, first.job_id, first.created_at)
    before = snapshot(db_url)
    for changed in ({"total_pool": 999}, {"winners": listed[::-1]}, {"platform_fee_bps": 1}):
        args: dict[str, Any] = {"challenge_id": "replay", "pool_account_id": pool, "total_pool": 1000,
                                "platform_fee_bps": 0, "winners": listed, "idempotency_key": "the-key", **changed}
        with pytest.raises(errors.DuplicateRequest):
            c.create_payout_job(**args)
    # a second job for the same challenge, under another key
    with pytest.raises(errors.DuplicateRequest) as twice:
        c.create_payout_job("replay", pool, 1000, 0, listed, "another-key")
    assert twice.value.field == "challenge_id"
    assert snapshot(db_url) == before
    assert ledger.client.get_account(pool).held == 1000


def test_refusals_name_the_field_and_change_nothing(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(1000, kind="pool")
    usd = c.open_account("USD", "user_wallet").id
    frozen_pool = ledger.funded(1000, kind="pool")
    c.set_account_status(frozen_pool, "frozen")
    closed_pool = c.set_account_status(c.open_account("EUR", "pool").id, "closed").id
    fees = c.open_account("EUR", "fees").id
    a, b = winners(ledger, 2)
    ok = [{"account_id": a, "share": 1}]
    cases: list[tuple[type[errors.PgWalletError], str, dict[str, Any]]] = [
        (errors.InvalidRequest, "winners", {"winners": [ok[0], {"account_id": a, "share": 2}]}),
        (errors.InvalidRequest, "winners", {"winners": [ok[0], {"account_id": b, "amount": 2}]}),
        (errors.InvalidRequest, "winners", {"winners": [{"account_id": a, "share": -1}]}),
        (errors.InvalidRequest, "winners", {"winners": [{"account_id": pool, "share": 1}]}),
        (errors.InvalidRequest, "winners", {"winners": [{"account_id": fees, "share": 1}]}),
        (errors.InvalidRequest, "platform_fee_bps", {"platform_fee_bps": 10_001}),
        (errors.InvalidRequest, "fee_account_id", {"fee_account_id": pool}),
        (errors.InvalidRequest, "pool_account_id", {"pool_account_id": fees}),
        (errors.AccountNotFound, "winners", {"winners": [{"account_id": 10**15, "share": 1}]}),
        (errors.AccountNotFound, "pool_account_id", {"pool_account_id": 10**15}),
        (errors.AccountNotFound, "fee_account_id", {"fee_account_id": 10**15}),
        (errors.AccountFrozen, "pool_account_id", {"pool_account_id": frozen_pool}),
        (errors.AccountClosed, "pool_account_id", {"pool_account_id": closed_pool}),
        (errors.CurrencyMismatch, "winners", {"winners": [{"account_id": usd, "share": 1}]}),
        (errors.InsufficientFunds, "total_pool", {"total_pool": 1001}),
    ]
    before = snapshot(db_url)
    for expected, field, changed in cases:
        args: dict[str, Any] = {"challenge_id": "refused", "pool_account_id": pool, "total_pool": 1000,
                                "platform_fee_bps": 100, "winners": ok, "idempotency_key": "k", **changed}
        with pytest.raises(expected) as refused:
            c.create_payout_job(**args)
        assert refused.value.field == field, (changed, refused.value)
    for method in ("process_payout_batch", "retry_failed_payout_entries", "cancel_payout_job", "get_payout_job_status"):
        with pytest.raises(errors.PayoutJobNotFound) as missing:
            getattr(c, method)(10**12)
        assert missing.value.field == "job_id" and missing.value.http_status == 404
    assert snapshot(db_url) == before


def test_finished_jobs_refuse_retry_and_cancel(ledger: Ledger) -> None:
    c = ledger.client
    pool = ledger.funded(1000, kind="pool")
    (a,) = winners(ledger, 1)
    job = c.create_payout_job("done", pool, 100, 0, [{"account_id": a, "share": 1}], "k")
    drain(c, job.job_id)
    with pytest.raises(errors.InvalidStateTransition):
        c.cancel_payout_job(job.job_id)
    with pytest.raises(errors.InvalidStateTransition):
        c.retry_failed_payout_entries(job.job_id)


def test_a_hold_paid_in_parts(ledger: Ledger, db_url: str) -> None:
    """The core primitive under payouts: placed, paid in parts (refused credits alone), settled once;
    capture and void refuse it."""
    c = ledger.client
    pool = ledger.funded(1000, kind="pool")
    a, b, frozen = winners(ledger, 3)
    c.set_account_status(frozen, "frozen")
    with psycopg.connect(db_url, autocommit=True) as conn:
        def place(amount: int) -> int:
            row = conn.execute("select (pgwallet.place_parts_hold(%s, %s)).id", (pool, amount)).fetchone()
            assert row is not None
            return int(row[0])

        def parts(hold_id: int, credits: list[int], amounts: list[int], settle: bool = False) -> list[Any]:
            return conn.execute("select account_id, transfer_id is not null, refusal from pgwallet.pay_hold_parts("
                                "%s, nextval('pgwallet.operation_id_seq'), 'test', %s::bigint[], %s::bigint[], %s)",
                                (hold_id, credits, amounts, settle)).fetchall()

        hold = place(100)
        assert c.get_account(pool).held == 100
        with pytest.raises(errors.InvalidStateTransition):
            c.void_hold(hold, "void-it")
        with pytest.raises(errors.InvalidStateTransition):
            c.capture_hold(hold, "capture-it")
        other = c.place_hold(pool, b, 10, "ordinary").hold_id
        for hold_id, credits, amounts, state in ((other, [a], [1], "W0011"), (hold, [a], [101], "W0007"),
                                                 (hold, [a, a], [1, 1], "W0001"), (hold, [a], [0], "W0001"),
                                                 (10**12, [a], [1], "W0009")):
            with pytest.raises(psycopg.Error) as refused:
                parts(hold_id, credits, amounts)
            assert refused.value.sqlstate == state
        assert parts(hold, [b, 10**12, frozen], [30, 5, 5]) == [(b, True, None), (10**12, False, "ACCOUNT_NOT_FOUND"),
                                                                (frozen, False, "ACCOUNT_FROZEN")]
        assert (c.get_hold(hold).amount, c.get_hold(hold).status, c.get_account(pool).held) == (70, "open", 80)
        assert c.check_invariants() == []
        assert parts(hold, [a], [70]) == [(a, True, None)]  # nothing left: settled
        settled = c.get_hold(hold)
        assert (settled.status, settled.amount, settled.captured_amount, settled.released_amount) == (
            "captured", 100, 100, 0)
        with pytest.raises(psycopg.Error):
            parts(hold, [a], [1])
        second = place(50)
        parts(second, [a], [20])
        parts(second, [], [], settle=True)
        assert (c.get_hold(second).status, c.get_hold(second).captured_amount,
                c.get_hold(second).released_amount) == ("captured", 20, 30)
        third = place(10)
        parts(third, [], [], settle=True)
        assert (c.get_hold(third).status, c.get_hold(third).released_amount) == ("voided", 10)
    c.void_hold(other, "void-other")
    account = c.get_account(pool)
    assert (account.balance, account.held) == (1000 - 100 - 20, 0)
    assert (ledger.balance(a), ledger.balance(b)) == (90, 30)


def test_async_client_has_the_same_methods(ledger: Ledger, db_url: str) -> None:
    pool = ledger.funded(1000, kind="pool")
    a, b = winners(ledger, 2)

    async def run() -> tuple[PayoutJob, PayoutJob]:
        async with AsyncClient(db_url) as ac:
            job = await ac.create_payout_job("async", pool, 100, 0, [{"account_id": a, "share": 1},
                                                                    {"account_id": b, "share": 3}], "k")
            await ac.process_payout_batch(job.job_id)
            with pytest.raises(errors.PayoutJobNotFound):
                await ac.get_payout_job_status(10**12)
            return job, await ac.get_payout_job_status(job.job_id)

    created, done = asyncio.run(run())
    assert created.status == "queued" and done.status == "completed"
    assert (ledger.balance(a), ledger.balance(b)) == (25, 75)


def test_check_notices_a_winner_paid_twice_or_not_at_all(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(1000, kind="pool")
    a, b = winners(ledger, 2)
    job = c.create_payout_job("tamper", pool, 100, 0, [{"account_id": a, "share": 1}, {"account_id": b, "share": 1}],
                              "k")
    drain(c, job.job_id)
    assert c.check_invariants() == []
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("select id, transfer_id from pgwallet.payout_entries where job_id = %s and account_id = %s",
                           (job.job_id, a)).fetchone()
        assert row is not None
        # the entry forgets its payment: a worker would pay it again
        conn.execute("update pgwallet.payout_entries set status = 'pending', transfer_id = null where id = %s",
                     (row[0],))
        found = {v.invariant for v in c.check_invariants()}
        assert found == {"payout_paid_once"}
        conn.execute("update pgwallet.payout_entries set status = 'completed', transfer_id = %s where id = %s",
                     (row[1], row[0]))
    assert c.check_invariants() == []


def test_batches_count_themselves_apart_from_other_operations(ledger: Ledger) -> None:
    """Each batch that pays takes one operation id and one batch number, so between two batches
    (operations - batches) grows by the money movements that were not batches: here, one transfer."""
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    people = winners(ledger, 30)
    a, b = ledger.funded(100), ledger.funded(0)
    job = c.create_payout_job("clocks", pool, 300, 0, [{"account_id": p, "share": 1} for p in people], "k")
    first = c.process_payout_batch(job.job_id, 10)
    c.transfer(a, b, 1, "between-batches")
    second = c.process_payout_batch(job.job_id, 10)
    assert second.batches_seen - first.batches_seen == 1
    assert (second.operations_seen - first.operations_seen) - (second.batches_seen - first.batches_seen) == 1


def test_give_way_rests_only_while_other_operations_outpace_the_threshold(ledger: Ledger) -> None:
    """GiveWay's arithmetic on real batch results: busy when more than ``threshold`` other operations
    per second passed between two readings a window apart; its pause is ``ratio`` times the batch."""
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    job = c.create_payout_job("pace", pool, 10, 0, [{"account_id": p, "share": 1} for p in winners(ledger, 1)], "k")
    batch = c.process_payout_batch(job.job_id, 10)

    def at(operations: int, batches: int) -> PayoutBatch:
        return replace(batch, operations_seen=batch.operations_seen + operations,
                       batches_seen=batch.batches_seen + batches)

    pace = GiveWay(ratio=4, threshold=20, window=0.5)
    assert pace.pause_after(at(0, 0), 0.1, now=100.0) == 0  # the first reading only sets the baseline
    assert pace.pause_after(at(50, 40), 0.1, now=100.2) == 0  # within the window: no new reading
    assert pace.pause_after(at(60, 50), 0.1, now=101.0) == 0  # 60 operations, 50 of them batches: 10/s
    assert pace.pause_after(at(81, 51), 0.1, now=102.0) == 0  # exactly 20 others in 1 s: not above it
    assert not pace.busy and pace.rested == 0
    assert pace.pause_after(at(103, 52), 0.1, now=103.0) == pytest.approx(0.4)  # 21 others in 1 s: busy
    assert pace.busy and pace.rested == pytest.approx(0.4)
    assert pace.pause_after(at(103, 53), 0.2, now=103.1) == pytest.approx(0.8)  # busy until the next reading
    assert pace.pause_after(at(113, 61), 0.1, now=104.0) == 0 and not pace.busy  # 1 other in 1 s
    assert pace.rested == pytest.approx(1.2)
    off = GiveWay(ratio=0)
    assert off.pause_after(at(0, 0), 0.1, now=1.0) == 0 and off.pause_after(at(10**6, 1), 0.1, now=2.0) == 0


def test_monitoring_views_for_the_read_only_role(ledger: Ledger, db_url: str) -> None:
    from test_trust import login_url

    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    people = winners(ledger, 6)
    c.set_account_status(people[2], "frozen")
    ended = c.create_payout_job("watched", pool, 600, 0, [{"account_id": p, "share": 1} for p in people], "k1")
    drain(c, ended.job_id)
    waiting = c.create_payout_job("waiting", pool, 300, 0, [{"account_id": p, "share": 1} for p in people[:3]], "k2")
    with psycopg.connect(login_url(db_url, "pgwallet_readonly")) as ro:
        assert ro.execute("select job_id, status, total_winners, progress_percent::float "
                          "from pgwallet.payout_active_jobs").fetchall() == [(waiting.job_id, "queued", 3, 0.0)]
        assert ro.execute("select jobs_ended, jobs_completed, entries_paid, entries_failed, "
                          "success_rate_percent::float from pgwallet.payout_success_rate_24h").fetchone() == (
            1, 0, 5, 1, 83.33)
        assert ro.execute("select job_id, account_id, amount, error, attempts from pgwallet.payout_failed_entries"
                          ).fetchall() == [(ended.job_id, people[2], 100, "ACCOUNT_FROZEN", 1)]
        speed = ro.execute("select job_id, processed_winners, seconds, entries_per_second "
                           "from pgwallet.payout_processing_speed").fetchall()
        assert [(s[0], s[1]) for s in speed] == [(ended.job_id, 6)] and speed[0][2] >= 0
    with psycopg.connect(login_url(db_url, "pgwallet_app")) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("select * from pgwallet.payout_failed_entries")


def test_pause_stops_batches_until_resumed(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    people = winners(ledger, 5)
    c.set_account_status(people[0], "frozen")
    job = c.create_payout_job("paused", pool, 500, 0, [{"account_id": p, "share": 1} for p in people], "k")
    early = c.pause_payout_job(job.job_id)  # before any batch: resumes as queued
    assert (early.status, early.paused_at is not None) == ("paused", True)
    assert c.resume_payout_job(job.job_id).status == "queued"
    first = c.process_payout_batch(job.job_id, 2)
    assert (first.processed, first.status) == (2, "running")
    paused = c.pause_payout_job(job.job_id)
    assert (paused.status, paused.paid_winners, paused.failed_winners) == ("paused", 1, 1)
    assert c.pause_payout_job(job.job_id) == paused  # pausing again changes nothing
    before = snapshot(db_url)
    stalled = c.process_payout_batch(job.job_id, 500)
    assert (stalled.processed, stalled.status) == (0, "paused") and c.next_payout_job() is None
    assert snapshot(db_url) == before
    assert c.list_payout_jobs("paused")[0].job_id == job.job_id
    c.set_account_status(people[0], "active")
    retried = c.retry_failed_payout_entries(job.job_id)  # the retried entry waits for the resume too
    assert (retried.retried, retried.status, retried.pending_winners) == (1, "paused", 4)
    assert c.process_payout_batch(job.job_id).processed == 0
    resumed = c.resume_payout_job(job.job_id)
    assert (resumed.status, resumed.paused_at) == ("running", None)
    assert c.resume_payout_job(job.job_id) == resumed  # resuming a running job changes nothing
    done = drain(c, job.job_id)
    assert (done.status, done.paid_winners, done.paid_amount) == ("completed", 5, 500)
    assert [ledger.balance(p) for p in people] == [100] * 5


def test_pause_and_resume_refusals_change_nothing(ledger: Ledger, db_url: str) -> None:
    c = ledger.client
    pool = ledger.funded(10_000, kind="pool")
    people = winners(ledger, 2)
    done = c.create_payout_job("ended", pool, 200, 0, [{"account_id": p, "share": 1} for p in people], "k1")
    drain(c, done.job_id)
    cancelled = c.create_payout_job("gone", pool, 200, 0, [{"account_id": p, "share": 1} for p in people], "k2")
    c.pause_payout_job(cancelled.job_id)
    after_cancel = c.cancel_payout_job(cancelled.job_id)  # a paused job may be cancelled: its hold is released
    assert (after_cancel.status, after_cancel.cancelled, after_cancel.paused_at) == ("cancelled", 2, None)
    assert c.get_account(pool).held == 0
    before = snapshot(db_url)
    for call in (c.pause_payout_job, c.resume_payout_job):
        with pytest.raises(errors.PayoutJobNotFound) as missing:
            call(10**12)
        assert missing.value.field == "job_id"
        for ended in (done.job_id, cancelled.job_id):
            with pytest.raises(errors.InvalidStateTransition) as refused_:
                call(ended)
            assert refused_.value.field == "job_id"
        with pytest.raises(errors.InvalidRequest) as invalid:
            call(0)
        assert invalid.value.field == "job_id"
    assert snapshot(db_url) == before
