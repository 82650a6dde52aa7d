"""What every worker shares: stopping after the current unit of work, signals, and waiting for work on a
``LISTEN`` channel with a poll interval as a fallback (a missed notification, a pooler that drops them).

:class:`pyapp.payout_worker.PayoutWorker` and :class:`pyapp.job_worker.JobWorker` build on it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import psycopg


class ListeningWorker:
    """``stop()`` (or SIGTERM / Ctrl-C through ``install_signal_handlers``) lets the current unit of work
    finish; ``_wait_for_work()`` sleeps until ``channel`` is notified, the poll interval passes, or a stop."""

    channel: str = ""
    unit: str = "unit of work"  # for the log: "batch", "job"

    def __init__(self, url: str, poll_interval: float, log: logging.Logger) -> None:
        self.url = url
        self.poll_interval = poll_interval
        self.log = log
        self._stop = threading.Event()
        self._listener: psycopg.Connection[tuple[object, ...]] | None = None

    def stop(self) -> None:
        """Finish the current unit of work, then leave ``run``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM and SIGINT (Ctrl-C) stop the worker after its current unit of work (main thread only).
        Returns a function that puts the previous handlers back."""
        def handler(signum: int, _frame: FrameType | None) -> None:
            self.log.info("signal %s: stopping after the current %s", signal.Signals(signum).name, self.unit)
            self.stop()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    def _wait_for_work(self) -> None:
        """Sleep until work is announced, the poll interval passes, or the worker is stopped."""
        deadline = time.monotonic() + self.poll_interval
        try:
            listener = self._listen()
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                # short slices: a stop request is seen within a quarter of a second
                for _ in listener.notifies(timeout=min(left, 0.25), stop_after=1):
                    return
        except psycopg.Error as exc:
            self.log.warning("LISTEN failed (%s): polling", exc)
            self._close_listener()
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def _listen(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            self._listener.execute(f"listen {self.channel}")
        return self._listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
