"""pgwallet HTTP benchmark: bar orders through ``pgwallet serve`` against the same calls made directly with
``AsyncClient``, same concurrency, interleaved pairs.

``.venv/bin/python bench/http_service.py [--seconds 10] [--pairs 3] [--concurrency 8] [--cards 10000]`` (``--quick``
for a smoke run; ``make bench-http``). A private durable server (or DATABASE_URL's), a fresh
``pgwallet_bench`` database with funded cards and bars (bench/cashless.py's loader), one ``pgwallet serve``
process (one uvicorn worker, an app-tier token). Each run keeps ``--concurrency`` orders in flight for
``--seconds``; D = direct (AsyncClient), H = HTTP (httpx to /v1/process_bar_order), run D H D H ...; the ratio
of a pair is H calls/s / D calls/s. The load generator shares the machine's cores with the server and the
service: absolute figures are for context, the ratio is what to compare. Written to bench/results/http.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import cashless
import httpx
import run as ledger_bench
from run import BenchError, say

from pyapp import AsyncClient, errors
from pyapp.embedded import EmbeddedServerError
from pyapp.http.tokens import token_hash
from pyapp.migrations import migrate
from pyapp.settings import plain_url

RESULTS_FILE = ledger_bench.BENCH_DIR / "results" / "http_service.json"
ITEMS = [{"sku": "beer", "name": "Beer", "quantity": 1, "unit_price": 450},
         {"sku": "water", "name": "Water", "quantity": 1, "unit_price": 200},
         {"sku": "crisps", "name": "Crisps", "quantity": 1, "unit_price": 250}]
TOKEN = "bench-http-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drive(call: Callable[[int, int], Awaitable[None]], layout: cashless.CashlessLayout, concurrency: int,
                seconds: float) -> tuple[float, int]:
    """``concurrency`` tasks calling ``call(card, bar)`` until ``seconds`` pass: (calls/s, failures)."""
    done, failed = 0, 0
    stop = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done, failed
        rng = random.Random(n)
        while time.monotonic() < stop:
            try:
                await call(layout.card_id_first + rng.randrange(layout.ncards), rng.randrange(layout.nbars))
                done += 1
            except Exception:
                failed += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done / (time.monotonic() - started), failed


async def pairs(url: str, base: str, layout: cashless.CashlessLayout, args: argparse.Namespace) -> list[dict[str, Any]]:
    client = AsyncClient(url, max_size=args.concurrency)
    http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                             limits=httpx.Limits(max_connections=args.concurrency), timeout=30)
    keys = itertools.count()

    async def direct(card: int, bar: int) -> None:
        await client.process_bar_order(card, ITEMS, 900, f"d-{uuid.uuid4()}", f"bench-bar-{bar}")

    async def over_http(card: int, bar: int) -> None:
        answer = await http.post("/v1/process_bar_order", json={
            "card_id": card, "items": ITEMS, "total_amount": 900, "client_request_id": f"h-{next(keys)}-{uuid.uuid4()}",
            "point_of_sale": f"bench-bar-{bar}"})
        if answer.status_code != 200:
            raise errors.ServerError(detail=answer.text)

    results = []
    try:
        await drive(direct, layout, args.concurrency, min(2.0, args.seconds))  # warm-ups, not measured
        await drive(over_http, layout, args.concurrency, min(2.0, args.seconds))
        for n in range(args.pairs):
            d, d_failed = await drive(direct, layout, args.concurrency, args.seconds)
            h, h_failed = await drive(over_http, layout, args.concurrency, args.seconds)
            load = os.getloadavg()[0]
            say(f"pair {n + 1}: direct {d:,.0f} calls/s, HTTP {h:,.0f} calls/s: {h / d:.2f}x "
                f"(failed {d_failed}/{h_failed}; load average {load:.2f})")
            results.append({"direct": d, "http": h, "ratio": h / d, "failed": [d_failed, h_failed], "load": load})
    finally:
        await client.close()
        await http.aclose()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 s, one pair, 1,000 cards")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.pairs, args.cards = 2, 1, 1_000
    server = None
    serve = None
    try:
        env_url = os.environ.get("DATABASE_URL")
        if env_url:
            admin_url = ledger_bench.url_with_dbname(plain_url(env_url), "postgres")
        else:
            home = Path(os.environ.get("PGWALLET_BENCH_HOME") or ledger_bench.DEFAULT_HOME)
            say(f"server: starting a private durable PostgreSQL in {home} ...")
            server = ledger_bench.start_server(home)
            admin_url = server.url() or ""
        url = ledger_bench.url_with_dbname(admin_url, ledger_bench.BENCH_DB)
        ledger_bench.recreate_database(admin_url)
        migrate(url)
        layout = cashless.load(url, args.cards, args.bars)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "PGWALLET_HTTP_TOKENS": f"bench:app:{token_hash(TOKEN)}"}
        serve = subprocess.Popen([sys.executable, "-m", "uvicorn", "pyapp.http:app", "--port", str(port),
                                  "--log-level", "warning", "--no-access-log"], env=env,
                                 stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                raise BenchError("pgwallet serve did not start")
            time.sleep(0.1)
        say(f"loaded {args.cards} cards, {args.bars} bars; serve on port {port}; concurrency {args.concurrency}, "
            f"{args.pairs} pairs of {args.seconds:g} s")
        results = asyncio.run(pairs(url, f"http://127.0.0.1:{port}", layout, args))
        median = statistics.median(r["ratio"] for r in results)
        say(f"HTTP / direct AsyncClient, bar orders at concurrency {args.concurrency}: median {median:.2f}x")
        RESULTS_FILE.parent.mkdir(exist_ok=True)
        RESULTS_FILE.write_text(json.dumps({"pairs": results, "median_ratio": median, "config": vars(args)},
                                           indent=2))
        return 0
    except (BenchError, EmbeddedServerError, OSError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(10)
        if server is not None:
            server.down()


if __name__ == "__main__":
    raise SystemExit(main())
