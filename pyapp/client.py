"""The blocking client: psycopg 3 with a psycopg_pool connection pool.

Each call borrows a connection in autocommit mode and sends one statement: the procedure is the
transaction, so no row lock is ever held across the network.
"""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from pyapp.api import Procedures
from pyapp.connection import APPLIED_SQL, HAS_MIGRATIONS_SQL, Timeouts, not_migrated, unreachable
from pyapp.errors import DatabaseError, NotMigrated, OutcomeUnknown, PgWalletError, from_sqlstate, invalid
from pyapp.procedures import ProcedureSpec, SyncInvoker, T
from pyapp.settings import database_url, plain_url, prepared_statements_enabled


def error_from_psycopg(exc: psycopg.Error, *, sent: bool = False) -> PgWalletError:
    """The pgwallet error for a psycopg one; ``sent``: the statement had gone out when it came."""
    diag = exc.diag
    if exc.sqlstate is None and not sent:
        return DatabaseError(detail=str(exc).strip() or type(exc).__name__, retryable=True)
    return from_sqlstate(exc.sqlstate, diag.message_primary or str(exc).strip(), detail=diag.message_detail,
                         hint=diag.message_hint, field=diag.column_name, sent=sent)


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (0-based): 50 ms doubling, at most 2 s, with jitter."""
    return float(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random() / 2))


class Client(SyncInvoker, Procedures):
    """``Client(url)``: every pgwallet procedure as a method, e.g. ``client.transfer(...)``.

    - ``url``: one ``postgresql://`` URL; a multi-host one (``host=a,b`` ... ``target_session_attrs=
      read-write``) follows a failover: new connections go to whichever host is the primary.
    - ``retries``: how many times a call whose outcome is unknown, or that was not sent, or that lost a
      serialization conflict, is sent again (only calls with an idempotency key, and reads: a replay
      answers the first result, ``replayed=True``). 0 (default): the caller sees ``OUTCOME_UNKNOWN``.
    - ``statement_timeout``: seconds before the server cancels a call (default 30, or
      ``$PGWALLET_STATEMENT_TIMEOUT``; 0 or None: none). Behind PgBouncer, which refuses startup options,
      pass None and set it on the role instead (``alter role ... set statement_timeout``).
    - ``check``: test each pooled connection before lending it (one empty round trip), so that a connection
      a restart or a failover killed is replaced instead of failing a call.
    - ``prepared_statements=False`` (or ``PGWALLET_PREPARED_STATEMENTS=0``) for PgBouncer in transaction mode.
    """

    def __init__(self, url: str | None = None, *, min_size: int = 1, max_size: int = 10,
                 prepared_statements: bool | None = None, timeout: float = 10.0, retries: int = 0,
                 statement_timeout: float | bool | None = True, connect_timeout: float | None = None,
                 check: bool = True) -> None:
        resolved = database_url(url)
        if not resolved:
            raise DatabaseError(detail="no database URL: pass one or set DATABASE_URL")
        try:
            conninfo_to_dict(plain_url(resolved))
        except psycopg.ProgrammingError as exc:
            raise invalid("database_url", f"is not a PostgreSQL URL ({exc})") from None
        prepared = prepared_statements_enabled() if prepared_statements is None else prepared_statements
        self.url = plain_url(resolved)
        self.timeout = timeout
        self.retries = retries
        self.timeouts = Timeouts.resolve(statement_timeout, connect_timeout)
        self._closed = False
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                  "prepare_threshold": 0 if prepared else None,
                                  "connect_timeout": max(2, int(self.timeouts.connect))}
        if self.timeouts.statement_ms is not None:  # added to the URL's own options, if it has any
            given = conninfo_to_dict(self.url).get("options")
            kwargs["options"] = f"{given or ''} -c statement_timeout={self.timeouts.statement_ms}".strip()
        self._pool_args: dict[str, Any] = {
            "min_size": min_size, "max_size": max_size, "timeout": timeout, "open": False,
            "connection_class": psycopg.Connection[dict[str, Any]], "kwargs": kwargs,
            "check": ConnectionPool.check_connection if check else None}
        self.pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(self.url, **self._pool_args)

    def open(self, *, wait: bool = False) -> Client:
        """Open the pool; with ``wait``, fail fast (DATABASE_ERROR saying what failed, on which host) when
        the database is out of reach."""
        self._closed = False
        try:
            self.pool.open(wait=wait, timeout=self.timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise unreachable(self.url, self.timeouts.connect, exc) from exc
        return self

    def close(self) -> None:
        """Close the pool; ``open()`` makes a new one (a psycopg pool cannot be opened twice)."""
        self._closed = True
        self.pool.close()
        self.pool = ConnectionPool(self.url, **self._pool_args)

    def __enter__(self) -> Client:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _invoke(self, spec: ProcedureSpec[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        params = spec.bind(args, kwargs)
        attempts = 1 + (self.retries if spec.repeatable else 0)
        for attempt in range(attempts):
            try:
                return self._send(spec, params)
            except PgWalletError as exc:
                if attempt + 1 >= attempts or not exc.retryable:
                    raise
                time.sleep(backoff(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _not_migrated(conn: psycopg.Connection[Any], error: NotMigrated) -> NotMigrated:
        try:
            present = conn.execute(HAS_MIGRATIONS_SQL).fetchone()
            row = conn.execute(APPLIED_SQL).fetchone() if present and present["present"] else None
        except psycopg.Error:
            return error
        return not_migrated(row["migration_id"] if row else None, error.detail)

    def _send(self, spec: ProcedureSpec[T], params: list[Any]) -> T:
        """One attempt: borrow a connection (nothing is sent if that fails), send the statement, map what
        went wrong by whether it had been sent."""
        if self._closed:
            raise DatabaseError(detail="this client is closed: open() it again, or make a new one")
        try:
            if self.pool.closed:
                self.pool.open()
            conn = self.pool.getconn(timeout=self.timeout)
        except PoolTimeout as exc:
            raise unreachable(self.url, self.timeouts.connect, exc) from exc
        except PoolClosed as exc:
            raise DatabaseError(detail="this client is closed: open() it again, or make a new one") from exc
        try:
            rows = conn.execute(spec.format_sql, params).fetchall()
        except psycopg.Error as exc:
            error = error_from_psycopg(exc, sent=True)
            if isinstance(error, NotMigrated):
                error = self._not_migrated(conn, error)
            raise error from exc
        except Exception as exc:  # anything else mid-call: the statement may have gone out
            raise OutcomeUnknown(detail=f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.pool.putconn(conn)
        return spec.decode(rows)
