"""Queue benchmark: create -> start -> complete cycles per second over many performers, interleaved with
pgbench's TPC-B-like reference run on the same server (R Q R Q ...), as bench/run.py does for transfers.

    .venv/bin/python bench/performer_queue.py            # 8 and 32 clients, 3 pairs of 10 s
    .venv/bin/python bench/performer_queue.py --quick    # 8 clients, 1 pair of 2 s

Each pgbench transaction of ``bench/queue_cycle.sql`` is one whole cycle (three calls, three commits):
``create_queue_item`` (the hold on a random user's wallet), ``start_item``, ``complete_item`` (the capture
to the performer, the fee to one collector). A client works through performers of its own, so each
performer's queue serves one client, like a performer working through one show; at most 64 clients.
The ratio is cycles/s over TPC-B-like tps of the run just before; latencies are per cycle (p50, p99 from
pgbench's per-transaction log). Results go to bench/results/queue.json. The server, the durability and
the CHECKPOINT before each run are bench/run.py's (imported, not copied).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import run as ledger_bench  # bench/run.py: server, database, pgbench runner, pairs and their ratios

from pyapp.embedded import EmbeddedServer, EmbeddedServerError
from pyapp.migrations import migrate
from pyapp.settings import plain_url

SCRIPT = "queue_cycle"
RESULTS_FILE = ledger_bench.BENCH_DIR / "results" / "queue.json"
MAX_CLIENTS = 64  # queue_cycle.sql splits the performers into 64 disjoint sets, one per client_id
FULL = {"seconds": 10, "pairs": 3, "clients": "8,32", "users": 20_000, "performers": 2_048}
QUICK = {"seconds": 2, "pairs": 1, "clients": "8", "users": 2_000, "performers": 640}


def load(url: str, users: int, performers: int) -> ledger_bench.Layout:
    """TOKEN accounts in bench/run.py's layout: users as its cards, performers as its payees, the fee
    collector as its collector; every performer gets a queue (20 % fee, at most 50 open items)."""
    ledger_bench.CURRENCY = "TOKEN"  # open_accounts opens accounts of this currency
    with psycopg.connect(url, autocommit=True) as conn:
        mint = ledger_bench.open_accounts(conn, "system", 1, "bench token mint")
        fees = ledger_bench.open_accounts(conn, "fees", 1, "bench platform fees")
        performer_first = ledger_bench.open_accounts(conn, "performer", performers)
        user_first = ledger_bench.open_accounts(conn, "user_wallet", users)
        ledger_bench.fund_cards(conn, mint, user_first, users)
        # the benchmark's owner stamps each wallet with its user, as open_account(..., owner) would one by one
        conn.execute("update pgwallet.accounts set owner = 'u' || id where id between %s and %s",
                     (user_first, user_first + users - 1))
        conn.execute("select count(pgwallet.configure_performer_queue(p, %s, 2000, 50)) "
                     "from generate_series(%s::bigint, %s::bigint) p",
                     (fees, performer_first, performer_first + performers - 1))
    return ledger_bench.Layout(system_id=mint, collector_id=fees, card_first=user_first, ncards=users,
                               payee_first=performer_first, npayees=performers)


def check(url: str, layout: ledger_bench.Layout) -> dict[str, Any]:
    """After the runs: the invariants hold, no item is left open, the fee collector holds every fee."""
    with psycopg.connect(url, autocommit=True) as conn:
        violations = conn.execute("select count(*) from pgwallet.check_invariants()").fetchone()
        items = conn.execute("select count(*) filter (where status = 'FINISHED'), "
                             "count(*) filter (where status in ('CREATED', 'STARTED')), "
                             "coalesce(sum(fee) filter (where status = 'FINISHED'), 0) "
                             "from pgwallet.queue_items").fetchone()
        fees = conn.execute("select balance from pgwallet.account_balances where id = %s",
                            (layout.collector_id,)).fetchone()
    assert violations is not None and items is not None and fees is not None
    return {"invariant_violations": violations[0], "finished_items": items[0], "open_items": items[1],
            "fees_paid": int(items[2]), "fee_collector_balance": int(fees[0])}


class Relay(threading.Thread):
    """With --events outbox: relay_queue_events in a loop beside the clients, as a deployment would run it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.relayed = url, threading.Event(), 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute("select pgwallet.relay_queue_events(5000)").fetchone()
                done = int(row[0]) if row else 0
                self.relayed += done
                if done < 5000:
                    self.stop.wait(0.05)


def benchmark(bench: ledger_bench.Pgbench, layout: ledger_bench.Layout, clients: Sequence[int], seconds: int,
              pairs: int, url: str, relay: Relay | None = None) -> list[ledger_bench.Pair]:
    done: list[ledger_bench.Pair] = []
    with psycopg.connect(url, autocommit=True) as conn:
        def run(script: str, c: int) -> ledger_bench.Run:
            conn.execute("checkpoint")
            if relay is not None and script == SCRIPT and not relay.is_alive():
                relay.start()
            return bench.run(script, c, seconds, layout)

        for c in clients:
            ledger_bench.say(f"\n--- {c} clients: TPC-B-like (R) and {SCRIPT} (Q), interleaved R Q R Q ...")
            for i in range(1, pairs + 1):
                ref = run(ledger_bench.REFERENCE, c)
                pair = ledger_bench.Pair(c, SCRIPT, ledger_bench.REFERENCE, i, ref, run(SCRIPT, c))
                done.append(pair)
                ledger_bench.report_pair(pair, pairs)
    return done


def summarize(pairs: list[ledger_bench.Pair], clients: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for c in clients:
        mine = [p for p in pairs if p.clients == c]
        p50, p99 = ledger_bench.pooled_percentiles(p.workload_run for p in mine)
        ref50, ref99 = ledger_bench.pooled_percentiles(p.baseline_run for p in mine)
        ratios = [p.ratio for p in mine]
        rows.append({"clients": c, "median_cycles_per_s": ledger_bench.median_or_nan(p.workload_run.tps for p in mine),
                     "median_tpcb_tps": ledger_bench.median_or_nan(p.baseline_run.tps for p in mine),
                     "median_ratio": ledger_bench.median_or_nan(ratios), "min_ratio": min(ratios),
                     "max_ratio": max(ratios), "cycle_p50_ms": p50, "cycle_p99_ms": p99,
                     "tpcb_p50_ms": ref50, "tpcb_p99_ms": ref99, "pairs": len(mine)})
    return rows


def print_summary(rows: list[dict[str, Any]], config: dict[str, Any]) -> None:
    f = ledger_bench.fmt
    ledger_bench.say("\n" + "=" * 108)
    ledger_bench.say(f"SUMMARY  queue cycles (create -> start -> complete) vs pgbench TPC-B-like (scale "
                     f"{ledger_bench.SCALE}), {config['pairs']} pair(s) of {config['seconds']} s, "
                     f"{config['performers']} performers, {config['users']} users, events {config['events']}")
    ledger_bench.say("ratio = cycles/s / TPC-B-like tps of the run just before; median [min..max] over the pairs")
    ledger_bench.say(f"{'clients':>7} {'cycles/s':>9} {'calls/s':>8} {'TPC-B tps':>10} {'ratio':>6} "
                     f"{'[min..max]':>13} {'cycle p50':>10} {'cycle p99':>10} {'TPC-B p50':>10} {'TPC-B p99':>10}")
    for r in rows:
        ledger_bench.say(
            f"{r['clients']:>7} {f(r['median_cycles_per_s']):>9} {f(3 * r['median_cycles_per_s']):>8} "
            f"{f(r['median_tpcb_tps']):>10} {f(r['median_ratio'], '.2f'):>6} "
            f"{'[' + f(r['min_ratio'], '.2f') + '..' + f(r['max_ratio'], '.2f') + ']':>13} "
            f"{f(r['cycle_p50_ms'], '.2f'):>7} ms {f(r['cycle_p99_ms'], '.2f'):>7} ms "
            f"{f(r['tpcb_p50_ms'], '.2f'):>7} ms {f(r['tpcb_p99_ms'], '.2f'):>7} ms")
    ledger_bench.say("=" * 108)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Queue cycles per second against pgbench's TPC-B-like script.")
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--clients", help=f"comma-separated client counts, each at most {MAX_CLIENTS}")
    parser.add_argument("--users", type=int)
    parser.add_argument("--performers", type=int, help="at least 64 (each client gets performers of its own)")
    parser.add_argument("--events", choices=("on", "outbox", "off"), default="on",
                        help="setting queue_events: notify in each transition (on, the default), store the events "
                             "for a relay that runs beside the clients (outbox), or none (off)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 clients, 1 pair of 2 s")
    parser.add_argument("--keep-server", action="store_true")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.client_counts = [int(part) for part in str(args.clients).split(",") if part.strip()]
    if not args.client_counts or not all(1 <= c <= MAX_CLIENTS for c in args.client_counts):
        parser.error(f"--clients must be 1 to {MAX_CLIENTS}")
    if args.performers < MAX_CLIENTS or args.users < 2 or args.seconds < 1 or args.pairs < 1:
        parser.error(f"--performers >= {MAX_CLIENTS}, --users >= 2, --seconds and --pairs >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    server: EmbeddedServer | None = None
    try:
        env_url = os.environ.get("DATABASE_URL")
        if env_url:
            admin_url, source = ledger_bench.url_with_dbname(plain_url(env_url), "postgres"), "DATABASE_URL"
        else:
            home = Path(os.environ.get("PGWALLET_BENCH_HOME") or ledger_bench.DEFAULT_HOME)
            ledger_bench.say(f"server: starting a private durable PostgreSQL in {home} ...")
            server = ledger_bench.start_server(home)
            admin_url, source = server.url() or "", f"private server in {home}"
        url = ledger_bench.url_with_dbname(admin_url, ledger_bench.BENCH_DB)
        exe = ledger_bench.find_pgbench()
        ledger_bench.recreate_database(admin_url)
        migrate(url)
        layout = load(url, args.users, args.performers)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("update pgwallet.settings set value = %s where name = 'queue_events'", (args.events,))
        with tempfile.TemporaryDirectory(prefix="pgwallet-bench-queue-") as tmp:
            bench = ledger_bench.Pgbench(exe, url, Path(tmp))
            bench.initialize(ledger_bench.SCALE)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("vacuum analyze")
                facts = ledger_bench.server_facts(conn)
            ledger_bench.say(f"loaded: {args.users} funded users, {args.performers} performers with a queue, "
                             f"fee collector {layout.collector_id}; {args.seconds} s runs, clients "
                             f"{args.client_counts}, queue events {args.events}, durable server ({source})")
            relay = Relay(url) if args.events == "outbox" else None
            pairs = benchmark(bench, layout, args.client_counts, args.seconds, args.pairs, url, relay)
            if relay is not None:
                relay.stop.set()
                relay.join()
                with psycopg.connect(url, autocommit=True) as conn:
                    left = conn.execute("select pgwallet.relay_queue_events(100000)").fetchone()
                ledger_bench.say(f"relay: {relay.relayed} events sent during the runs, {left[0] if left else 0} after")
        after = check(url, layout)
        config = {"seconds": args.seconds, "pairs": args.pairs, "clients": args.client_counts, "users": args.users,
                  "performers": args.performers, "quick": bool(args.quick), "events": args.events,
                  "server_source": source,
                  "server": facts, "script": f"bench/{SCRIPT}.sql"}
        rows = summarize(pairs, args.client_counts)
        print_summary(rows, config)
        ledger_bench.say(f"after the runs: {after}")
        report = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "config": config,
                  "summary": rows, "after": after, "pairs": [p.public() for p in pairs],
                  "elapsed_s": round(time.monotonic() - started, 1)}
        ledger_bench.RESULTS_FILE = RESULTS_FILE  # its writer (NaN as null, atomic replace), to our file
        ledger_bench.write_report(report)
        ledger_bench.say(f"written: {RESULTS_FILE.relative_to(ledger_bench.REPO_DIR)}; "
                         f"total time {report['elapsed_s']:.0f} s")
        ok = after["invariant_violations"] == 0 and after["open_items"] == 0 and (
            after["fees_paid"] == after["fee_collector_balance"])
        if not ok:
            print(f"bench: the ledger is not sound after the runs: {after}", file=sys.stderr)
        return 0 if ok and not any(math.isnan(r["median_ratio"]) for r in rows) else 1
    except (ledger_bench.BenchError, EmbeddedServerError, psycopg.Error) as exc:
        print(f"bench: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if server is not None and not args.keep_server:
            try:
                server.down()
            except EmbeddedServerError as exc:
                print(f"bench: could not stop the private server: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
