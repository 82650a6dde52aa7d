"""The asyncio client: asyncpg with its own pool; same methods and results as :class:`pyapp.Client`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from pyapp.api import Procedures
from pyapp.errors import DatabaseError, PgWalletError, from_sqlstate
from pyapp.procedures import AsyncInvoker, ProcedureSpec, T
from pyapp.settings import database_url, plain_url, prepared_statements_enabled


def error_from_asyncpg(exc: asyncpg.PostgresError) -> PgWalletError:
    return from_sqlstate(exc.sqlstate, getattr(exc, "message", None), detail=getattr(exc, "detail", None),
                         hint=getattr(exc, "hint", None), field=getattr(exc, "column_name", None))


async def _init_connection(conn: Any) -> None:
    # jsonb columns of row results decode to Python objects, as psycopg does
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class AsyncClient(AsyncInvoker, Procedures):
    """``AsyncClient(url)``: ``await client.transfer(...)``. The pool opens on first use."""

    def __init__(self, url: str | None = None, *, min_size: int = 1, max_size: int = 10,
                 prepared_statements: bool | None = None, timeout: float = 10.0) -> None:
        resolved = database_url(url)
        if not resolved:
            raise DatabaseError(detail="no database URL: pass one or set DATABASE_URL")
        self.url = plain_url(resolved)
        self.min_size, self.max_size, self.timeout = min_size, max_size, timeout
        prepared = prepared_statements_enabled() if prepared_statements is None else prepared_statements
        self.statement_cache_size = 100 if prepared else 0
        self.pool: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> AsyncClient:
        async with self._lock:
            if self.pool is None:
                try:
                    self.pool = await asyncpg.create_pool(
                        self.url, min_size=self.min_size, max_size=self.max_size, timeout=self.timeout,
                        statement_cache_size=self.statement_cache_size, init=_init_connection)
                except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    raise DatabaseError(detail=f"{type(exc).__name__}: {exc}") from exc
        return self

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _invoke(self, spec: ProcedureSpec[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        params = spec.bind(args, kwargs)
        if self.pool is None:
            await self.open()
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                records = await conn.fetch(spec.numeric_sql, *params)
        except asyncpg.PostgresError as exc:
            raise error_from_asyncpg(exc) from exc
        except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(detail=f"{type(exc).__name__}: {exc}") from exc
        return spec.decode([dict(r) for r in records])
