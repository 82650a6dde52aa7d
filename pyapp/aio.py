"""The asyncio client: asyncpg with its own pool; same methods and results as :class:`pyapp.Client`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from pyapp.api import Procedures
from pyapp.client import backoff
from pyapp.connection import APPLIED_SQL, HAS_MIGRATIONS_SQL, Timeouts, not_migrated, where
from pyapp.errors import DatabaseError, NotMigrated, OutcomeUnknown, PgWalletError, from_sqlstate
from pyapp.procedures import AsyncInvoker, ProcedureSpec, T
from pyapp.settings import database_url, plain_url, prepared_statements_enabled


def error_from_asyncpg(exc: asyncpg.PostgresError, *, sent: bool = False) -> PgWalletError:
    return from_sqlstate(exc.sqlstate, getattr(exc, "message", None), detail=getattr(exc, "detail", None),
                         hint=getattr(exc, "hint", None), field=getattr(exc, "column_name", None), sent=sent)


def for_asyncpg(url: str) -> tuple[str, float | None, dict[str, str]]:
    """asyncpg passes a URL's unknown query parameters to the server as settings: take out libpq's own,
    ``connect_timeout`` (seconds) and ``options`` (its ``-c name=value`` pairs become server settings)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    timeout = next((float(v) for k, v in query if k == "connect_timeout" and v), None)
    settings: dict[str, str] = {}
    for k, v in query:
        if k != "options":
            continue
        words = iter(shlex.split(v))
        for word in words:  # -c name=value, -cname=value or --name=value, as libpq takes them
            pair = next(words, "") if word == "-c" else word[2:] if word.startswith(("-c", "--")) else ""
            name, _, value = pair.partition("=")
            if name and value:
                settings[name.replace("-", "_")] = value
    rest = urlencode([(k, v) for k, v in query if k not in ("connect_timeout", "options")])
    return urlunsplit(parts._replace(query=rest)), timeout, settings


async def _init_connection(conn: Any) -> None:
    # jsonb columns of row results decode to Python objects, as psycopg does
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class AsyncClient(AsyncInvoker, Procedures):
    """``AsyncClient(url)``: ``await client.transfer(...)``. The pool opens on first use.

    Same options as :class:`pyapp.Client` (``retries``, ``statement_timeout``, ``connect_timeout``). One
    client may serve one event loop after another (a serverless function that calls ``asyncio.run`` per
    invocation): a pool belongs to the loop that opened it, and a call on another loop opens its own.
    """

    def __init__(self, url: str | None = None, *, min_size: int = 1, max_size: int = 10,
                 prepared_statements: bool | None = None, timeout: float = 10.0, retries: int = 0,
                 statement_timeout: float | bool | None = True, connect_timeout: float | None = None) -> None:
        resolved = database_url(url)
        if not resolved:
            raise DatabaseError(detail="no database URL: pass one or set DATABASE_URL")
        self.url, url_timeout, self.settings = for_asyncpg(plain_url(resolved))
        self.min_size, self.max_size, self.timeout, self.retries = min_size, max_size, timeout, retries
        self.timeouts = Timeouts.resolve(statement_timeout, connect_timeout or url_timeout)
        prepared = prepared_statements_enabled() if prepared_statements is None else prepared_statements
        self.statement_cache_size = 100 if prepared else 0
        self.pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def _for_this_loop(self) -> asyncio.Lock:
        """The lock of the running loop; a pool opened on another loop (now gone) is left behind."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock, self.pool = loop, asyncio.Lock(), None
        assert self._lock is not None
        return self._lock

    async def open(self) -> AsyncClient:
        async with self._for_this_loop():
            if self.pool is None:
                settings = dict(self.settings)
                if self.timeouts.statement_ms is not None:
                    settings["statement_timeout"] = str(self.timeouts.statement_ms)
                try:
                    self.pool = await asyncpg.create_pool(
                        self.url, min_size=self.min_size, max_size=self.max_size, timeout=self.timeouts.connect,
                        statement_cache_size=self.statement_cache_size, init=_init_connection,
                        server_settings=settings)
                except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
                    raise DatabaseError(detail=f"authentication failed at {where(self.url)}: {exc}") from exc
                except asyncpg.InvalidCatalogNameError as exc:
                    raise DatabaseError(detail=f"unknown database at {where(self.url)}: {exc}") from exc
                except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    raise DatabaseError(detail=f"cannot connect to {where(self.url)}: {type(exc).__name__}: {exc}",
                                        retryable=True) from exc
        return self

    async def close(self) -> None:
        if self.pool is not None and self._loop is asyncio.get_running_loop():
            await self.pool.close()
        self.pool = None

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _invoke(self, spec: ProcedureSpec[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        params = spec.bind(args, kwargs)
        attempts = 1 + (self.retries if spec.repeatable else 0)
        for attempt in range(attempts):
            try:
                return await self._send(spec, params)
            except PgWalletError as exc:
                if attempt + 1 >= attempts or not exc.retryable:
                    raise
                await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _send(self, spec: ProcedureSpec[T], params: list[Any]) -> T:
        """One attempt: acquire (nothing is sent if that fails), send, map by whether it had been sent."""
        self._for_this_loop()
        if self.pool is None:
            await self.open()
        try:
            conn = await self.pool.acquire(timeout=self.timeout)
        except asyncpg.PostgresError as exc:
            raise error_from_asyncpg(exc) from exc
        except Exception as exc:  # timeout, refused, a pool closing: nothing was sent
            raise DatabaseError(detail=f"no connection to {where(self.url)}: {type(exc).__name__}: {exc}",
                                retryable=True) from exc
        try:
            records = await conn.fetch(spec.numeric_sql, *params)
        except asyncpg.PostgresError as exc:
            error = error_from_asyncpg(exc, sent=True)
            if isinstance(error, NotMigrated):
                with contextlib.suppress(Exception):
                    present = await conn.fetchval(HAS_MIGRATIONS_SQL)
                    error = not_migrated(await conn.fetchval(APPLIED_SQL) if present else None, error.detail)
            raise error from exc
        except Exception as exc:  # the connection died mid-call (reset, closed, another operation...)
            raise OutcomeUnknown(detail=f"{type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):  # a broken connection is closed by the pool itself
                await self.pool.release(conn)
        return spec.decode([dict(r) for r in records])
