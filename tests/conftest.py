"""Test harness: a real PostgreSQL, a template database migrated once, a fresh clone per test.

Where the server comes from, in order:
- ``PGWALLET_TEST_DSN``: an existing server (the suite creates and drops its own databases there);
- ``PGWALLET_TEST_BACKEND=docker``: a testcontainers PostgreSQL (skipped cleanly without a Docker engine);
- otherwise a private server from the local binaries: pytest-postgresql's ``postgresql_proc`` for an
  ordinary user; as root (where ``initdb`` refuses to run) the same binaries started by
  ``pyapp.embedded`` as the unprivileged ``postgres`` user, with its cluster on /dev/shm when there is one
  (see ``_server_home``). Either way fsync is off: tests need no durability, and it keeps ``make test``
  fast.
Databases are made and dropped with pytest-postgresql's ``DatabaseJanitor`` (``CREATE DATABASE ...
TEMPLATE``). Every test that uses ``client`` has the ledger invariants checked at teardown.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from pyapp import Client, migrations
from pyapp.embedded import EmbeddedServer, find_bindir
from pyapp.errors import PgWalletError

settings.register_profile("default", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                 "max_connections": "300", "shared_buffers": "256MB"}
_BINDIR = find_bindir()

postgresql_proc = factories.postgresql_proc(
    executable=str(_BINDIR / "pg_ctl") if _BINDIR else None,
    port=None,
    postgres_options=" ".join(f"-c {k}={v}" for k, v in FAST_SETTINGS.items()),
)


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str | None

    def url(self, dbname: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def janitor(self, dbname: str, **kwargs: Any) -> DatabaseJanitor:
        return DatabaseJanitor(user=self.user, host=self.host, port=self.port, password=self.password,
                               dbname=dbname, **kwargs)


def _docker_server() -> Iterator[Server]:
    try:
        import docker
        from testcontainers.postgres import PostgresContainer

        docker.from_env().ping()
    except Exception as exc:  # no engine, no socket, no package
        pytest.skip(f"PGWALLET_TEST_BACKEND=docker but no Docker engine is reachable ({exc})")
    with PostgresContainer("postgres:15", driver=None) as container:
        yield Server(container.get_container_host_ip(), int(container.get_exposed_port(5432)),
                     container.username, container.password)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    dsn = os.environ.get("PGWALLET_TEST_DSN")
    if dsn:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        yield Server(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)),
                     str(info.get("user", "postgres")), info.get("password"))  # type: ignore[arg-type]
    elif os.environ.get("PGWALLET_TEST_BACKEND") == "docker":
        yield from _docker_server()
    elif _BINDIR is None:
        pytest.skip("no PostgreSQL binaries found: install PostgreSQL or set PGWALLET_TEST_DSN")
    elif os.geteuid() != 0:
        proc = request.getfixturevalue("postgresql_proc")
        yield Server(proc.host, int(proc.port), proc.user, proc.password)
    else:
        home = _server_home(tmp_path_factory)
        server = EmbeddedServer(home=home, dbname="postgres", settings=FAST_SETTINGS)
        info = server.up()
        assert info.port is not None
        try:
            yield Server("127.0.0.1", info.port, "postgres", None)
        finally:
            server.destroy()
            shutil.rmtree(home, ignore_errors=True)


def _server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the root-run harness keeps its cluster: a folder on /dev/shm (tmpfs) when there is one.

    Every test clones the template (about 400 files) and drops the clone. On this machine's ext4 the
    kernel's inode allocator slows down under that churn: a clone took 500-700 ms there against about
    40 ms on tmpfs, which was half of the suite's time. The tests need no durability (fsync is off)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        home = Path(tempfile.mkdtemp(prefix="pgwallet-test-", dir=shm))
        home.chmod(0o755)  # the postgres user must reach its data folder inside
        return home
    return Path(tmp_path_factory.mktemp("pgwallet-server"))


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    """A database migrated once; every test clones it."""
    name = f"pgwallet_template_{os.getpid()}"
    janitor = pg_server.janitor(name, as_template=True)
    janitor.drop()
    janitor.init()
    migrations.migrate(pg_server.url(name))
    try:
        yield name
    finally:
        close_snapshots()
        janitor.drop()


_counter = itertools.count()


@pytest.fixture
def db_url(pg_server: Server, template_db: str) -> Iterator[str]:
    """A fresh database cloned from the migrated template."""
    name = f"pgwallet_test_{os.getpid()}_{next(_counter)}"
    janitor = pg_server.janitor(name, template_dbname=template_db)
    janitor.init()
    try:
        yield pg_server.url(name)
    finally:
        close_snapshots(pg_server.url(name))
        janitor.drop()


#: An ``acting_user`` that stands for "the owner of the account this call debits", resolved at call time.
OWNER = "<the debited account's owner>"

# where each end-user call names the account it debits: (position, keyword), and whether it is an investment
_DEBITED = {"create_queue_item": (1, "user_id"), "purchase_tip_grid_item": (0, "user_id"),
            "create_investment": (0, "wallet_account_id"), "execute_investment": (0, "investment_id")}


def _row(url: str, sql: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        return None
    snapshot(url)  # opens the kept connection
    row = _snapshots[url][0].execute(sql, (value,)).fetchone()
    return row[0] if row else None


def with_acting_user(url: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``acting_user`` set to the owner of the account the call debits when it is missing or
    :data:`OWNER` ('nobody' for an unowned or missing account: the database then refuses the call)."""
    if method not in _DEBITED or kwargs.get("acting_user", OWNER) != OWNER:
        return kwargs
    position, name = _DEBITED[method]
    target = args[position] if len(args) > position else kwargs.get(name)
    if method == "execute_investment":
        target = _row(url, "select wallet_account_id from pgwallet.investments where id = %s", target)
    owner = _row(url, "select owner from pgwallet.accounts where id = %s", target)
    return {**kwargs, "acting_user": owner or "nobody"}


class ActingClient(Client):
    """The tests' client: a queue intake, tip-grid purchase or investment that names no ``acting_user`` (or
    :data:`OWNER`) acts as the owner of the wallet it debits. Those tests are about the queue and the
    investments; who may debit a wallet has tests of its own (tests/test_trust.py), which name the acting
    user themselves."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._url = url

    def create_queue_item(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().create_queue_item(*args, **with_acting_user(self._url, "create_queue_item", args, kwargs))

    def purchase_tip_grid_item(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().purchase_tip_grid_item(
            *args, **with_acting_user(self._url, "purchase_tip_grid_item", args, kwargs))

    def create_investment(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().create_investment(*args, **with_acting_user(self._url, "create_investment", args, kwargs))

    def execute_investment(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().execute_investment(*args, **with_acting_user(self._url, "execute_investment", args, kwargs))


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    """A sync client on a fresh database; the ledger invariants must hold when the test ends."""
    with ActingClient(db_url, max_size=20) as c:
        yield c
        assert c.check_invariants() == []


class Ledger:
    """Helpers to set up accounts in tests."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.world = client.open_system_account("EUR", "system", name="world")
        self._keys = itertools.count()

    def key(self, prefix: str = "k") -> str:
        return f"{prefix}-{next(self._keys)}"

    def funded(self, amount: int, kind: str = "card", **kwargs: Any) -> int:
        """A new account holding ``amount`` from the world account (one that may go negative is the admin's
        open_system_account, the others open_account; the money comes through the admin's fund_account)."""
        if kwargs.get("allow_negative") or kind in ("system", "clearing"):
            account = self.client.open_system_account("EUR", kind, **kwargs)
        else:
            kwargs.pop("allow_negative", None)
            account = self.client.open_account("EUR", kind, **kwargs)
        if amount:
            self.client.fund_account(self.world.id, account.id, amount, self.key("fund"))
        return account.id

    def balance(self, account_id: int) -> int:
        return self.client.get_account(account_id).balance


@pytest.fixture
def ledger(client: Client) -> Ledger:
    return Ledger(client)


_snapshots: dict[str, tuple[psycopg.Connection[Any], str]] = {}


def snapshot(url: str) -> tuple[Any, ...]:
    """Everything a call could change (every table of schema pgwallet), to prove a refused call changed
    nothing. Sequences are left out: a refused call may consume an id, which is harmless.

    One query over every table, on a connection kept per database (``db_url`` closes it before the
    database is dropped): a fresh connection would spend most of the time loading the catalogue, and the
    property tests take two snapshots per example."""
    conn, query = _snapshots.get(url) or (None, "")
    if conn is None or conn.closed:
        conn = psycopg.connect(url, autocommit=True)
        tables = [t for (t,) in conn.execute(
            "select tablename from pg_tables where schemaname = 'pgwallet' order by 1")]
        query = " union all ".join(
            f"(select '{table}', coalesce(md5(string_agg(t::text, ',' order by t::text)), '')"
            f" from pgwallet.{table} t)" for table in tables)
        _snapshots[url] = (conn, query)
    return tuple(conn.execute(query).fetchall())


def close_snapshots(url: str | None = None) -> None:
    """Closes the snapshot connection of ``url`` (of every database when None)."""
    for key in [url] if url is not None else list(_snapshots):
        entry = _snapshots.pop(key, None) if key is not None else None
        if entry is not None:
            entry[0].close()


def refused(db_url: str, error: type[PgWalletError], call: Any, field: str | None = None) -> PgWalletError:
    """``call()`` is refused with ``error`` (naming ``field`` when given) and changes nothing."""
    before = snapshot(db_url)
    with pytest.raises(error) as raised:
        call()
    if field is not None:
        assert raised.value.field == field, raised.value
    assert snapshot(db_url) == before
    return raised.value
