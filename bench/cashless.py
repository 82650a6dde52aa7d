"""pgwallet cashless benchmark: bar orders of three items against pgbench's TPC-B-like script.

``.venv/bin/python bench/cashless.py [--seconds 10] [--pairs 3] [--clients 8,32] [--cards 100000]``
(``--quick`` for a smoke run). It reuses bench/run.py (server, pgbench runner, percentiles) and loads
``--cards`` funded cards and ``--bars`` bars into a fresh ``pgwallet_bench`` database, then, per client count:

* block 1:  R M  R M ...    R = TPC-B-like, M = bench/bar_order_many_bars.sql (a random bar of --bars)
* block 2:  M O  M O ...    O = bench/bar_order_one_bar.sql (every terminal on one bar)

One unmeasured warm-up run of R, M and O comes first (printed). Ratios: M tps / R tps of the run just before
(targets 1.0x at 8 clients, 2.0x at 32) and O tps / M tps of the same round (target 0.9x: one bar's revenue
must not be a hot row). Medians over the pairs, p50/p99 from pgbench's per-transaction logs, written to
bench/results/cashless.json. Exit code 0 whatever the ratios; 1 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
import run as ledger_bench
from psycopg.conninfo import conninfo_to_dict
from run import BenchError, Pair, Pgbench, Run, fmt, median_or_nan, say

from pyapp.embedded import EmbeddedServer, EmbeddedServerError
from pyapp.migrations import migrate
from pyapp.settings import plain_url

RESULTS_FILE = ledger_bench.BENCH_DIR / "results" / "cashless.json"
MANY = "bar_order_many_bars"
ONE = "bar_order_one_bar"
REFERENCE = ledger_bench.REFERENCE
ORDER_TARGETS = {8: 1.0, 32: 2.0}
ONE_BAR_TARGET = 0.9
FULL = {"seconds": 10, "pairs": 3, "clients": "8,32", "cards": 100_000}
QUICK = {"seconds": 2, "pairs": 1, "clients": "8", "cards": 2_000}


@dataclass(frozen=True)
class CashlessLayout(ledger_bench.Layout):
    """The loaded cards (contiguous card ids) and bars, passed to the scripts with -D."""

    card_id_first: int = 0
    nbars: int = 0

    def defines(self) -> list[str]:
        values = {"card_first": self.card_id_first, "ncards": self.ncards, "nbars": self.nbars}
        return [arg for name, value in values.items() for arg in ("-D", f"{name}={value}")]


def load(url: str, ncards: int, nbars: int) -> CashlessLayout:
    """Card accounts opened and funded as bench/run.py does, then one cards row each (bulk, as the owner),
    and ``nbars`` bars through pgwallet.create_bar."""
    with psycopg.connect(url, autocommit=True) as conn:
        system_id = ledger_bench.open_accounts(conn, "system", 1, "bench funding source")
        account_first = ledger_bench.open_accounts(conn, "card", ncards)
        ledger_bench.fund_cards(conn, system_id, account_first, ncards)
        row = conn.execute(
            "insert into pgwallet.cards (uid, account_id, currency) "
            "select 'BENCH' || g, g, 'EUR' from generate_series(%s::bigint, %s::bigint) g "
            "returning id", (account_first, account_first + ncards - 1)).fetchall()
        ids = sorted(r[0] for r in row)
        if ids != list(range(ids[0], ids[0] + ncards)):
            raise BenchError("card ids are not contiguous")
        conn.execute("select pgwallet.create_bar('bench-bar-' || g, 'Bench bar ' || g) "
                     "from generate_series(0, %s - 1) g", (nbars,))
    return CashlessLayout(system_id=system_id, collector_id=0, card_first=account_first, ncards=ncards,
                          payee_first=0, npayees=0, card_id_first=ids[0], nbars=nbars)


def benchmark(bench: Pgbench, layout: CashlessLayout, clients: Sequence[int], seconds: int, pairs: int,
              url: str) -> list[Pair]:
    results: list[Pair] = []
    with psycopg.connect(url, autocommit=True) as conn:

        def run(script: str, c: int) -> Run:
            conn.execute("checkpoint")
            return bench.run(script, c, seconds, layout)

        def record(pair: Pair) -> None:
            results.append(pair)
            ledger_bench.report_pair(pair, pairs)

        # A fresh load leaves work behind (hint bits, pruning, cold caches) that the first run of each
        # script would pay; one unmeasured run of each, printed, keeps it out of the pairs.
        for script in (REFERENCE, MANY, ONE):
            warm = run(script, clients[0])
            say(f"  warm-up (not counted): {script} {warm.tps:.1f} tps at {clients[0]} clients")
        for c in clients:
            say(f"\n--- {c} clients: block 1, TPC-B-like (R) and {MANY} (M), interleaved R M R M ...")
            for i in range(1, pairs + 1):
                ref = run(REFERENCE, c)
                record(Pair(c, MANY, REFERENCE, i, ref, run(MANY, c)))
            say(f"--- {c} clients: block 2, {MANY} (M) and {ONE} (O), interleaved M O M O ...")
            for i in range(1, pairs + 1):
                many = run(MANY, c)
                record(Pair(c, ONE, MANY, i, many, run(ONE, c)))
    return results


def summarize(pairs: list[Pair], clients: Sequence[int]) -> dict[str, Any]:
    rows, targets = [], []
    for c in clients:
        for workload, baseline in ((MANY, REFERENCE), (ONE, MANY)):
            chosen = [p for p in pairs if p.clients == c and p.workload == workload and p.baseline == baseline]
            ratios = [p.ratio for p in chosen]
            latencies = sorted(v for p in chosen for v in p.workload_run.latencies_us)
            row = {"clients": c, "workload": workload, "baseline": baseline,
                   "median_tps": median_or_nan(p.workload_run.tps for p in chosen),
                   "median_baseline_tps": median_or_nan(p.baseline_run.tps for p in chosen),
                   "median_ratio": median_or_nan(ratios), "ratios": ratios,
                   "p50_ms": ledger_bench.ms(ledger_bench.percentile(latencies, 50)),
                   "p99_ms": ledger_bench.ms(ledger_bench.percentile(latencies, 99))}
            rows.append(row)
            goal = ORDER_TARGETS.get(c) if workload == MANY else ONE_BAR_TARGET
            if goal is not None:
                measured = row["median_ratio"]
                targets.append({"name": f"{workload} / {baseline} at {c} clients", "target": goal,
                                "measured": measured, "status": "PASS" if measured >= goal else "MISS"})
    return {"summary": rows, "targets": targets, "pairs": [p.public() for p in pairs]}


def print_summary(report: dict[str, Any]) -> None:
    cfg = report["config"]
    say("\n" + "=" * 100)
    say(f"SUMMARY  bar orders (3 items) vs pgbench TPC-B-like, {cfg['pairs']} pair(s) of {cfg['seconds']} s, "
        f"{cfg['cards']} cards, {cfg['bars']} bars")
    say(f"{'clients':>7}  {'workload':<22} {'vs':<22} {'median tps':>10} {'base tps':>9} {'ratio':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7}")
    for row in report["summary"]:
        say(f"{row['clients']:>7}  {row['workload']:<22} {row['baseline']:<22} {fmt(row['median_tps']):>10} "
            f"{fmt(row['median_baseline_tps']):>9} {fmt(row['median_ratio'], '.2f'):>6} "
            f"{fmt(row['p50_ms'], '.2f'):>7} {fmt(row['p99_ms'], '.2f'):>7}")
    say("TARGETS (medians of the ratios)")
    for t in report["targets"]:
        say(f"  {t['name']:<50} >= {t['target']:.1f}x   measured {fmt(t['measured'], '.2f')}x   {t['status']}")
    say("=" * 100)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark cashless bar orders against TPC-B-like (ratios).")
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--clients", help="comma-separated client counts (default 8,32)")
    parser.add_argument("--cards", type=int, help="funded cards (default 100000)")
    parser.add_argument("--bars", type=int, default=64, help="bars of the many-bars workload (default 64)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 pair, 8 clients, 2000 cards")
    parser.add_argument("--keep-server", action="store_true")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.client_counts = [int(x) for x in str(args.clients).split(",") if x.strip()]
    if args.seconds < 1 or args.pairs < 1 or args.cards < 1 or args.bars < 1 or not args.client_counts:
        parser.error("--seconds, --pairs, --cards, --bars and --clients must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    server: EmbeddedServer | None = None
    try:
        env_url = os.environ.get("DATABASE_URL")
        if env_url:
            admin_url = plain_url(env_url)
            if conninfo_to_dict(admin_url).get("dbname") == ledger_bench.BENCH_DB:
                admin_url = ledger_bench.url_with_dbname(admin_url, "postgres")
        else:
            home = Path(os.environ.get("PGWALLET_BENCH_HOME") or ledger_bench.DEFAULT_HOME)
            say(f"server: starting a private durable PostgreSQL in {home} ...")
            server = ledger_bench.start_server(home)
            url = server.url()
            if url is None:
                raise BenchError(f"the private server in {home} did not come up")
            admin_url = url
        bench_url = ledger_bench.url_with_dbname(admin_url, ledger_bench.BENCH_DB)
        t0 = time.monotonic()
        ledger_bench.recreate_database(admin_url)
        migrate(bench_url)
        layout = load(bench_url, args.cards, args.bars)
        with tempfile.TemporaryDirectory(prefix="pgwallet-bench-") as tmp:
            bench = Pgbench(ledger_bench.find_pgbench(), bench_url, Path(tmp))
            bench.initialize(ledger_bench.SCALE)
            with psycopg.connect(bench_url, autocommit=True) as conn:
                conn.execute("vacuum analyze")
                facts = ledger_bench.server_facts(conn)
            say(f"loaded {args.cards} funded cards and {args.bars} bars in {time.monotonic() - t0:.1f} s; "
                f"runs of {args.seconds} s, {args.pairs} pair(s), clients {args.client_counts}")
            pairs = benchmark(bench, layout, args.client_counts, args.seconds, args.pairs, bench_url)
        report = summarize(pairs, args.client_counts)
        report["config"] = {"seconds": args.seconds, "pairs": args.pairs, "clients": args.client_counts,
                            "cards": args.cards, "bars": args.bars, "quick": bool(args.quick), "server": facts,
                            "layout": asdict(layout)}
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        print_summary(report)
        ledger_bench.RESULTS_FILE = RESULTS_FILE  # write_report writes to the module's RESULTS_FILE
        ledger_bench.write_report(report)
        say(f"written: {RESULTS_FILE.relative_to(ledger_bench.REPO_DIR)}; total time {report['elapsed_s']:.0f} s")
        return 0
    except (BenchError, EmbeddedServerError, psycopg.Error) as exc:
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
