"""The blocking client: psycopg 3 with a psycopg_pool connection pool.

Each call borrows a connection in autocommit mode and sends one statement: the procedure is the
transaction, so no row lock is ever held across the network.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from pyapp.api import Procedures
from pyapp.errors import DatabaseError, PgWalletError, from_sqlstate, invalid
from pyapp.procedures import ProcedureSpec, SyncInvoker, T
from pyapp.settings import database_url, plain_url, prepared_statements_enabled


def error_from_psycopg(exc: psycopg.Error) -> PgWalletError:
    diag = exc.diag
    if exc.sqlstate is None:
        return DatabaseError(detail=str(exc).strip() or type(exc).__name__)
    return from_sqlstate(exc.sqlstate, diag.message_primary, detail=diag.message_detail,
                         hint=diag.message_hint, field=diag.column_name)


class Client(SyncInvoker, Procedures):
    """``Client(url)``: every pgwallet procedure as a method, e.g. ``client.transfer(...)``.

    ``prepared_statements=False`` (or ``PGWALLET_PREPARED_STATEMENTS=0``) for PgBouncer in
    transaction mode.
    """

    def __init__(self, url: str | None = None, *, min_size: int = 1, max_size: int = 10,
                 prepared_statements: bool | None = None, timeout: float = 10.0) -> None:
        resolved = database_url(url)
        if not resolved:
            raise DatabaseError(detail="no database URL: pass one or set DATABASE_URL")
        try:
            conninfo_to_dict(plain_url(resolved))
        except psycopg.ProgrammingError as exc:
            raise invalid("database_url", f"is not a PostgreSQL URL ({exc})") from None
        prepared = prepared_statements_enabled() if prepared_statements is None else prepared_statements
        self.timeout = timeout
        self.pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            plain_url(resolved),
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            connection_class=psycopg.Connection[dict[str, Any]],
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "prepare_threshold": 0 if prepared else None},
        )

    def open(self, *, wait: bool = False) -> Client:
        """Open the pool; with ``wait``, fail fast (DATABASE_ERROR) when the database is out of reach."""
        try:
            self.pool.open(wait=wait, timeout=self.timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise DatabaseError(detail=f"cannot connect within {self.timeout:g} s") from exc
        return self

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Client:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _invoke(self, spec: ProcedureSpec[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        params = spec.bind(args, kwargs)
        if self.pool.closed:
            self.pool.open()
        try:
            with self.pool.connection() as conn:
                rows = conn.execute(spec.format_sql, params).fetchall()
        except psycopg.Error as exc:
            raise error_from_psycopg(exc) from exc
        except Exception as exc:  # pool timeout, closed pool: the database is out of reach
            raise DatabaseError(detail=f"{type(exc).__name__}: {exc}") from exc
        return spec.decode(rows)
