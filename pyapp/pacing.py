"""How a payout worker gives way to live traffic.

A payout is background work, and on a small server it competes with bar orders and transfers for the
same cores and the same WAL: at full speed it halves their throughput and triples their p99. So a
worker watches the ledger's operation counter: when other money moves (anything that takes an
operation id and is not a payout batch) faster than ``threshold`` operations per second, it rests
``ratio`` times as long as its last batch took before it starts the next one. With nothing else
moving it pays at full speed. The two counters come back with every batch (``payout_clocks`` in
sql/procedures/40_payouts.sql), so pacing costs no extra round trip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pyapp.payouts import PayoutBatch

DEFAULT_RATIO = 7.0  # under traffic each worker pays about 1/8 of the time
DEFAULT_THRESHOLD = 20.0  # other operations per second that count as traffic
WINDOW = 0.5  # seconds between two readings of the counters


@dataclass
class GiveWay:
    """The pause a worker takes after each batch. ``ratio=0`` turns pacing off."""

    ratio: float = DEFAULT_RATIO
    threshold: float = DEFAULT_THRESHOLD
    window: float = WINDOW
    busy: bool = False  # traffic was seen at the last reading
    rested: float = 0.0  # seconds of pauses so far
    _since: tuple[float, int, int] | None = field(default=None, repr=False)

    def pause_after(self, batch: PayoutBatch, seconds: float, now: float | None = None) -> float:
        """Seconds to rest after ``batch``, which took ``seconds``."""
        if self.ratio <= 0 or not batch.batches_seen:
            return 0.0
        now = time.monotonic() if now is None else now
        reading = (now, batch.operations_seen, batch.batches_seen)
        if self._since is None:
            self._since = reading
        elif now - self._since[0] >= self.window:
            then, operations, batches = self._since
            others = (batch.operations_seen - operations) - (batch.batches_seen - batches)
            self.busy = others / (now - then) > self.threshold
            self._since = reading
        pause = self.ratio * seconds if self.busy else 0.0
        self.rested += pause
        return pause
