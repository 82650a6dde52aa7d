"""Mixed money movements under faults, with the books kept client-side: every call is recorded as
acknowledged (its answer came back), refused (a rule), not sent, or in doubt. After the fault, every
in-doubt call is replayed with its key, and the database is compared with the books: each acknowledged or
resolved movement present exactly once, nothing else."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pyapp import AsyncClient, Client, errors

ITEMS = [{"sku": "beer", "name": "Beer", "quantity": 1, "unit_price": 450}]


@dataclass
class Call:
    kind: str  # transfer | bar_order | hold | capture
    key: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""  # ok | refused | not_sent | in_doubt
    result: Any = None


@dataclass
class Figures:
    rounds: int = 0
    acknowledged: int = 0
    refused: int = 0
    not_sent: int = 0
    in_doubt: int = 0
    in_doubt_committed: int = 0  # the replay answered replayed=True
    in_doubt_not_committed: int = 0  # the replay ran it now
    lost: int = 0
    duplicated: int = 0

    def add(self, other: Figures) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def line(self, what: str) -> str:
        return (f"{what}: rounds {self.rounds}, acknowledged {self.acknowledged}, lost {self.lost}, duplicated "
                f"{self.duplicated}, in doubt {self.in_doubt} (resolved by replay: {self.in_doubt_committed} had "
                f"committed, {self.in_doubt_not_committed} had not), not sent {self.not_sent}, refused {self.refused}")


class Festival:
    """The accounts the load moves money between, in one database."""

    def __init__(self, url: str, wallets: int = 40) -> None:
        self.url = url
        with Client(url, max_size=2) as c:
            world = c.open_system_account("EUR", "system", name="world").id
            self.wallets = [c.open_account("EUR", "user_wallet").id for _ in range(wallets)]
            for n, wallet in enumerate(self.wallets):
                c.fund_account(world, wallet, 1_000_000, f"fund-{n}")
            self.bar = c.create_bar("main", "Main bar").code
            self.cards = [c.issue_card(f"04FA{n:04d}").card_id for n in range(wallets)]
            webhook = c
            for n, card in enumerate(self.cards):
                webhook.process_stripe_recharge(card, 50_000, f"cs_fault_{n}")
            self.shop = c.open_account("EUR", "merchant").id


class MixedLoad:
    """``workers`` threads, each with its own client, moving money until ``stop()``."""

    def __init__(self, url: str, festival: Festival, tag: str, workers: int = 6, retries: int = 0) -> None:
        self.url, self.festival, self.tag, self.workers, self.retries = url, festival, tag, workers, retries
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._holds: list[Call] = []
        self.escaped: list[BaseException] = []  # anything but a pgwallet error out of a client: a defect

    def start(self) -> None:
        targets: list[Any] = [lambda n=n: self._work(n) for n in range(self.workers)]
        # and the asyncio client beside them, on its own loop: every failure it sees must be a pgwallet error
        targets.append(lambda: asyncio.run(self._work_async()))
        for target in targets:
            thread = threading.Thread(target=self._guarded, args=(target,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guarded(self, target: Any) -> None:
        try:
            target()
        except Exception as exc:  # a driver exception that escaped pgwallet's hierarchy
            self.escaped.append(exc)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _work(self, worker: int) -> None:
        rng = random.Random(f"{self.tag}-{worker}")
        counter = itertools.count()
        f = self.festival
        client = Client(self.url, max_size=1, timeout=2, connect_timeout=2, retries=self.retries)
        try:
            while not self._stop.is_set():
                n = next(counter)
                key = f"{self.tag}-{worker}-{n}"
                pick = rng.random()
                if pick < 0.4:
                    a, b = rng.sample(f.wallets, 2)
                    call = Call("transfer", key, (a, b, rng.randint(1, 500), key))
                elif pick < 0.75:
                    call = Call("bar_order", key, (rng.choice(f.cards), ITEMS, 450, key, f.bar))
                elif pick < 0.9 or not self._holds:
                    call = Call("hold", key, (rng.choice(f.wallets), f.shop, rng.randint(1, 300), key))
                else:
                    with self._lock:
                        placed = self._holds.pop(rng.randrange(len(self._holds)))
                    call = Call("capture", key, (placed.result.hold_id, key))
                self._send(client, call)
                if call.kind == "hold" and call.outcome == "ok":
                    with self._lock:
                        self._holds.append(call)
                if call.outcome == "not_sent":
                    time.sleep(0.05)
        finally:
            client.close()

    async def _work_async(self) -> None:
        rng = random.Random(f"{self.tag}-async")
        f = self.festival
        client = AsyncClient(self.url, max_size=2, timeout=2, connect_timeout=2)  # opens on its first call
        try:
            await self._transfers_async(client, rng, f)
        finally:
            await client.close()

    async def _transfers_async(self, client: AsyncClient, rng: random.Random, f: Festival) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            key = f"{self.tag}-async-{n}"
            a, b = rng.sample(f.wallets, 2)
            call = Call("transfer", key, (a, b, rng.randint(1, 500), key))
            try:
                call.result = await client.transfer(*call.args)
                call.outcome = "ok"
            except errors.OutcomeUnknown:
                call.outcome = "in_doubt"
            except (errors.DatabaseError, errors.SerializationFailure):
                call.outcome = "not_sent"
                await asyncio.sleep(0.05)
            except errors.PgWalletError:
                call.outcome = "refused"
            with self._lock:
                self.calls.append(call)

    @staticmethod
    def method(client: Client, kind: str) -> Any:
        return {"transfer": client.transfer, "bar_order": client.process_bar_order, "hold": client.place_hold,
                "capture": client.capture_hold}[kind]

    def _send(self, client: Client, call: Call) -> None:
        try:
            call.result = self.method(client, call.kind)(*call.args, **call.kwargs)
            call.outcome = "ok"
        except errors.OutcomeUnknown:
            call.outcome = "in_doubt"
        except (errors.DatabaseError, errors.SerializationFailure):
            call.outcome = "not_sent"
        except errors.PgWalletError:
            call.outcome = "refused"
        with self._lock:
            self.calls.append(call)


def settle(url: str, load: MixedLoad) -> Figures:
    """Replay every in-doubt call with its key, then compare the database with the books."""
    assert load.escaped == [], load.escaped
    figures = Figures(rounds=1)
    counts = Counter(c.outcome for c in load.calls)
    figures.acknowledged, figures.refused = counts["ok"], counts["refused"]
    figures.not_sent, figures.in_doubt = counts["not_sent"], counts["in_doubt"]
    with Client(url, max_size=2, retries=20, timeout=5) as client:
        for call in load.calls:
            if call.outcome != "in_doubt":
                continue
            try:
                replay = load.method(client, call.kind)(*call.args, **call.kwargs)
            except errors.PgWalletError:
                # refused now (funds moved meanwhile): it had not committed, and it never will
                figures.in_doubt_not_committed += 1
                call.outcome = "refused"
                continue
            if replay.replayed:
                figures.in_doubt_committed += 1
            else:
                figures.in_doubt_not_committed += 1
            call.outcome, call.result = "ok", replay
        violations = client.check_invariants()
    assert violations == [], violations
    done = [c for c in load.calls if c.outcome == "ok"]
    with psycopg.connect(url, autocommit=True) as conn:
        # every movement the books hold is in the database, once: its key row and its own rows
        for kind, scope in (("transfer", "transfer"), ("bar_order", "bar_order"), ("hold", "place_hold"),
                            ("capture", "capture_hold")):
            keys = [c.key for c in done if c.kind == kind]
            row = conn.execute("select count(*) from pgwallet.idempotency_keys where scope = %s and key = any(%s)",
                               (scope, keys)).fetchone()
            present = int(row[0]) if row else 0
            figures.lost += len(keys) - present
            row = conn.execute("select count(*) from pgwallet.idempotency_keys where scope = %s and key like %s",
                               (scope, f"{load.tag}-%")).fetchone()
            figures.duplicated += (int(row[0]) if row else 0) - present
        transfer_ids = [t for c in done if c.kind == "transfer" for t in c.result.transfer_ids]
        row = conn.execute("select count(*) from pgwallet.transfers where id = any(%s)", (transfer_ids,)).fetchone()
        figures.lost += len(transfer_ids) - (int(row[0]) if row else 0)
        orders = [c.result.order_id for c in done if c.kind == "bar_order"]
        row = conn.execute("select count(*) from pgwallet.bar_orders where id = any(%s)", (orders,)).fetchone()
        present = int(row[0]) if row else 0
        figures.lost += len(orders) - present
        row = conn.execute("select count(*) from pgwallet.bar_orders where client_request_id like %s",
                           (f"{load.tag}-%",)).fetchone()
        # rows beyond the acknowledged ones that are there (a lost order is counted as lost, not as -1 duplicate)
        figures.duplicated += (int(row[0]) if row else 0) - present
    return figures
