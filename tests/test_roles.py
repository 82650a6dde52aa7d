"""Roles: the application role can call the public procedures and nothing else."""

from __future__ import annotations

import psycopg
import pytest
from conftest import Ledger

TABLES_SQL = "select tablename from pg_tables where schemaname = 'pgwallet' order by 1"


def as_role(url: str, role: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"set role {role}")
    return conn


def test_app_role_cannot_write_any_table(ledger: Ledger, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tables = [t for (t,) in conn.execute(TABLES_SQL)]
    assert {"accounts", "entries", "transfers", "holds", "idempotency_keys"} <= set(tables)
    with as_role(db_url, "pgwallet_app") as conn:
        for table in tables:
            for statement in (f"update pgwallet.{table} set {_any_column(db_url, table)} = null",
                              f"insert into pgwallet.{table} default values",
                              f"delete from pgwallet.{table}",
                              f"select * from pgwallet.{table}"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)


def test_app_role_moves_money_only_through_procedures(ledger: Ledger, db_url: str) -> None:
    a, b = ledger.funded(100, owner="alice"), ledger.funded(0)
    with as_role(db_url, "pgwallet_app") as conn:
        conn.execute("select pgwallet.user_transfer('alice', %s, %s, 10, 'as-app')", (a, b))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update pgwallet.accounts set balance = 1000000 where id = %s", (a,))
        # internal helpers are not callable either
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select pgwallet.post_legs(1, 'x', array[%s]::bigint[], array[%s]::bigint[], "
                         "array[10]::bigint[])", (b, a))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from pgwallet.check_invariants()")
    assert ledger.balance(b) == 10


def test_staff_and_readonly_roles(ledger: Ledger, db_url: str) -> None:
    with as_role(db_url, "pgwallet_staff") as conn:
        assert conn.execute("select count(*) from pgwallet.check_invariants()").fetchone() == (0,)
        conn.execute("select pgwallet.expire_holds(10)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from pgwallet.holds")
    with as_role(db_url, "pgwallet_readonly") as conn:
        assert conn.execute("select name from pgwallet.account_balances").fetchall() == [("world",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select pgwallet.transfer(1, 2, 1, 'ro')")


def test_no_public_execute_on_any_function(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        public = conn.execute(
            "select p.proname from pg_proc p where p.pronamespace = 'pgwallet'::regnamespace "
            "and has_function_privilege('public', p.oid, 'execute')").fetchall()
        definer = conn.execute(
            "select p.proname, p.proconfig from pg_proc p where p.pronamespace = 'pgwallet'::regnamespace "
            "and not coalesce('search_path=pgwallet, pg_temp' = any(p.proconfig), false)").fetchall()
        owners = conn.execute(
            "select distinct pg_get_userbyid(c.relowner) from pg_class c "
            "where c.relnamespace = 'pgwallet'::regnamespace").fetchall()
    assert public == []
    assert definer == []  # every function pins its search_path
    assert owners == [("pgwallet_owner",)]


def _any_column(url: str, table: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("select column_name from information_schema.columns where table_schema = 'pgwallet' "
                           "and table_name = %s order by ordinal_position desc limit 1", (table,)).fetchone()
    assert row is not None
    return str(row[0])
