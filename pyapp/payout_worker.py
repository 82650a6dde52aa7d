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
import time
from collections.abc import Callable

from psycopg.conninfo import make_conninfo

from pyapp.client import Client
from pyapp.errors import DatabaseError, PgWalletError, SerializationFailure
from pyapp.pacing import DEFAULT_RATIO, GiveWay
from pyapp.payouts import PayoutBatch
from pyapp.settings import plain_url
from pyapp.worker import ListeningWorker

CHANNEL = "pgwallet_payouts"
log = logging.getLogger("pgwallet.payouts")


class PayoutWorker(ListeningWorker):
    """``PayoutWorker(url).run()``: pays every job with work left; ``once=True`` returns when none is left.

    ``on_batch`` sees every batch's result (the CLI draws its progress bars from it). ``job_id`` keeps
    the worker on that one job (the demo, tests): it returns once the job has nothing pending.
    """

    channel = CHANNEL
    unit = "batch"

    def __init__(self, url: str, *, batch_size: int = 500, poll_interval: float = 2.0,
                 on_batch: Callable[[PayoutBatch], None] | None = None, job_id: int | None = None,
                 give_way: float = DEFAULT_RATIO) -> None:
        #: seen in pg_stat_activity.application_name (DBAs see which process holds which connection)
        self.application_name = f"pgwallet payout worker {os.getpid()}"
        super().__init__(make_conninfo(plain_url(url), application_name=self.application_name), poll_interval, log)
        self.job_id = job_id
        self.batch_size = batch_size
        self.on_batch = on_batch
        #: pauses between batches while other money moves (pyapp.pacing); ``give_way=0`` never pauses
        self.pacing = GiveWay(ratio=give_way)
        self.client = Client(self.url, min_size=1, max_size=1)

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
                    started = time.monotonic()
                    batch = self.client.process_payout_batch(job_id, self.batch_size)
                except SerializationFailure as exc:  # rolled back to break a lock cycle: try again now
                    log.info("batch rolled back (%s): retrying", exc)
                    continue
                except DatabaseError as exc:  # connection lost, server restarting
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
                pause = self.pacing.pause_after(batch, time.monotonic() - started) if batch.processed else 0.0
                if pause:
                    self._stop.wait(pause)
                if batch.processed == 0:
                    if self.job_id is not None:
                        break
                    self._stop.wait(0.05)  # a job that just finished elsewhere: no busy loop
        finally:
            self._close_listener()
            self.client.close()
        return processed
