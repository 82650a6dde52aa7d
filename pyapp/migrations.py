"""Schema migrations with yoyo, plus the procedures that are re-installed on every migrate.

Migrations (tables, constraints, roles) are numbered files in ``sql/migrations``; the procedures in
``sql/procedures`` are ``CREATE OR REPLACE`` and re-applied by yoyo's post-apply hook. yoyo runs that
hook only when a migration was pending, so :func:`migrate` runs it itself, every time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from yoyo import get_backend, read_migrations
from yoyo.exceptions import LockTimeout

from pyapp.client import error_from_psycopg
from pyapp.errors import DatabaseError
from pyapp.settings import plain_url, yoyo_url


def sql_dir() -> Path:
    """The SQL: ``$PGWALLET_SQL_DIR``, else the package's own (``pyapp.sql``: the repository's ``sql/`` in
    an editable install, the copy inside the wheel otherwise)."""
    override = os.environ.get("PGWALLET_SQL_DIR")
    if override:
        return Path(override)
    return Path(str(files("pyapp.sql")))


def migrations_dir() -> Path:
    return sql_dir() / "migrations"


@dataclass(frozen=True)
class MigrationState:
    id: str
    applied: bool


def primary_url(database_url: str) -> str:
    """A one-host URL of the server that takes writes: a multi-host URL (what clients use to follow a
    failover) is resolved to its current primary, which yoyo, reading one host only, can then migrate.
    Refuses a standby (read-only) with a DATABASE_ERROR that says so."""
    url = plain_url(database_url)
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(detail=f"not a PostgreSQL URL: {exc}") from exc
    several = "," in str(info.get("host") or "") or "," in str(info.get("port") or "")
    if several and not info.get("target_session_attrs"):
        info["target_session_attrs"] = "read-write"
    try:
        with psycopg.connect(make_conninfo("", **info), autocommit=True, connect_timeout=5) as conn:
            standby = conn.execute("select pg_catalog.pg_is_in_recovery()").fetchone()
            host, port = conn.info.host, conn.info.port
    except psycopg.Error as exc:
        raise error_from_psycopg(exc) from exc
    if standby and standby[0]:
        raise DatabaseError(detail=f"{host}:{port} is a standby (read-only): migrate the primary, or give a "
                                   "multi-host URL with target_session_attrs=read-write")
    info.update(host=host, port=str(port))
    info.pop("target_session_attrs", None)
    info.pop("hostaddr", None)
    auth = quote(str(info.pop("user", "")), safe="")
    if info.get("password"):
        auth += ":" + quote(str(info.pop("password")), safe="")
    dbname = quote(str(info.pop("dbname", "")), safe="")
    netloc = f"{auth}@" if auth else ""
    netloc += f"[{host}]" if ":" in host else host
    query = urlencode({k: v for k, v in info.items() if k not in ("host", "port") and v is not None})
    return f"postgresql://{netloc}:{port}/{dbname}" + (f"?{query}" if query else "")


LOCK_WAIT = float(os.environ.get("PGWALLET_MIGRATE_LOCK_WAIT", "10"))  # seconds before saying who may hold it


@contextmanager
def _backend(database_url: str, *, lock: bool = True) -> Iterator[tuple[Any, Any]]:
    """yoyo's backend on the primary, under its lock; database errors come out as pgwallet errors, not
    tracebacks. A lock that stays taken (a killed ``yoyo apply`` leaves one) is a DATABASE_ERROR that says
    how to break it."""
    try:
        backend = get_backend(yoyo_url(primary_url(database_url)))
    except psycopg.Error as exc:
        raise error_from_psycopg(exc) from exc
    try:
        migrations = read_migrations(str(migrations_dir()))
        if not lock:
            yield backend, migrations
            return
        with backend.lock(timeout=LOCK_WAIT):
            yield backend, migrations
    except LockTimeout as exc:
        raise DatabaseError(detail=f"yoyo's migration lock is still taken after {LOCK_WAIT:g} s: another migration "
                                   "is running, or a killed one left it; when none runs: pgwallet migrate "
                                   "--break-lock", retryable=True) from exc
    except psycopg.Error as exc:
        raise error_from_psycopg(exc) from exc
    finally:
        backend.connection.close()


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations, then re-install the procedures; return the ids applied."""
    with _backend(database_url) as (backend, migrations):
        pending = backend.to_apply(migrations)
        backend.apply_migrations_only(pending)
        backend.run_post_apply(migrations)
        return [m.id for m in pending]


def rollback(database_url: str, *, all_migrations: bool = False) -> list[str]:
    """Roll back the latest applied migration (or all of them); return the ids rolled back.

    The procedures follow the schema: those of the newer code would fail on the older tables (a column
    that is gone), so every pgwallet function goes with the rollback, and each call is then NOT_MIGRATED
    naming both versions until ``pgwallet migrate`` (of this code, or of the code that matches the schema)
    installs them again."""
    with _backend(database_url) as (backend, migrations):
        applied = backend.to_rollback(migrations)
        chosen = list(applied) if all_migrations else list(applied)[:1]
        backend.rollback_migrations(migrations.__class__(chosen))
        if chosen:
            _drop_procedures(backend.connection)
        return [m.id for m in chosen]


def _drop_procedures(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.execute("""
            do $$
            declare
                f regprocedure;
            begin
                if pg_catalog.to_regnamespace('pgwallet') is null then
                    return;
                end if;
                -- the procedures' functions, not the migrations' own (the queue guard of 0004)
                for f in select p.oid::regprocedure from pg_catalog.pg_proc p
                         where p.pronamespace = 'pgwallet'::regnamespace and p.proname <> 'guard_queue_hold' loop
                    execute pg_catalog.format('drop routine if exists %s cascade', f);
                end loop;
            end
            $$""")
    conn.commit()


def break_lock(database_url: str) -> None:
    """Remove yoyo's migration lock (left by a killed migration). Only when no migration runs."""
    with _backend(database_url, lock=False) as (backend, _):
        backend.break_lock()


def latest_migration() -> str:
    """The newest migration this code ships (what it expects the database to be at)."""
    return sorted(p.stem for p in migrations_dir().glob("*.sql") if not p.stem.endswith(".rollback"))[-1]


def status(database_url: str) -> list[MigrationState]:
    """Every migration, in order, and whether it is applied."""
    with _backend(database_url, lock=False) as (backend, migrations):
        pending = {m.id for m in backend.to_apply(migrations)}
        return [MigrationState(m.id, m.id not in pending) for m in migrations]
