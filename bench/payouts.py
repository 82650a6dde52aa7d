"""pgwallet payout benchmark: job creation time, payout throughput with two workers, and the p99 latency
of bar-order-like transfers while a payout runs.

Run ``.venv/bin/python bench/payouts.py`` (``--quick`` for a smoke run of about a minute). It reuses
bench/run.py (server, pgbench runner, account loading) and writes ``bench/results/payouts.json``.

What it measures, on a durable server (the private one of bench/run.py, or ``$DATABASE_URL``'s):

1. **Creation**: ``client.create_payout_job`` (the real call: Python checks, one round trip) for 10,000
   winners (``--create-runs`` times, median) and for 100,000 winners (3 times); each job is cancelled
   right after (which releases its hold). Goals: under 100 ms and under 1 s.
2. **Throughput**, interleaved with pgbench's TPC-B-like reference (R P R P ..., ``--pairs`` pairs): P
   creates a job for ``--winners`` winners (1,000,000 by default) and ``--workers`` workers (threads,
   each a ``PayoutWorker`` on its own connection) pay it in batches of ``--batch-size``. Reported:
   entries per second and seconds for the whole job; the ratio to the reference run's tps is printed
   for context. Goals: at least 50,000 entries/s; 1,000,000 winners in under 60 s.
3. **Latency**, interleaved (A B A B ...): A runs bench/transfer_distinct.sql (bar-order-like transfers
   between cards that are not winners) with ``--clients`` clients for ``--seconds``; B runs the same
   while the workers pay a job. Reported: p99 of each run from pgbench's per-transaction log and the
   ratio p99(B) / p99(A). Goal: within 2x.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import run as ledger_bench
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pyapp import Client
from pyapp.embedded import EmbeddedServer, EmbeddedServerError
from pyapp.errors import PgWalletError
from pyapp.migrations import migrate
from pyapp.payout_worker import PayoutWorker
from pyapp.settings import plain_url

BENCH_DB = "pgwallet_bench_payouts"
RESULTS_FILE = ledger_bench.BENCH_DIR / "results" / "payouts.json"
CREATE_GOALS_MS = {10_000: 100.0, 100_000: 1000.0}
THROUGHPUT_GOAL = 50_000.0  # entries per second
MILLION_GOAL_S = 60.0
P99_GOAL = 2.0
FULL: dict[str, Any] = {"winners": 1_000_000, "pairs": 3, "seconds": 10, "create_runs": 7}
QUICK: dict[str, Any] = {"winners": 100_000, "pairs": 1, "seconds": 3, "create_runs": 3}
say = ledger_bench.say


def recreate_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        ident = sql.Identifier(BENCH_DB)
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(ident))
        conn.execute(sql.SQL("create database {}").format(ident))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class PayoutBench:
    def __init__(self, url: str, layout: ledger_bench.Layout, winners: list[int], pool: int, workers: int,
                 batch_size: int) -> None:
        self.url = url
        self.layout = layout
        self.winners = winners
        self.pool = pool
        self.workers = workers
        self.batch_size = batch_size
        self.client = Client(url, max_size=2)

    def create(self, count: int) -> tuple[int, float]:
        """Create a job for the first ``count`` winners; return its id and the call's seconds."""
        listed = [{"account_id": a, "share": 1 + i % 3} for i, a in enumerate(self.winners[:count])]
        tag = uuid.uuid4().hex
        started = time.perf_counter()
        job = self.client.create_payout_job(f"bench-{tag}", self.pool, 100 * count, 250, listed, tag)
        return job.job_id, time.perf_counter() - started

    def start_workers(self, job_id: int) -> tuple[list[PayoutWorker], list[threading.Thread], list[int]]:
        workers = [PayoutWorker(self.url, batch_size=self.batch_size, job_id=job_id) for _ in range(self.workers)]
        counts = [0] * len(workers)

        def work(i: int) -> None:
            counts[i] = workers[i].run()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
        for t in threads:
            t.start()
        return workers, threads, counts

    def pay(self, job_id: int) -> tuple[int, float, float]:
        """Pay the job with the workers; return entries processed, seconds, and seconds the workers
        rested giving way to other money movements (none is expected: nothing else runs)."""
        started = time.perf_counter()
        workers, threads, counts = self.start_workers(job_id)
        for t in threads:
            t.join()
        return sum(counts), time.perf_counter() - started, sum(w.pacing.rested for w in workers)


def creation(pb: PayoutBench, runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for count, goal in CREATE_GOALS_MS.items():
        if count > len(pb.winners):
            continue
        times = []
        for _ in range(runs if count <= 10_000 else 3):
            job_id, seconds = pb.create(count)
            times.append(seconds * 1000)
            pb.client.cancel_payout_job(job_id)
        results[str(count)] = {"runs_ms": [round(t, 1) for t in times], "median_ms": round(median(times), 1),
                               "goal_ms": goal, "pass": median(times) < goal}
        say(f"create {count:>7,} winners: median {median(times):7.1f} ms (runs {', '.join(f'{t:.0f}' for t in times)})"
            f"  goal < {goal:.0f} ms: {verdict(median(times) < goal)}")
    return results


def throughput(pb: PayoutBench, bench: ledger_bench.Pgbench, pairs: int, seconds: int, conn: Any) -> dict[str, Any]:
    rows = []
    for i in range(1, pairs + 1):
        conn.execute("checkpoint")
        ref = bench.run(ledger_bench.REFERENCE, 2, seconds, pb.layout)
        job_id, created = pb.create(len(pb.winners))
        conn.execute("checkpoint")
        processed, paid_s, rested = pb.pay(job_id)
        status = pb.client.get_payout_job_status(job_id)
        rate = processed / paid_s
        rows.append({"pair": i, "reference_tps": ref.tps, "winners": len(pb.winners), "create_s": round(created, 3),
                     "pay_s": round(paid_s, 2), "entries_per_s": round(rate), "status": status.status,
                     "rested_s": round(rested, 2),
                     "ratio_to_reference": round(rate / ref.tps, 2) if ref.tps else None})
        say(f"pair {i}/{pairs}: R {ref.tps:8.0f} tps | P {len(pb.winners):,} winners created in {created:.2f} s, "
            f"paid in {paid_s:.2f} s = {rate:,.0f} entries/s ({status.status}; workers rested {rested:.1f} s); "
            f"ratio {rate / ref.tps:.1f}")
    rates = [r["entries_per_s"] for r in rows]
    pays = [r["pay_s"] for r in rows]
    return {"pairs": rows, "median_entries_per_s": median(rates), "median_pay_s": median(pays),
            "goal_entries_per_s": THROUGHPUT_GOAL, "pass": median(rates) >= THROUGHPUT_GOAL,
            "million_goal_s": MILLION_GOAL_S,
            "million_pass": (median(pays) < MILLION_GOAL_S) if len(pb.winners) >= 1_000_000 else None}


def latency(pb: PayoutBench, bench: ledger_bench.Pgbench, pairs: int, seconds: int, clients: int,
            conn: Any) -> dict[str, Any]:
    rows = []
    for i in range(1, pairs + 1):
        conn.execute("checkpoint")
        alone = bench.run(ledger_bench.DISTINCT, clients, seconds, pb.layout)
        job_id, _ = pb.create(len(pb.winners))
        conn.execute("checkpoint")
        workers, threads, counts = pb.start_workers(job_id)
        time.sleep(0.5)  # the workers are paying batches back to back
        during = bench.run(ledger_bench.DISTINCT, clients, seconds, pb.layout)
        paid_during = pb.client.get_payout_job_status(job_id).paid_winners
        rested = sum(w.pacing.rested for w in workers)
        for w in workers:
            w.stop()
        for t in threads:
            t.join()
        if not pb.client.get_payout_job_status(job_id).finished:
            pb.client.cancel_payout_job(job_id)
        ratio = (during.p99_ms or math.nan) / (alone.p99_ms or math.nan)
        rows.append({"pair": i, "alone_tps": alone.tps, "alone_p50_ms": alone.p50_ms, "alone_p99_ms": alone.p99_ms,
                     "during_tps": during.tps, "during_p50_ms": during.p50_ms, "during_p99_ms": during.p99_ms,
                     "p99_ratio": round(ratio, 2), "paid_during_run": paid_during,
                     "rested_s": round(rested, 2), "processed": sum(counts)})
        say(f"pair {i}/{pairs}: alone {alone.tps:6.0f} tps p50 {ledger_bench.fmt(alone.p50_ms, '.2f')} ms "
            f"p99 {ledger_bench.fmt(alone.p99_ms, '.2f')} ms | during a payout {during.tps:6.0f} tps p50 "
            f"{ledger_bench.fmt(during.p50_ms, '.2f')} ms p99 {ledger_bench.fmt(during.p99_ms, '.2f')} ms "
            f"({paid_during:,} winners paid meanwhile, workers rested {rested:.1f} s); p99 ratio {ratio:.2f}")
    ratios = [r["p99_ratio"] for r in rows]
    return {"pairs": rows, "clients": clients, "median_p99_ratio": median(ratios), "goal": P99_GOAL,
            "pass": median(ratios) <= P99_GOAL}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 100,000 winners, 1 pair of 3 s")
    parser.add_argument("--winners", type=int, help="winners of the throughput and latency jobs (default 1,000,000)")
    parser.add_argument("--pairs", type=int, help="interleaved pairs (default 3)")
    parser.add_argument("--seconds", type=int, help="length of each pgbench run (default 10)")
    parser.add_argument("--create-runs", type=int, help="creations of a 10,000-winner job (default 7)")
    parser.add_argument("--workers", type=int, default=2, help="payout workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=2000, help="entries per batch (default 2000)")
    parser.add_argument("--clients", type=int, default=4, help="pgbench clients of the latency runs (default 4)")
    parser.add_argument("--keep-server", action="store_true", help="leave the private server running")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    server: EmbeddedServer | None = None
    try:
        env_url = os.environ.get("DATABASE_URL")
        if env_url:
            admin_url = plain_url(env_url)
            if conninfo_to_dict(admin_url).get("dbname") == BENCH_DB:
                admin_url = ledger_bench.url_with_dbname(admin_url, "postgres")
            say("server: the one of DATABASE_URL")
        else:
            home = Path(os.environ.get("PGWALLET_BENCH_HOME") or ledger_bench.DEFAULT_HOME)
            say(f"server: starting a private durable PostgreSQL in {home} ...")
            server = ledger_bench.start_server(home)
            url = server.url()
            if url is None:
                raise ledger_bench.BenchError(f"the private server in {home} did not come up")
            admin_url = url
        bench_url = ledger_bench.url_with_dbname(admin_url, BENCH_DB)
        t0 = time.monotonic()
        recreate_database(admin_url)
        migrate(bench_url)
        layout = ledger_bench.load(bench_url, 10_000, 100)
        with psycopg.connect(bench_url, autocommit=True) as conn:
            first = ledger_bench.open_accounts(conn, "user_wallet", args.winners, "bench winner")
            winners = list(range(first, first + args.winners))
            pool = ledger_bench.open_accounts(conn, "pool", 1, "bench prize pool")
            conn.execute("select pgwallet.fund_account(%s, %s, %s, 'bench-pool')", (layout.system_id, pool, 10**17))
        with tempfile.TemporaryDirectory(prefix="pgwallet-bench-payouts-") as tmp:
            bench = ledger_bench.Pgbench(ledger_bench.find_pgbench(), bench_url, Path(tmp))
            bench.initialize(ledger_bench.SCALE)
            with psycopg.connect(bench_url, autocommit=True) as conn:
                conn.execute("vacuum analyze")
                facts = ledger_bench.server_facts(conn)
                say(f"database {BENCH_DB}: {args.winners:,} winner wallets, a pool, 10,000 funded cards; loaded in "
                    f"{time.monotonic() - t0:.1f} s; {args.workers} workers, batches of {args.batch_size}")
                pb = PayoutBench(bench_url, layout, winners, pool, args.workers, args.batch_size)
                say("\n--- creation (the client call, median of repeated runs)")
                created = creation(pb, args.create_runs)
                say(f"\n--- throughput: TPC-B-like at 2 clients (R) and a {args.winners:,}-winner payout (P), R P R P")
                paid = throughput(pb, bench, args.pairs, args.seconds, conn)
                say(f"\n--- latency: {ledger_bench.DISTINCT} at {args.clients} clients alone (A) and while a payout "
                    "runs (B), A B A B")
                lat = latency(pb, bench, args.pairs, args.seconds, args.clients, conn)
                pb.client.close()
                violations = conn.execute("select count(*) from pgwallet.check_invariants()").fetchone()
        report = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "config": {**vars(args), "server": facts},
            "creation": created, "throughput": paid, "latency": lat,
            "invariant_violations": violations[0] if violations else None,
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        say("\n=== summary")
        for count, r in created.items():
            say(f"create {int(count):,} winners: median {r['median_ms']:.1f} ms (goal < {r['goal_ms']:.0f}): "
                f"{verdict(r['pass'])}")
        say(f"throughput with {args.workers} workers: median {paid['median_entries_per_s']:,.0f} entries/s "
            f"(goal >= {THROUGHPUT_GOAL:,.0f}): {verdict(paid['pass'])}")
        if paid["million_pass"] is not None:
            say(f"{args.winners:,} winners paid in a median {paid['median_pay_s']:.1f} s (goal < 60 s): "
                f"{verdict(paid['million_pass'])}")
        say(f"transfer p99 during a payout / alone: median {lat['median_p99_ratio']:.2f}x (goal <= 2x): "
            f"{verdict(lat['pass'])}")
        say(f"invariant violations after the run: {report['invariant_violations']}")
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        say(f"written: {RESULTS_FILE.relative_to(ledger_bench.REPO_DIR)}; total time {report['elapsed_s']:.0f} s")
        return 0
    except (ledger_bench.BenchError, EmbeddedServerError, psycopg.Error, PgWalletError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if server is not None and not args.keep_server:
            server.down()


if __name__ == "__main__":
    sys.exit(main())
