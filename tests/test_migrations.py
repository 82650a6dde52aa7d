"""Migrations: up, all the way down, up again gives the same schema; plain yoyo installs procedures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Server

from pyapp import migrations
from pyapp.embedded import find_bindir
from pyapp.settings import yoyo_url


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[str]:
    name = f"pgwallet_empty_{id(pg_server) % 10_000}"
    janitor = pg_server.janitor(name)
    janitor.drop()
    janitor.init()
    try:
        yield pg_server.url(name)
    finally:
        janitor.drop()


def schema_dump(url: str) -> str:
    bindir = find_bindir()
    pg_dump = str(bindir / "pg_dump") if bindir else "pg_dump"
    out = subprocess.run([pg_dump, "--schema-only", "--no-comments", "--dbname", url],
                         check=True, capture_output=True, text=True).stdout
    # pg_dump marks each dump with a random restrict token: not part of the schema
    noise = ("-- Dumped", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in out.splitlines() if not line.startswith(noise))


def functions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "select proname from pg_proc where pronamespace = 'pgwallet'::regnamespace")}


#: every migration, in order (each domain adds its own file)
ALL = sorted(p.name.removesuffix(".sql") for p in migrations.migrations_dir().glob("[0-9]*.sql")
             if not p.name.endswith(".rollback.sql"))


def test_up_down_up_gives_an_identical_schema(empty_db: str) -> None:
    assert ALL[:2] == ["0001_schema_and_roles", "0002_ledger"]
    assert migrations.migrate(empty_db) == ALL
    first = schema_dump(empty_db)
    assert "CREATE FUNCTION pgwallet.transfer" in first
    assert migrations.rollback(empty_db) == [ALL[-1]]
    assert [s.applied for s in migrations.status(empty_db)] == [True] * (len(ALL) - 1) + [False]
    assert migrations.rollback(empty_db, all_migrations=True) == ALL[-2::-1]
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("select count(*) from pg_namespace where nspname = 'pgwallet'").fetchone() == (0,)
    assert migrations.migrate(empty_db) == ALL
    assert schema_dump(empty_db) == first


def test_migrate_reinstalls_procedures_even_when_nothing_is_pending(empty_db: str) -> None:
    migrations.migrate(empty_db)
    with psycopg.connect(empty_db) as conn:
        conn.execute("drop function pgwallet.get_hold(bigint)")
    assert "get_hold" not in functions(empty_db)
    assert migrations.migrate(empty_db) == []
    assert "get_hold" in functions(empty_db)


def test_plain_yoyo_apply_installs_the_procedures(empty_db: str) -> None:
    yoyo = Path(sys.executable).parent / "yoyo"
    # as documented: DATABASE_URL set (the checkout's yoyo.ini reads it), the URL in yoyo's psycopg 3 form
    subprocess.run([str(yoyo), "apply", "--batch", "--database", yoyo_url(empty_db),
                    str(migrations.migrations_dir())], check=True, capture_output=True, text=True,
                   env={**os.environ, "DATABASE_URL": yoyo_url(empty_db)})
    assert {"transfer", "place_hold", "check_invariants"} <= functions(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("select count(*) from pgwallet.check_invariants()").fetchone() == (0,)
