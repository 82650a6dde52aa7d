"""The admin page: payout jobs with live progress, their failed entries with a retry button, cancel; a
performer's queue; jobs by status. Plain HTML, CSS and JS served by the app (``static/admin.*``), no build
step. Live through Server-Sent Events (``/admin/events``) woken by LISTEN/NOTIFY (``pgwallet_payouts``: a job
created or retried, ``pgwallet_payout_progress``: a batch paid, ``pgwallet_queue_<performer>``: a queue
moved) with a 2 s tick beside them; the page falls back to polling ``/v1/list_payout_jobs`` when the
stream fails. Every read and action goes through the ``/v1`` routes with the staff token the page is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pyapp.aio import for_asyncpg
from pyapp.errors import PgWalletError

STREAM_SECONDS = 600  # a stream ends after ten minutes; EventSource reconnects by itself
TICK = 2.0


async def page(request: Request) -> Response:
    from importlib.resources import files

    return FileResponse(str(files("pyapp.http") / "static" / "admin.html"), media_type="text/html")


async def snapshot(client: Any, performer: int | None) -> dict[str, Any]:
    from pyapp.http.service import plain

    jobs = await client.list_payout_jobs(limit=20)
    recent = await client.list_jobs(limit=200)
    queue = await client.get_performer_queue(performer) if performer else None
    return {"payout_jobs": plain(jobs), "jobs_by_status": dict(Counter(j.status for j in recent)),
            "failed_jobs": plain([j for j in recent if j.status == "failed"][:10]),
            "performer_id": performer, "queue": plain(queue) if queue is not None else None,
            "at": time.time()}


async def events(request: Request) -> Response:
    """``/admin/events?token=...[&performer=ID]``: a snapshot now, then one each time a NOTIFY or the tick
    comes. (EventSource cannot send headers: the token comes as a query parameter, over TLS.)"""
    from pyapp.http.service import Unauthorized

    service = request.app.state.service
    caller = service.tokens.caller(request.query_params.get("token", ""))
    if caller is None:
        return JSONResponse({"error": Unauthorized(detail="token: unknown").to_dict()}, status_code=401)
    given = request.query_params.get("performer", "")
    performer = int(given) if given.isdigit() and len(given) <= 18 else None
    client = service.client(caller)
    wake = asyncio.Event()

    async def stream() -> AsyncIterator[str]:
        listener = None
        url, _, settings = for_asyncpg(service.tier_url(caller.tier))
        with contextlib.suppress(Exception):  # no LISTEN (a pooler that drops it): the tick alone
            listener = await asyncpg.connect(url, server_settings=settings, timeout=5)
            for channel in ["pgwallet_payouts", "pgwallet_payout_progress",
                            *([f"pgwallet_queue_{performer}"] if performer else [])]:
                await listener.add_listener(channel, lambda *_: wake.set())
        deadline = time.monotonic() + STREAM_SECONDS
        try:
            while time.monotonic() < deadline and not await request.is_disconnected():
                try:
                    data = await snapshot(client, performer)
                    yield f"event: snapshot\ndata: {json.dumps(data)}\n\n"
                except PgWalletError as exc:
                    yield f"event: failure\ndata: {json.dumps(exc.to_dict())}\n\n"
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), TICK)
        finally:
            if listener is not None:
                await listener.close()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def routes() -> list[Route]:
    return [Route("/admin", page), Route("/admin/events", events)]
