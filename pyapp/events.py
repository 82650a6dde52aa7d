"""Queue events: an async iterator over the ``pg_notify`` messages the queue sends when a transition commits.

Every transition of a queue item notifies channel ``pgwallet_queue_<performer_id>`` with a small JSON
payload (``item_id``, ``performer_id``, ``user_id``, ``status``, ``previous_status``, ``ticket``,
``positions_changed``, ``depth``); a tip-grid purchase that succeeds also notifies
``purchased_item_success``. Notifications are sent at commit, so a refused call sends nothing.

    async with QueueEvents(url, performer_ids=[performer]) as events:
        async for event in events:
            if event.positions_changed:
                ...  # re-read get_performer_queue(performer) and push it to the viewers

It holds one dedicated asyncpg connection (LISTEN needs a session: not through PgBouncer in transaction
mode). Delivery is at most once: events sent while no listener is connected are not replayed, so after a
reconnect re-read the queue rather than trusting the events alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from pyapp.errors import DatabaseError
from pyapp.settings import database_url, plain_url

QUEUE_CHANNEL_PREFIX = "pgwallet_queue_"
PURCHASE_CHANNEL = "purchased_item_success"


def queue_channel(performer_id: int) -> str:
    """The channel a performer's queue notifies."""
    return f"{QUEUE_CHANNEL_PREFIX}{int(performer_id)}"


@dataclass(frozen=True)
class QueueEvent:
    """One notification: ``kind`` is ``"queue"`` (a transition) or ``"purchase"`` (a purchase succeeded)."""

    channel: str
    kind: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def item_id(self) -> int | None:
        value = self.payload.get("item_id", self.payload.get("queue_item_id"))
        return int(value) if value is not None else None

    @property
    def status(self) -> str | None:
        value = self.payload.get("status", "SUCCESS" if self.kind == "purchase" else None)
        return str(value) if value is not None else None

    @property
    def positions_changed(self) -> bool:
        return bool(self.payload.get("positions_changed", False))


_CLOSED = object()


class QueueEvents:
    """``async with QueueEvents(url, performer_ids=[...], purchases=True) as events: async for e in events``."""

    def __init__(self, url: str | None = None, *, performer_ids: Iterable[int] = (), purchases: bool = False,
                 timeout: float = 10.0) -> None:
        resolved = database_url(url)
        if not resolved:
            raise DatabaseError(detail="no database URL: pass one or set DATABASE_URL")
        self.url = plain_url(resolved)
        self.channels = [queue_channel(p) for p in performer_ids] + ([PURCHASE_CHANNEL] if purchases else [])
        if not self.channels:
            raise ValueError("listen to at least one performer or to purchases")
        self.timeout = timeout
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._conn: Any = None

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        kind = "purchase" if channel == PURCHASE_CHANNEL else "queue"
        self._queue.put_nowait(QueueEvent(channel, kind, json.loads(payload)))

    def _on_close(self, _conn: Any) -> None:
        self._queue.put_nowait(_CLOSED)

    async def __aenter__(self) -> QueueEvents:
        try:
            self._conn = await asyncpg.connect(self.url, timeout=self.timeout)
            self._conn.add_termination_listener(self._on_close)
            for channel in self.channels:
                await self._conn.add_listener(channel, self._on_notify)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            await self.aclose()
            raise DatabaseError(detail=f"{type(exc).__name__}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.remove_termination_listener(self._on_close)
            await conn.close()

    def __aiter__(self) -> QueueEvents:
        return self

    async def __anext__(self) -> QueueEvent:
        if self._conn is None and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is _CLOSED:
            raise DatabaseError(detail="the listening connection was lost; re-read the queue and listen again")
        assert isinstance(event, QueueEvent)
        return event

    async def next(self, timeout: float) -> QueueEvent:
        """The next event, or ``TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)
