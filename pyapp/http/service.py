"""The HTTP service: a thin ASGI shell (Starlette) over the same specs and edge handlers.

- ``/v1/<procedure>`` for every public procedure: ``GET`` with query parameters for reads, ``POST`` with
  a JSON object for the rest; arguments and results as the specs have them (amounts in minor units).
  ``Idempotency-Key`` may stand for the body's key. Answers ``{"data", "request_id"}`` or pgwallet's error
  envelope ``{"error": {...}, "request_id"}``.
- The seeds' own paths (Supabase edge functions, the payout status route, the investment REST routes) are
  aliases that run ``pyapp.edge``'s handlers (decimal amounts in and out, as the seeds have them).
- ``Authorization: Bearer <token>``: each token stands for a role tier, and the request runs with that
  tier's database role (a pool per tier, whose connections start with ``role = pgwallet_<tier>``): the
  database, not this layer, decides what a token may do. The Stripe webhook needs no token: Stripe's
  signature is verified before anything is read, and it runs as the webhook tier.
- ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus), ``/openapi.json``, ``/admin`` (see ``admin.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pyapp import edge
from pyapp.aio import AsyncClient
from pyapp.api import Procedures
from pyapp.client import Client
from pyapp.errors import InvalidRequest, PgWalletError, ServerError, invalid
from pyapp.http import openapi
from pyapp.http.tokens import Caller, Tokens
from pyapp.procedures import KEY, Procedure, ProcedureSpec
from pyapp.settings import database_url, plain_url

log = logging.getLogger("pgwallet.http")
access = logging.getLogger("pgwallet.http.access")

MAX_BODY = edge.MAX_BODY
#: Every public procedure, by the name of its SQL function (the /v1 routes).
PUBLIC: dict[str, Procedure[Any, Any]] = {
    name: getattr(Procedures, name) for name in sorted(dir(Procedures))
    if isinstance(getattr(Procedures, name), Procedure)}
_REQUEST_ID = edge._REQUEST_ID


class Unauthorized(PgWalletError):
    code, http_status, default_message = "UNAUTHORIZED", 401, "A bearer token is required"


class RouteNotFound(PgWalletError):
    code, http_status, default_message = "ROUTE_NOT_FOUND", 404, "No such route"


class MethodNotAllowed(PgWalletError):
    code, http_status, default_message = "METHOD_NOT_ALLOWED", 405, "This route takes another method"


class BodyTooLarge(PgWalletError):
    code, http_status, default_message = "BODY_TOO_LARGE", 413, "The request body is too large"


def is_read(spec: ProcedureSpec[Any]) -> bool:
    """Reads are GET routes; every other call is a POST."""
    return spec.reads_only


def plain(value: Any) -> Any:
    """A result as JSON: dataclasses as objects, times as ISO 8601; amounts stay minor units."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


class Service:
    """The app's state: a pool (and an edge) per tier, the tokens, the metrics."""

    def __init__(self, url: str | None, tokens: Tokens, *, pool_size: int = 10) -> None:
        self.url = plain_url(url) if url else None
        self.tokens = tokens
        self.pool_size = pool_size
        self.clients: dict[str, AsyncClient] = {}
        self.edges: dict[str, edge.Edge] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter("pgwallet_http_requests", "Requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("pgwallet_http_request_seconds", "Request latency by route", ["route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.in_use = Gauge("pgwallet_http_pool_in_use", "Database connections in use, by tier", ["tier"],
                            registry=self.registry)
        self.paid = Gauge("pgwallet_payout_entries_paid", "Payout entries paid, over every job",
                          registry=self.registry)

    def tier_url(self, tier: str) -> str:
        if not self.url:
            raise edge.InvalidRequest(detail="the service has no database: set DATABASE_URL")
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options={quote(f'-c role=pgwallet_{tier}')}"

    def client(self, caller: Caller) -> AsyncClient:
        found = self.clients.get(caller.tier)
        if found is None:
            found = self.clients[caller.tier] = AsyncClient(self.tier_url(caller.tier), max_size=self.pool_size)
        return found

    def edge(self, tier: str) -> edge.Edge:
        found = self.edges.get(tier)
        if found is None:
            found = self.edges[tier] = edge.Edge.from_env(Client(self.tier_url(tier), max_size=self.pool_size))
        return found

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        for handlers in self.edges.values():
            await run_in_threadpool(handlers.client.close)

    def authenticate(self, request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(detail="send Authorization: Bearer <token>")
        caller = self.tokens.caller(token.strip())
        if caller is None:
            raise Unauthorized(detail="this token is not known")
        return caller


def request_id_of(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


async def read_body(request: Request) -> bytes:
    """The body, refused past MAX_BODY bytes without reading all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BodyTooLarge(detail=f"body: at most {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge(detail=f"body: at most {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def respond(service: Service, request: Request, route: str, started: float, request_id: str, status: int,
            payload: dict[str, Any], caller: Caller | None) -> Response:
    payload.setdefault("request_id", request_id)
    headers = {"X-Request-Id": request_id}
    error = payload.get("error") if isinstance(payload.get("error"), Mapping) else None
    if error is not None:
        error.setdefault("request_id", request_id)
        if status == 429 and error.get("retry_after"):
            headers["Retry-After"] = str(error["retry_after"])
    elapsed = time.perf_counter() - started
    service.requests.labels(route, str(status)).inc()
    service.latency.labels(route).observe(elapsed)
    access.info(json.dumps({"ts": datetime.now().astimezone().isoformat(timespec="milliseconds"),
                            "request_id": request_id, "method": request.method, "route": route, "status": status,
                            "ms": round(elapsed * 1000, 3), "error": error.get("code") if error else None,
                            "caller": caller.name if caller else None}))
    return JSONResponse(payload, status_code=status, headers=headers)


def failure(exc: BaseException, route: str, request_id: str) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, PgWalletError):
        return exc.http_status, {"error": exc.to_dict()}
    log.exception("route %s failed (request %s)", route, request_id)
    bug = ServerError(detail="unexpected error; see the server log for this request id")
    return 500, {"error": bug.to_dict()}


def query_arguments(spec: ProcedureSpec[Any], request: Request) -> dict[str, Any]:
    """GET arguments: whole-number parameters read as integers, the rest as given (the spec checks them)."""
    args: dict[str, Any] = {}
    for name, value in request.query_params.multi_items():
        if name in args:
            raise invalid(name, "is given twice")
        param = next((p for p in spec.params if p.name == name), None)
        if param is not None and param.rule.sql_type in ("bigint", "integer") and value.lstrip("-").isdigit() \
                and len(value) <= 20:
            args[name] = int(value)
        elif param is not None and param.rule.sql_type == "boolean" and value in ("true", "false"):
            args[name] = value == "true"
        else:
            args[name] = value
    return args


def body_arguments(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=edge._refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise invalid("body", f"must be a JSON object ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise invalid("body", "must be a JSON object")
    return value


def with_header_key(spec: ProcedureSpec[Any], args: dict[str, Any], request: Request) -> dict[str, Any]:
    """``Idempotency-Key`` stands for the spec's key argument; both given and different is refused."""
    header = request.headers.get("idempotency-key")
    name = next((p.name for p in spec.params if p.rule is KEY), None)
    if header is None or name is None:
        return args
    if name in args and args[name] != header:
        raise invalid(name, "the body's key and the Idempotency-Key header differ")
    return {**args, name: header}


async def v1(request: Request) -> Response:
    service: Service = request.app.state.service
    started, request_id, caller = time.perf_counter(), request_id_of(request), None
    name = request.path_params["name"]
    route = f"/v1/{name}" if name in PUBLIC else "/v1/<unknown>"
    try:
        proc = PUBLIC.get(name)
        if proc is None:
            raise RouteNotFound(detail=f"no procedure named {name!r}: see /openapi.json")
        caller = service.authenticate(request)
        spec = proc.spec
        if is_read(spec) != (request.method == "GET"):
            raise MethodNotAllowed(detail=f"{name} takes {'GET' if is_read(spec) else 'POST'}")
        args = query_arguments(spec, request) if request.method == "GET" else body_arguments(await read_body(request))
        args = with_header_key(spec, args, request)
        result = await getattr(service.client(caller), name)(**args)
        status, payload = 200, {"data": plain(result)}
    except Exception as exc:
        status, payload = failure(exc, route, request_id)
    return respond(service, request, route, started, request_id, status, payload, caller)


def edge_route(handler: str, *, tier: str | None = None, path_field: str | None = None) -> Any:
    """A seed's own path, run by ``pyapp.edge``'s handler ``handler`` with the caller's tier (``tier``: a fixed
    one, and no token needed, for the Stripe webhook). ``path_field``: the path's ``{id}`` joins the body."""

    async def endpoint(request: Request) -> Response:
        service: Service = request.app.state.service
        started, request_id, caller = time.perf_counter(), request_id_of(request), None
        route = request.scope["route"].path
        try:
            caller = Caller("stripe", tier) if tier else service.authenticate(request)
            raw = await read_body(request)
            body: Any = raw
            if path_field is not None:
                parsed = body_arguments(raw)
                value = request.path_params["id"]
                parsed[path_field] = int(value) if value.isdigit() and len(value) <= 19 else value
                body = parsed
            headers = {**request.headers, "x-request-id": request_id}
            status, payload = await run_in_threadpool(service.edge(caller.tier).handle, handler, body, headers)
        except Exception as exc:
            status, payload = failure(exc, route, request_id)
        return respond(service, request, route, started, request_id, status, payload, caller)

    return endpoint


async def payout_status(request: Request) -> Response:
    """``GET /api/admin/payout-jobs/{jobId}/status``: the seed's polled route, as get_payout_job_status."""
    service: Service = request.app.state.service
    started, request_id, caller = time.perf_counter(), request_id_of(request), None
    route = "/api/admin/payout-jobs/{jobId}/status"
    try:
        caller = service.authenticate(request)
        job = request.path_params["job_id"]
        if not (job.isdigit() and len(job) <= 18):
            raise InvalidRequest(detail="job_id: must be a positive whole number", field="job_id")
        result = await service.client(caller).get_payout_job_status(int(job))
        status, payload = 200, {"data": plain(result)}
    except Exception as exc:
        status, payload = failure(exc, route, request_id)
    return respond(service, request, route, started, request_id, status, payload, caller)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def migration_state(url: str) -> tuple[list[str], list[str]]:
    """(applied, expected) migration ids: yoyo's table against the files this code ships."""
    from pyapp.migrations import migrations_dir

    expected = sorted(p.stem for p in migrations_dir().glob("*.sql") if not p.stem.endswith(".rollback"))
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute("select migration_id from _yoyo_migration").fetchall()
    return sorted(str(r[0]) for r in rows), expected


async def readyz(request: Request) -> Response:
    service: Service = request.app.state.service
    if not service.url:
        return JSONResponse({"status": "not ready", "reason": "no DATABASE_URL"}, status_code=503)
    try:
        applied, expected = await run_in_threadpool(migration_state, service.url)
    except psycopg.Error as exc:
        reason = "not migrated: run `pgwallet migrate`" if exc.sqlstate == "42P01" else " ".join(str(exc).split())
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    missing = [m for m in expected if m not in applied]
    if missing:
        return JSONResponse({"status": "not ready", "reason": f"migrations pending: {', '.join(missing)}"},
                            status_code=503)
    return JSONResponse({"status": "ready", "migrations": len(applied)})


def paid_entries(url: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute("select coalesce(sum(paid_winners), 0) from pgwallet.payout_jobs").fetchone()
    return int(row[0]) if row else 0


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    for tier, client in service.clients.items():
        pool = client.pool
        service.in_use.labels(tier).set(0 if pool is None else pool.get_size() - pool.get_idle_size())
    if service.url:
        with contextlib.suppress(psycopg.Error):
            service.paid.set(await run_in_threadpool(paid_entries, service.url))
    return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.document(PUBLIC, is_read))


async def not_found(request: Request, exc: Exception) -> Response:
    service: Service = request.app.state.service
    request_id = request_id_of(request)
    error = RouteNotFound(detail=f"{request.method} {request.url.path}: no such route (see /openapi.json)")
    return respond(service, request, "<unknown>", time.perf_counter(), request_id, 404, {"error": error.to_dict()},
                   None)


def create_app(url: str | None = None, tokens: Tokens | None = None, *, pool_size: int = 10) -> Starlette:
    """The ASGI application (``pgwallet serve`` runs it with uvicorn; ``pyapp.http:app`` is one from env)."""
    from pyapp.http import admin

    service = Service(database_url(url), tokens if tokens is not None else Tokens.from_env(), pool_size=pool_size)
    if not access.handlers and not logging.getLogger().handlers:  # nobody configured logging: one line each
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await service.close()

    routes = [
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
        Route("/openapi.json", openapi_json),
        Route("/v1/{name}", v1, methods=["GET", "POST"]),
        Route("/functions/v1/process-bar-order", edge_route("process_bar_order"), methods=["POST"]),
        Route("/functions/v1/process-checkpoint-recharge", edge_route("process_checkpoint_recharge"),
              methods=["POST"]),
        Route("/functions/v1/stripe-webhook", edge_route("stripe_webhook", tier="webhook"), methods=["POST"]),
        Route("/api/admin/payout-jobs/{job_id}/status", payout_status, methods=["GET"]),
        Route("/api/v1/investment/products", edge_route("create_investment_product"), methods=["POST"]),
        Route("/api/v1/investment/investments", edge_route("create_investment"), methods=["POST"]),
        Route("/api/v1/investment/investments/{id}/execute",
              edge_route("execute_investment", path_field="investment_id"), methods=["POST"]),
        Route("/api/v1/investment/investments/{id}/dividends",
              edge_route("distribute_dividend", path_field="product_id"), methods=["POST"]),
        *admin.routes(),
        Mount("/static", StaticFiles(packages=[("pyapp.http", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    app.state.service = service
    return app
