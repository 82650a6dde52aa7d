"""The fault suites (``make test-faults``): real clusters on disk, killed and failed over. Each suite prints
its figures (rounds, acknowledged, lost, duplicated, in doubt and how each was resolved)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.cluster import Cluster, workdir
from pyapp import migrations


@pytest.fixture
def base() -> Iterator[Path]:
    folder = workdir("pgwallet-faults-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_database(cluster: Cluster, name: str = "pgwallet") -> str:
    cluster.sql(f"create database {name}")
    url = cluster.url(name)
    migrations.migrate(url)
    return url
