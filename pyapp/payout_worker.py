"""The payout worker: pays queued payout jobs, batch after batch, until it is stopped.

Each batch is one call of ``pgwallet.process_payout_batch``, one transaction: a worker killed at any
moment (even ``kill -9`` in the middle of a batch) leaves that batch rolled back, its entries still
pending, and the next worker pays them; none is paid twice. New jobs wake the worker through
``LISTEN pgwallet_payouts`` (``create_payout_job`` and ``retry_failed_payout_entries`` notify); it
also polls every ``poll_interval`` seconds, in case a notification was missed (a reconnect, a
connection pooler that does not pass them on). ``stop()`` (or SIGTERM / Ctrl-C through
``install_signal_handlers``) lets the current batch finish, then returns.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import psycopg
from psycopg.conninfo import make_conninfo

from pyapp.client import Client
from pyapp.errors import DatabaseError, PgWalletError
from pyapp.payouts import PayoutBatch
from pyapp.settings import plain_url

CHANNEL = "pgwallet_payouts"
log = logging.getLogger("pgwallet.payouts")


class PayoutWorker:
    """``PayoutWorker(url).run()``: pays every job with work left; ``once=True`` returns when none is left.

    ``on_batch`` sees every batch's result (the CLI draws its progress bars from it). ``job_id`` keeps
    the worker on that one job (the demo, tests): it returns once the job has nothing pending.
    """

    def __init__(self, url: str, *, batch_size: int = 500, poll_interval: float = 2.0,
                 on_batch: Callable[[PayoutBatch], None] | None = None, job_id: int | None = None) -> None:
        #: seen in pg_stat_activity.application_name (DBAs see which process holds which connection)
        self.application_name = f"pgwallet payout worker {os.getpid()}"
        self.url = make_conninfo(plain_url(url), application_name=self.application_name)
        self.job_id = job_id
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.on_batch = on_batch
        self.client = Client(self.url, min_size=1, max_size=1)
        self._stop = threading.Event()
        self._listener: psycopg.Connection[tuple[object, ...]] | None = None

    # -- stopping -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current batch, then leave ``run``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM and SIGINT (Ctrl-C) stop the worker after its current batch (main thread only).
        Returns a function that puts the previous handlers back."""
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping after the current batch", signal.Signals(signum).name)
            self.stop()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    # -- the loop -----------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        """Pay batches until stopped (or, with ``once``, until no job has work left); return the
        number of entries processed (paid or failed)."""
        processed = 0
        try:
            self.client.open(wait=True)
            while not self.stopping:
                try:
                    job_id = self.job_id if self.job_id is not None else self.client.next_payout_job()
                    if job_id is None:
                        if once:
                            break
                        self._wait_for_work()
                        continue
                    batch = self.client.process_payout_batch(job_id, self.batch_size)
                except DatabaseError as exc:  # connection lost, server restarting, serialization failure
                    log.warning("database unavailable (%s): retrying in %.1f s", exc, self.poll_interval)
                    self._stop.wait(self.poll_interval)
                    continue
                except PgWalletError as exc:  # refused by a rule: log it, do not hammer the database
                    log.warning("batch refused: %s", exc)
                    if self.job_id is not None:
                        raise
                    self._stop.wait(self.poll_interval)
                    continue
                processed += batch.processed
                if self.on_batch is not None:
                    self.on_batch(batch)
                if batch.processed == 0:
                    if self.job_id is not None:
                        break
                    self._stop.wait(0.05)  # a job that just finished elsewhere: no busy loop
        finally:
            self._close_listener()
            self.client.close()
        return processed

    def _wait_for_work(self) -> None:
        """Sleep until a job is announced, the poll interval passes, or the worker is stopped."""
        deadline = time.monotonic() + self.poll_interval
        try:
            listener = self._listen()
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                # short slices: a stop request is seen within a quarter of a second
                for _ in listener.notifies(timeout=min(left, 0.25), stop_after=1):
                    return
        except psycopg.Error as exc:
            log.warning("LISTEN failed (%s): polling", exc)
            self._close_listener()
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def _listen(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            self._listener.execute(f"listen {CHANNEL}")
        return self._listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
