"""The HTTP service through an HTTP client, against the real app and a real PostgreSQL: every route's happy
path, each error status (401, 403, 404, 405, 409, 413, 400, 429 with Retry-After, 503 in doubt), replay by
Idempotency-Key header, the seeds' paths, health, readiness, metrics and the generated OpenAPI."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Ledger, Server, snapshot
from starlette.testclient import TestClient
from test_edge import SECRET, event, order_body, signed

from pyapp import Client
from pyapp.http.service import PUBLIC, create_app, is_read
from pyapp.http.tokens import Tokens, parse, token_hash

TOKENS = {tier: f"secret-{tier}" for tier in ("app", "webhook", "worker", "staff", "admin", "readonly")}


def bearer(tier: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tier]}"}


@pytest.fixture
def http(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    tokens = Tokens(parse(",".join(f"{tier}-token:{tier}:{token_hash(t)}" for tier, t in TOKENS.items())))
    with TestClient(create_app(db_url, tokens, pool_size=4), raise_server_exceptions=False) as client:
        yield client


def ok(answer: Any) -> Any:
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def error(answer: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()["error"]
    assert body["code"] == code and body["request_id"], body
    if field is not None:
        assert body["field"] == field, body
    return dict(body)


def test_health_readiness_metrics_openapi(http: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgwallet.http.access")
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    http.get("/v1/get_account", params={"account_id": 1}, headers=bearer("app"))
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pgwallet.http.access"]
    assert {"route": "/v1/get_account", "status": 404, "error": "ACCOUNT_NOT_FOUND", "caller": "app-token"}.items() \
        <= logged[-1].items() and logged[-1]["request_id"] and logged[-1]["ms"] >= 0
    metrics = http.get("/metrics").text
    assert 'pgwallet_http_requests_total{route="/v1/get_account",status="404"} 1.0' in metrics
    assert "pgwallet_http_request_seconds_bucket" in metrics and "pgwallet_payout_entries_paid" in metrics
    spec = http.get("/openapi.json").json()
    assert set(spec["paths"]) == {f"/v1/{name}" for name in PUBLIC}
    assert "post" in spec["paths"]["/v1/user_transfer"] and "get" in spec["paths"]["/v1/get_account"]
    body = spec["paths"]["/v1/user_transfer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"acting_user", "debit_account_id", "credit_account_id", "amount",
                                     "idempotency_key"}


def test_readiness_says_not_migrated(pg_server: Server) -> None:
    name = "pgwallet_http_empty"
    janitor = pg_server.janitor(name)
    janitor.drop()
    janitor.init()
    try:
        with TestClient(create_app(pg_server.url(name), Tokens([]))) as client:
            answer = client.get("/readyz")
        assert answer.status_code == 503 and "pgwallet migrate" in answer.json()["reason"]
    finally:
        janitor.drop()


def test_v1_happy_path_replay_by_header_and_errors(http: TestClient, ledger: Ledger, db_url: str) -> None:
    alice = ledger.funded(1000, kind="user_wallet", owner="alice")
    shop = ledger.funded(0, kind="merchant")
    body = {"acting_user": "alice", "debit_account_id": alice, "credit_account_id": shop, "amount": 250}
    first = http.post("/v1/user_transfer", json=body, headers={**bearer("app"), "Idempotency-Key": "order-1",
                                                               "X-Request-Id": "req-7"})
    assert first.headers["x-request-id"] == "req-7" and first.json()["request_id"] == "req-7"
    assert ok(first)["amount"] == 250 and not first.json()["data"]["replayed"]
    again = ok(http.post("/v1/user_transfer", json={**body, "idempotency_key": "order-1"},
                         headers={**bearer("app"), "Idempotency-Key": "order-1"}))
    assert again["replayed"] and again["operation_id"] == first.json()["data"]["operation_id"]
    assert ok(http.get("/v1/get_account", params={"account_id": shop}, headers=bearer("app")))["balance"] == 250
    before = snapshot(db_url)
    # 400 naming the field; keys that differ; 409 a changed payload; 403 not the acting user's, or the tier's
    error(http.post("/v1/user_transfer", json={**body, "amount": -1}, headers={**bearer("app"),
                                                                              "Idempotency-Key": "x"}), 400,
          "INVALID_REQUEST", "amount")
    error(http.post("/v1/user_transfer", json={**body, "idempotency_key": "a"},
                    headers={**bearer("app"), "Idempotency-Key": "b"}), 400, "INVALID_REQUEST", "idempotency_key")
    error(http.post("/v1/user_transfer", json={**body, "amount": 251}, headers={**bearer("app"),
                                                                              "Idempotency-Key": "order-1"}),
          409, "DUPLICATE_REQUEST")
    error(http.post("/v1/user_transfer", json={**body, "acting_user": "mallory"},
                    headers={**bearer("app"), "Idempotency-Key": "m"}), 403, "FORBIDDEN", "debit_account_id")
    denied = error(http.post("/v1/transfer", json={"debit_account_id": alice, "credit_account_id": shop,
                                                   "amount": 1, "idempotency_key": "t"}, headers=bearer("app")),
                   403, "FORBIDDEN")
    assert "transfer" in denied["detail"]
    # 401, 404 (route and id), 405, 413, a body that is no object
    error(http.post("/v1/user_transfer", json=body), 401, "UNAUTHORIZED")
    error(http.post("/v1/user_transfer", json=body, headers={"Authorization": "Bearer wrong"}), 401, "UNAUTHORIZED")
    error(http.post("/v1/no_such_procedure", json={}, headers=bearer("app")), 404, "ROUTE_NOT_FOUND")
    error(http.get("/nothing/here"), 404, "ROUTE_NOT_FOUND")
    error(http.get("/v1/get_account", params={"account_id": 10**12}, headers=bearer("app")), 404, "ACCOUNT_NOT_FOUND")
    error(http.get("/v1/user_transfer", headers=bearer("app")), 405, "METHOD_NOT_ALLOWED")
    error(http.post("/v1/user_transfer", content=b"{" + b" " * 1_000_001 + b"}", headers=bearer("app")), 413,
          "BODY_TOO_LARGE")
    error(http.post("/v1/user_transfer", content=b"[1]", headers=bearer("app")), 400, "INVALID_REQUEST", "body")
    error(http.get("/v1/get_account", params={"account_id": "x"}, headers=bearer("app")), 400, "INVALID_REQUEST",
          "account_id")
    assert snapshot(db_url) == before


def test_a_tier_is_a_database_role(http: TestClient, ledger: Ledger) -> None:
    """Each token's requests run with its tier's role: staff may transfer, app may not; readonly reads."""
    a, b = ledger.funded(100), ledger.funded(0)
    args = {"debit_account_id": a, "credit_account_id": b, "amount": 5, "idempotency_key": "staff-1"}
    assert ok(http.post("/v1/transfer", json=args, headers=bearer("staff")))["amount"] == 5
    error(http.post("/v1/fund_account", json={**args, "idempotency_key": "f"}, headers=bearer("staff")), 403,
          "FORBIDDEN")
    error(http.post("/v1/process_stripe_recharge", json={"card_id": 1, "amount": 1, "stripe_session_id": "cs_1"},
                    headers=bearer("app")), 403, "FORBIDDEN")
    assert ok(http.get("/v1/check_invariants", headers=bearer("readonly"))) == []


def test_429_carries_retry_after(http: TestClient, client: Client) -> None:
    staff = client.create_staff("ops").id
    client.set_rate_limit("create_investment_product", 1, 3600)
    ok(http.post("/v1/create_investment_product", json={"name": "one", "currency": "EUR", "staff_id": staff,
                                                        "idempotency_key": "p1"}, headers=bearer("staff")))
    limited = http.post("/v1/create_investment_product", json={"name": "two", "currency": "EUR", "staff_id": staff,
                                                               "idempotency_key": "p2"}, headers=bearer("staff"))
    body = error(limited, 429, "RATE_LIMITED")
    assert limited.headers["retry-after"] == str(body["retry_after"]) and 3500 < body["retry_after"] <= 3600


def test_503_when_the_outcome_is_unknown(http: TestClient, ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100, owner="alice"), ledger.funded(0)
    lock = psycopg.connect(db_url)
    lock.execute("select 1 from pgwallet.accounts where id = %s for update", (a,))
    box: list[Any] = []
    body = {"acting_user": "alice", "debit_account_id": a, "credit_account_id": b, "amount": 1,
            "idempotency_key": "lost"}
    thread = threading.Thread(target=lambda: box.append(http.post("/v1/user_transfer", json=body,
                                                                  headers=bearer("app"))))
    thread.start()
    dbname = db_url.rsplit("/", 1)[1]
    with psycopg.connect(db_url, autocommit=True) as watch:
        deadline = time.monotonic() + 10
        while not (row := watch.execute("select pid from pg_stat_activity where datname = %s and "
                                        "wait_event_type = 'Lock'", (dbname,)).fetchone()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        watch.execute("select pg_terminate_backend(%s)", (row[0],))
    thread.join()
    lock.rollback()
    lock.close()
    body_503 = error(box[0], 503, "OUTCOME_UNKNOWN")
    assert body_503["in_doubt"] is True
    assert ok(http.post("/v1/user_transfer", json=body, headers=bearer("app")))["replayed"] is False  # settled


def test_the_seeds_paths(http: TestClient, client: Client) -> None:
    card = client.issue_card("04HTTP01")
    client.process_stripe_recharge(card.card_id, 5000, "cs_http_setup")
    staff = client.create_staff("Desk").id
    checkpoint = client.create_checkpoint("Gate").id
    client.create_bar("edge-bar", "Bar")
    setup = {"card": card.card_id, "bar": "edge-bar"}
    order = http.post("/functions/v1/process-bar-order", json=order_body(setup), headers=bearer("app"))
    assert order.json()["data"]["total_amount"] == "11.00"  # the seeds' decimals
    recharge = http.post("/functions/v1/process-checkpoint-recharge", headers=bearer("staff"), json={
        "card_id": card.card_id, "amount": "20.00", "staff_id": staff, "checkpoint_id": checkpoint,
        "payment_method": "cash", "client_request_id": "desk-1"})
    assert recharge.status_code == 200, recharge.text
    error(http.post("/functions/v1/process-checkpoint-recharge", headers=bearer("app"), json={
        "card_id": card.card_id, "amount": "20.00", "staff_id": staff, "checkpoint_id": checkpoint,
        "payment_method": "cash", "client_request_id": "desk-2"}), 403, "FORBIDDEN")
    payload = event(card.card_id, session="cs_http_1", amount=1500)
    hook = http.post("/functions/v1/stripe-webhook", content=payload, headers=signed(payload))
    assert hook.status_code == 200 and hook.json()["data"]["recharge"]["amount"] == "15.00"
    error(http.post("/functions/v1/stripe-webhook", content=payload, headers={"Stripe-Signature": "t=1,v1=00"}),
          400, "INVALID_SIGNATURE")
    # the investment routes and the payout status route
    ops = client.create_staff("ops").id
    product = http.post("/api/v1/investment/products", headers={**bearer("staff"), "Idempotency-Key": "prod-1"},
                        json={"name": "Green", "currency": "EUR", "staff_id": ops})
    product_id = ok(product)["product_id"]
    world = client.open_system_account("EUR", "system").id
    wallet = client.open_account("EUR", "user_wallet", owner="inv").id
    client.fund_account(world, wallet, 100_000, "fund-inv")
    investment = ok(http.post("/api/v1/investment/investments", headers={**bearer("app"), "Idempotency-Key": "i1"},
                              json={"wallet_account_id": wallet, "product_id": product_id, "amount": "100.00",
                                    "acting_user": "inv"}))
    queued = ok(http.post(f"/api/v1/investment/investments/{investment['investment_id']}/execute",
                          headers={**bearer("app"), "Idempotency-Key": "x1"}, json={"acting_user": "inv"}))
    assert queued["status"] == "queued"
    client.fund_account(world, client.get_investment_product(product_id).dividend_account_id, 5000, "fund-div")
    from pyapp.job_worker import JobWorker

    JobWorker(client.url, poll_interval=0.05).run(once=True)
    dividend = http.post(f"/api/v1/investment/investments/{product_id}/dividends",
                         headers={**bearer("staff"), "Idempotency-Key": "d1"}, json={"amount": "10", "staff_id": ops})
    assert ok(dividend)["status"] == "queued"
    JobWorker(client.url, poll_interval=0.05).run(once=True)
    job_id = client.get_dividend(ok(dividend)["dividend_id"]).payout_job_id
    status = ok(http.get(f"/api/admin/payout-jobs/{job_id}/status", headers=bearer("staff")))
    assert status["job_id"] == job_id and status["total_winners"] == 1
    error(http.get("/api/admin/payout-jobs/abc/status", headers=bearer("staff")), 400, "INVALID_REQUEST", "job_id")


def test_every_read_is_a_get_and_every_other_call_a_post() -> None:
    reads = {name for name, proc in PUBLIC.items() if is_read(proc.spec)}
    assert {"get_account", "list_payout_jobs", "check_invariants", "account_history"} <= reads
    assert not reads & {"transfer", "user_transfer", "create_staff", "process_bar_order", "expire_holds"}


def test_admin_page_and_its_event_stream(http: TestClient) -> None:
    page = http.get("/admin")
    assert page.status_code == 200 and "pgwallet admin" in page.text
    assert http.get("/static/admin.js").status_code == 200
    assert http.get("/admin/events", params={"token": "wrong"}).status_code == 401
    with http.stream("GET", "/admin/events", params={"token": TOKENS["staff"]}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                break
    assert data["payout_jobs"] == [] and "jobs_by_status" in data


def test_the_module_level_app_is_an_asgi_application(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``uvicorn pyapp.http:app``: configured from the environment, built on first use."""
    import pyapp.http

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setattr(pyapp.http, "_built", {})
    app = pyapp.http.app
    assert callable(app) and type(app).__name__ == "Starlette"
    with TestClient(app) as client:
        assert client.get("/readyz").json()["status"] == "ready"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_v1_route_answers_with_a_result_or_a_typed_error(http: TestClient, name: str) -> None:
    """With no arguments, as admin (every tier's calls): a result (a read needing none) or a typed 4xx naming
    what is missing; never a 500, never a route that is not there."""
    spec = PUBLIC[name].spec
    answer = (http.get(f"/v1/{name}", headers=bearer("admin")) if is_read(spec)
              else http.post(f"/v1/{name}", json={}, headers=bearer("admin")))
    if answer.status_code == 200:
        assert "data" in answer.json()
    else:
        body = error(answer, answer.status_code, answer.json()["error"]["code"])
        assert 400 <= answer.status_code < 500 and body["code"] != "ROUTE_NOT_FOUND", body
