"""kill -9 of the postmaster under mixed load (transfers, bar orders, holds and their captures), restart,
ten rounds: every acknowledged movement is there once, every in-doubt one is settled by its replay, the
invariants hold."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from faults.cluster import Cluster
from faults.conftest import make_database
from faults.load import Festival, Figures, MixedLoad, settle

pytestmark = pytest.mark.faults

ROUNDS = 10


def test_kill_9_of_the_server_loses_and_duplicates_nothing(base: Path) -> None:
    primary = Cluster.init(base, "primary")
    primary.start()
    try:
        url = make_database(primary)
        festival = Festival(url)
        total = Figures()
        for n in range(ROUNDS):
            load = MixedLoad(url, festival, f"crash{n}")
            load.start()
            time.sleep(1.5)
            primary.kill9()  # mid-load: calls in flight lose their answers
            load.stop()
            primary.start()  # crash recovery
            figures = settle(url, load)
            print(figures.line(f"crash round {n + 1}"))
            assert (figures.lost, figures.duplicated) == (0, 0)
            total.add(figures)
        print(total.line("crash, all rounds"))
        assert total.acknowledged > 0 and total.in_doubt > 0  # the rounds did hit calls in flight
    finally:
        primary.stop()
