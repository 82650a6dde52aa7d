"""The SQL error catalogue and the Python hierarchy agree; both drivers map errors the same way."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from conftest import Ledger

from pyapp import AsyncClient, Client, errors


def test_sql_catalogue_and_python_table_agree(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("select code, sqlstate, http_status from pgwallet.error_catalogue").fetchall()
    sql = {code: (sqlstate, status) for code, sqlstate, status in rows}
    python = {cls.code: (cls.sqlstate, cls.http_status) for cls in errors.CATALOGUE.values()}
    assert sql == python
    assert all(state.startswith("W") for state, _ in sql.values())


def test_every_code_raised_in_sql_is_catalogued() -> None:
    """A procedure naming an unknown code would fail at run time: catch it statically."""
    import re
    from pathlib import Path

    from pyapp.migrations import sql_dir

    text = "\n".join(p.read_text() for p in Path(sql_dir(), "procedures").glob("*.sql"))
    raised = set(re.findall(r"raise_error\('([A-Z_]+)'", text))
    assert raised and raised <= set(errors.BY_CODE)


def test_retryable_and_connection_errors() -> None:
    assert isinstance(errors.from_sqlstate("40001", "could not serialize"), errors.SerializationFailure)
    assert errors.from_sqlstate("40P01", "deadlock").retryable
    assert isinstance(errors.from_sqlstate("08006", "connection lost"), errors.DatabaseError)
    assert type(errors.from_sqlstate("22003", "out of range")) is errors.ServerError


def test_unreachable_database_is_database_error() -> None:
    url = "postgresql://postgres@127.0.0.1:1/nothing"
    with pytest.raises(errors.DatabaseError) as sync_error:
        Client(url, timeout=2).get_account(1)

    async def call() -> None:
        await AsyncClient(url, timeout=2).get_account(1)

    with pytest.raises(errors.DatabaseError) as async_error:
        asyncio.run(call())
    assert sync_error.value.code == async_error.value.code == "DATABASE_ERROR"
    assert sync_error.value.http_status == 503


def test_both_drivers_raise_the_same_typed_error(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(10), ledger.funded(0)
    with pytest.raises(errors.InsufficientFunds) as sync_error:
        ledger.client.transfer(a, b, 11, "k")

    async def call() -> errors.PgWalletError:
        async with AsyncClient(db_url) as client:
            with pytest.raises(errors.InsufficientFunds) as caught:
                await client.transfer(a, b, 11, "k")
            return caught.value

    async_error = asyncio.run(call())
    for attr in ("code", "http_status", "message", "detail", "field"):
        assert getattr(sync_error.value, attr) == getattr(async_error, attr)
    assert sync_error.value.field == "debit_account_id"
    assert sync_error.value.to_dict()["code"] == "INSUFFICIENT_FUNDS"


def test_both_clients_return_equal_results(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100), ledger.funded(0)
    done = ledger.client.transfer(a, b, 5, "same")

    async def calls() -> tuple[object, ...]:
        async with AsyncClient(db_url) as client:
            return (await client.transfer(a, b, 5, "same"), await client.get_account(a),
                    await client.account_history(a))

    replay, account, history = asyncio.run(calls())
    assert replay == type(done)(**{**done.__dict__, "replayed": True})
    assert account == ledger.client.get_account(a)
    assert history == ledger.client.account_history(a)


def test_validation_happens_before_the_database() -> None:
    """No connection is needed to refuse bad input: the URL points nowhere."""
    client = Client("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(errors.InvalidRequest) as caught:
        client.transfer(1, 2, -5, "k")
    assert caught.value.field == "amount"
    with pytest.raises(errors.InvalidRequest) as caught:
        client.transfer(1, 2, 5, "")
    assert caught.value.field == "idempotency_key"
    with pytest.raises(errors.InvalidRequest) as caught:
        client.transfer(1, 2, True, "k")  # a bool is not an amount
    assert caught.value.field == "amount"
