"""Connection settings both clients share, and what to say when a database cannot be reached.

A pool that cannot connect only says "timed out"; the caller needs to know whether the password, the
database name, the port or the network is wrong, and on which host. :func:`unreachable` makes one direct
connection attempt to find out, and says whether trying again later may help.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pyapp.errors import DatabaseError, NotMigrated

DEFAULT_STATEMENT_TIMEOUT = 30.0  # seconds; PGWALLET_STATEMENT_TIMEOUT overrides it, 0 switches it off
DEFAULT_CONNECT_TIMEOUT = 5.0

# SQLSTATEs of a refusal at connect time that no retry mends (psycopg has them only for some errors)
_AUTHENTICATION = {"28000", "28P01"}
_UNKNOWN_DATABASE = {"3D000"}


@dataclass(frozen=True)
class Timeouts:
    """``statement``: seconds a call may run before the server cancels it (None: no limit); ``connect``:
    seconds to open a connection."""

    statement: float | None
    connect: float

    @classmethod
    def resolve(cls, statement: float | bool | None, connect: float | None) -> Timeouts:
        """``statement=True`` (the default) means ``$PGWALLET_STATEMENT_TIMEOUT`` or 30 s; 0 or None none."""
        if statement is True:
            env = os.environ.get("PGWALLET_STATEMENT_TIMEOUT")
            statement = float(env) if env else DEFAULT_STATEMENT_TIMEOUT
        chosen = float(statement) if statement else None
        return cls(chosen if chosen and chosen > 0 else None, float(connect or DEFAULT_CONNECT_TIMEOUT))

    @property
    def statement_ms(self) -> int | None:
        return None if self.statement is None else max(1, int(self.statement * 1000))


def where(url: str) -> str:
    """``host:port`` (every host of a multi-host URL) for messages."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "the database"
    hosts = str(info.get("host") or "localhost").split(",")
    ports = str(info.get("port") or "5432").split(",")
    ports = ports * len(hosts) if len(ports) == 1 else ports
    return ", ".join(f"{h}:{p}" for h, p in zip(hosts, ports, strict=False))


def unreachable(url: str, connect_timeout: float, cause: BaseException | None = None) -> DatabaseError:
    """Why ``url`` cannot be used, from one direct connection attempt: wrong password or user, unknown
    database (not retryable), refused or timed out (retryable), each naming the host."""
    target = where(url)
    seconds = max(2, int(connect_timeout))
    started = time.monotonic()
    try:
        with psycopg.connect(url, connect_timeout=seconds, autocommit=True):
            pass
    except psycopg.Error as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        label, retryable = _classify(exc, text, time.monotonic() - started >= seconds)
        return DatabaseError(detail=f"{label} at {target}: {text}", retryable=retryable)
    # it connects now: the pool was only busy, or the database came back meanwhile
    reason = f"{type(cause).__name__}: {cause}" if cause else "no connection was free in time"
    return DatabaseError(detail=f"no connection to {target} in time ({reason})", retryable=True)


def _classify(exc: psycopg.Error, text: str, timed_out: bool) -> tuple[str, bool]:
    """What failed, and whether a retry may help. libpq gives no SQLSTATE for most refusals at connect time,
    so a refusal by the server (its message carries "FATAL") is read from PostgreSQL's own wording (English
    lc_messages); a failure before any server spoke is refused or timed out, by the clock."""
    lowered = text.lower()
    if exc.sqlstate in _AUTHENTICATION or ("fatal" in lowered and ("password" in lowered or "role" in lowered
                                                                   or "authentication" in lowered)):
        return "authentication failed", False
    if exc.sqlstate in _UNKNOWN_DATABASE or ("fatal" in lowered and "database" in lowered
                                             and "does not exist" in lowered):
        return "unknown database", False
    if "fatal" in lowered:
        return "the server refused the connection", True  # starting up, shutting down, too many clients
    return ("timed out" if timed_out else "connection refused or unreachable"), True


#: Whether yoyo's table is there, then the newest migration the database has.
HAS_MIGRATIONS_SQL = "select pg_catalog.to_regclass('_yoyo_migration') is not null as present"
APPLIED_SQL = "select max(migration_id) as migration_id from _yoyo_migration"


def expected_migration() -> str:
    """The newest migration this code ships: what its procedures expect the schema to be."""
    from importlib.resources import files

    names = [p.name for p in files("pyapp.sql").joinpath("migrations").iterdir()]
    return sorted(n[:-4] for n in names if n.endswith(".sql") and not n.endswith(".rollback.sql"))[-1]


def not_migrated(applied: str | None, cause: str | None) -> NotMigrated:
    """NOT_MIGRATED naming both versions: the database's newest migration and the one this code expects."""
    expected = expected_migration()
    at = f"the database is at {applied}" if applied else "the database has no pgwallet migration"
    return NotMigrated(detail=f"{at}, this code expects {expected}; the migrations come first, then this code's "
                              f"procedures{f' [{cause}]' if cause else ''}")
