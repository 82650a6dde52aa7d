"""The durable job queue: enqueue once per key, leases, backoff, rescue, retry, cancel, retention, workers.

Every test ends with the ledger invariants checked by the ``client`` fixture's teardown.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pyapp import Client, errors
from pyapp.job_worker import JobWorker
from pyapp.jobs import Job


def sql(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


def set_backoff(url: str, base: str) -> None:
    sql(url, "update pgwallet.settings set value = %s where name = 'job_backoff_base'", base)


def make_due(url: str, job_id: int) -> None:
    """Skip the backoff wait: the job is due now (the schedule itself is asserted before)."""
    sql(url, "update pgwallet.jobs set run_after = now() where id = %s", job_id)


def test_enqueue_once_per_kind_and_key(client: Client) -> None:
    job = client.enqueue_job("test.echo", {"n": 1}, "k1")
    assert (job.status, job.attempts, job.max_attempts, job.replayed) == ("queued", 0, 3, False)
    again = client.enqueue_job("test.echo", {"n": 1}, "k1")
    assert again.job_id == job.job_id and again.replayed
    other_kind = client.enqueue_job("test.other", {"n": 1}, "k1")
    assert other_kind.job_id != job.job_id  # unique per kind
    with pytest.raises(errors.DuplicateRequest) as dup:
        client.enqueue_job("test.echo", {"n": 2}, "k1")
    assert dup.value.field == "idempotency_key"
    with pytest.raises(errors.InvalidRequest) as bad:
        client.enqueue_job("Bad Kind", {}, "k2")
    assert bad.value.field == "kind"
    assert client.get_job(job.job_id) == Job(**{**job.__dict__})
    with pytest.raises(errors.JobNotFound):
        client.get_job(10**12)


def test_fetch_leases_due_jobs_oldest_first_and_never_twice(client: Client, db_url: str) -> None:
    later = client.enqueue_job("test.echo", {}, "later", run_after=client.get_job(
        client.enqueue_job("test.echo", {}, "first").job_id).created_at + timedelta(hours=1))
    second = client.enqueue_job("test.echo", {}, "second")
    client.enqueue_job("test.other", {}, "other")
    taken = client.fetch_jobs("w1", ["test.echo"], 10, 60)
    assert [j.idempotency_key for j in taken] == ["first", "second"]
    assert all(j.status == "running" and j.attempts == 1 and j.locked_by == "w1" for j in taken)
    assert taken[0].locked_until is not None and taken[0].started_at is not None
    assert (taken[0].locked_until - taken[0].started_at) == timedelta(seconds=60)
    assert client.fetch_jobs("w2", ["test.echo"]) == []  # leased, or not due yet
    assert client.get_job(later.job_id).status == "queued"
    assert [j.kind for j in client.fetch_jobs("w2")] == ["test.other"]  # every kind
    # only the lease holder finishes a job
    with pytest.raises(errors.InvalidStateTransition) as lost:
        client.complete_job(second.job_id, "w2", {"x": 1})
    assert lost.value.field == "job_id"
    done = client.complete_job(second.job_id, "w1", {"x": 1})
    assert (done.status, done.result, done.locked_by, done.finished) == ("succeeded", {"x": 1}, None, True)
    with pytest.raises(errors.InvalidStateTransition):
        client.fail_job(second.job_id, "w1", "too late")


def test_backoff_is_2_4_8_seconds_by_default_and_the_last_error_is_kept(client: Client, db_url: str) -> None:
    job = client.enqueue_job("test.flaky", {}, "k", max_attempts=4)
    gaps = []
    for attempt in (1, 2, 3):
        (taken,) = client.fetch_jobs("w", ["test.flaky"])
        assert taken.attempts == attempt
        failed = client.fail_job(job.job_id, "w", f"boom {attempt}")
        assert (failed.status, failed.last_error, failed.locked_by) == ("queued", f"boom {attempt}", None)
        assert failed.updated_at is not None
        gaps.append(failed.run_after - failed.updated_at)  # the failure time to the next attempt
        assert client.fetch_jobs("w", ["test.flaky"]) == []  # not due during the backoff
        make_due(db_url, job.job_id)
    assert gaps == [timedelta(seconds=2), timedelta(seconds=4), timedelta(seconds=8)]
    (taken,) = client.fetch_jobs("w", ["test.flaky"])
    final = client.fail_job(job.job_id, "w", "boom 4")
    assert (final.status, final.attempts, final.last_error, final.finished) == ("failed", 4, "boom 4", True)
    assert client.fetch_jobs("w") == []


def test_a_final_failure_does_not_retry(client: Client) -> None:
    job = client.enqueue_job("test.flaky", {}, "k")
    client.fetch_jobs("w")
    failed = client.fail_job(job.job_id, "w", "INSUFFICIENT_FUNDS: no money", final=True)
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 1, "INSUFFICIENT_FUNDS: no money")


def test_expired_leases_are_rescued(client: Client, db_url: str) -> None:
    job = client.enqueue_job("test.slow", {}, "k", max_attempts=2)
    client.fetch_jobs("dead-worker", lease_seconds=1)
    assert client.rescue_expired_jobs() == 0  # the lease still runs
    time.sleep(1.1)
    assert client.rescue_expired_jobs() == 1
    rescued = client.get_job(job.job_id)
    assert (rescued.status, rescued.attempts, rescued.locked_by) == ("queued", 1, None)
    assert rescued.last_error == "lease expired (worker dead-worker)"
    with pytest.raises(errors.InvalidStateTransition):  # the dead worker's lease is gone
        client.complete_job(job.job_id, "dead-worker")
    client.fetch_jobs("another", lease_seconds=1)
    time.sleep(1.1)
    assert client.rescue_expired_jobs() == 1
    failed = client.get_job(job.job_id)
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 2, "lease expired (worker another)")


def test_retry_and_cancel(client: Client) -> None:
    job = client.enqueue_job("test.x", {}, "k", max_attempts=1)
    client.fetch_jobs("w")
    with pytest.raises(errors.InvalidStateTransition):
        client.retry_job(job.job_id)  # running
    assert client.fail_job(job.job_id, "w", "boom").status == "failed"
    retried = client.retry_job(job.job_id)
    assert (retried.status, retried.attempts, retried.last_error, retried.finished_at) == ("queued", 0, "boom", None)
    client.fetch_jobs("w")
    cancelled = client.cancel_job(job.job_id)  # running: the worker can no longer finish it
    assert (cancelled.status, cancelled.locked_by) == ("cancelled", None)
    with pytest.raises(errors.InvalidStateTransition):
        client.complete_job(job.job_id, "w")
    assert client.cancel_job(job.job_id) == cancelled  # again: unchanged
    assert client.retry_job(job.job_id).status == "queued"
    client.fetch_jobs("w")
    client.complete_job(job.job_id, "w")
    for call in (client.retry_job, client.cancel_job):
        with pytest.raises(errors.InvalidStateTransition):
            call(job.job_id)
    for call in (client.retry_job, client.cancel_job, client.get_job):
        with pytest.raises(errors.JobNotFound) as missing:
            call(10**12)
        assert missing.value.field == "job_id"


def test_list_jobs_filters_and_pages(client: Client) -> None:
    ids = [client.enqueue_job("test.list", {"i": i}, f"k{i}").job_id for i in range(5)]
    client.enqueue_job("test.other", {}, "o")
    client.fetch_jobs("w", ["test.list"], 2)
    listed = client.list_jobs(kind="test.list", limit=3)
    assert [j.job_id for j in listed] == ids[::-1][:3]
    assert [j.job_id for j in client.list_jobs(kind="test.list", before_id=listed[-1].job_id)] == ids[:2][::-1]
    assert {j.job_id for j in client.list_jobs(status="running")} == set(ids[:2])


def test_purge_keeps_succeeded_jobs_a_day_and_failed_ones_a_week(client: Client, db_url: str) -> None:
    def finished(key: str, status: str, ago: str) -> int:
        job = client.enqueue_job("test.purge", {}, key, max_attempts=1)
        client.fetch_jobs("w", ["test.purge"])
        if status == "succeeded":
            client.complete_job(job.job_id, "w")
        else:
            client.fail_job(job.job_id, "w", "boom")
        sql(db_url, "update pgwallet.jobs set finished_at = now() - %s::interval where id = %s", ago, job.job_id)
        return job.job_id

    old_ok, new_ok = finished("a", "succeeded", "25 hours"), finished("b", "succeeded", "23 hours")
    old_failed, new_failed = finished("c", "failed", "8 days"), finished("d", "failed", "6 days")
    queued = client.enqueue_job("test.purge", {}, "e").job_id
    sql(db_url, "update pgwallet.jobs set created_at = now() - interval '30 days' where id = %s", queued)
    assert client.purge_jobs(1) == 1
    assert client.purge_jobs(1000) == 1
    assert client.purge_jobs() == 0
    left = {j.job_id for j in client.list_jobs(kind="test.purge")}
    assert left == {new_ok, new_failed, queued} and not {old_ok, old_failed} & left
    assert client.enqueue_job("test.purge", {}, "a").job_id not in (old_ok,)  # a purged key is free again


def test_purge_keeps_at_most_the_newest_succeeded_jobs(client: Client, db_url: str) -> None:
    """The seed's two limits: 24 hours, and at most job_retention_succeeded_max (1000) succeeded jobs."""
    sql(db_url, "update pgwallet.settings set value = '3' where name = 'job_retention_succeeded_max'")
    done = []
    for n in range(5):
        job = client.enqueue_job("test.cap", {}, f"cap-{n}")
        client.fetch_jobs("w", ["test.cap"])
        client.complete_job(job.job_id, "w")
        sql(db_url, "update pgwallet.jobs set finished_at = now() - %s::interval where id = %s", f"{10 - n} minutes",
            job.job_id)
        done.append(job.job_id)
    failed = client.enqueue_job("test.cap", {}, "cap-failed", max_attempts=1).job_id
    client.fetch_jobs("w", ["test.cap"])
    client.fail_job(failed, "w", "boom")
    assert client.purge_jobs() == 2 and client.purge_jobs() == 0
    left = {j.job_id for j in client.list_jobs(kind="test.cap")}
    assert left == {*done[2:], failed}  # the three newest succeeded ones, and the failed one (its own week)


# -- the worker --------------------------------------------------------------------------------------


def run_until(worker: JobWorker, done: threading.Event, timeout: float = 20) -> None:
    thread = threading.Thread(target=worker.run)
    thread.start()
    finished = done.wait(timeout)
    worker.stop()
    thread.join(10)
    assert finished and not thread.is_alive()


def test_a_job_failing_twice_then_succeeding_runs_three_times_with_the_backoff(client: Client, db_url: str) -> None:
    set_backoff(db_url, "200 milliseconds")
    job = client.enqueue_job("test.flaky", {"fail": 2}, "k")
    runs: list[float] = []
    done = threading.Event()

    def flaky(_c: Client, j: Job, _worker: str) -> dict[str, Any]:
        runs.append(time.monotonic())
        if len(runs) <= j.payload["fail"]:
            raise RuntimeError(f"attempt {len(runs)} fails")
        return {"runs": len(runs)}

    seen: list[Job] = []

    def on_job(j: Job) -> None:
        seen.append(j)
        if j.finished:
            done.set()

    worker = JobWorker(db_url, kinds=["test.flaky"], handlers={"test.flaky": flaky}, poll_interval=0.02,
                       on_job=on_job)
    run_until(worker, done)
    final = client.get_job(job.job_id)
    assert (final.status, final.attempts, final.result) == ("succeeded", 3, {"runs": 3})
    assert final.last_error == "RuntimeError: attempt 2 fails"  # kept from the last failure
    assert [j.status for j in seen] == ["queued", "queued", "succeeded"]
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert 0.2 <= gaps[0] < 1.0 and 0.4 <= gaps[1] < 1.5, gaps
    assert [j.run_after - j.updated_at for j in seen[:2] if j.updated_at] == [timedelta(milliseconds=200),
                                                                             timedelta(milliseconds=400)]


def test_an_always_failing_job_ends_failed_with_its_last_error(client: Client, db_url: str) -> None:
    set_backoff(db_url, "50 milliseconds")
    job = client.enqueue_job("test.broken", {}, "k")
    done = threading.Event()

    def broken(_c: Client, j: Job, _worker: str) -> None:
        raise ValueError(f"broken on attempt {j.attempts}")

    worker = JobWorker(db_url, kinds=["test.broken"], handlers={"test.broken": broken}, poll_interval=0.02,
                       on_job=lambda j: j.finished and done.set())
    run_until(worker, done)
    final = client.get_job(job.job_id)
    assert (final.status, final.attempts, final.last_error) == ("failed", 3, "ValueError: broken on attempt 3")


def test_workers_share_jobs_each_run_once(client: Client, db_url: str) -> None:
    for i in range(120):
        client.enqueue_job("test.count", {"i": i}, f"k{i}")
    runs = Counter[int]()
    lock = threading.Lock()

    def count(_c: Client, j: Job, worker: str) -> dict[str, str]:
        with lock:
            runs[j.payload["i"]] += 1
        return {"by": worker}

    workers = [JobWorker(db_url, kinds=["test.count"], handlers={"test.count": count}) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        ran = list(pool.map(lambda w: w.run(once=True), workers))
    assert sum(ran) == 120 and set(runs.values()) == {1} and len(runs) == 120
    assert len([n for n in ran if n]) >= 2  # the work was shared
    assert {j.status for j in client.list_jobs(kind="test.count", limit=1000)} == {"succeeded"}


def test_worker_refuses_kinds_without_a_handler(db_url: str) -> None:
    with pytest.raises(errors.InvalidRequest) as bad:
        JobWorker(db_url, kinds=["nobody.handles.this"])
    assert bad.value.field == "kinds"
