"""Real-process tests of pyapp.embedded: real initdb/pg_ctl/postgres, no mocks.

When run as root, pytest's tmp_path lives under /tmp/pytest-of-root (mode 700), which the unprivileged
run user cannot traverse: that exercises the /var/tmp fallback on purpose.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pyapp import embedded
from pyapp.embedded import EmbeddedServer, EmbeddedServerError, find_bindir

HAVE_BINARIES = find_bindir() is not None
needs_binaries = pytest.mark.skipif(not HAVE_BINARIES, reason="no PostgreSQL binaries on this machine")
IS_ROOT = os.geteuid() == 0
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}

MakeServer = Callable[..., EmbeddedServer]


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    """Factory for servers that are always destroyed, whatever happens in the test."""
    servers: list[EmbeddedServer] = []

    def make(home: Path, **kwargs: Any) -> EmbeddedServer:
        server = EmbeddedServer(home, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


@pytest.fixture
def server(tmp_path: Path, make_server: MakeServer) -> EmbeddedServer:
    """A fresh, not yet started server of its own (for tests that stop, kill or destroy it)."""
    return make_server(tmp_path / "home", dbname="pgwallet_test", settings=TEST_SETTINGS)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One running server for the tests that only look at it (initdb costs 1-2 s per cluster)."""
    if not HAVE_BINARIES:
        pytest.skip("no PostgreSQL binaries on this machine")
    server = EmbeddedServer(tmp_path_factory.mktemp("shared") / "home", dbname="pgwallet_test", settings=TEST_SETTINGS)
    try:
        server.up()
        yield server
    finally:
        server.destroy()


def _select_one(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


# --------------------------------------------------------------------------- find_bindir


@needs_binaries
def test_find_bindir_finds_system_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGWALLET_PG_BINDIR", raising=False)
    bindir = find_bindir()
    assert bindir is not None
    for tool in ("initdb", "pg_ctl", "postgres"):
        assert os.access(bindir / tool, os.X_OK)
    debian15 = Path("/usr/lib/postgresql/15/bin")
    if (debian15 / "initdb").exists() and len(list(debian15.parent.parent.iterdir())) == 1:
        assert bindir == debian15  # this machine: pg_config, PATH and /usr/lib/postgresql all agree


def _fake_bindir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "postgres"):
        exe = folder / tool
        exe.write_text("#!/bin/sh\nexit 1\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def test_find_bindir_versioned_dirs_sort_numerically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "postgresql"
    for version in ("9.6", "15", "10", "notaversion"):
        _fake_bindir(root / version / "bin")
    (root / "16" / "bin").mkdir(parents=True)  # incomplete install: ignored
    monkeypatch.delenv("PGWALLET_PG_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))  # no pg_config, no initdb on PATH
    monkeypatch.setattr(embedded, "VERSIONED_BIN_GLOBS", ((root, "*/bin"),))
    assert find_bindir() == root / "15" / "bin"


def test_find_bindir_env_var_wins_and_disables_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forced = _fake_bindir(tmp_path / "mine")
    monkeypatch.setenv("PGWALLET_PG_BINDIR", str(forced))
    assert find_bindir() == forced
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PGWALLET_PG_BINDIR", str(empty))
    assert find_bindir() is None


def test_initdb_on_path_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = _fake_bindir(tmp_path / "pg" / "bin")
    linkdir = tmp_path / "links"
    linkdir.mkdir()
    for tool in ("initdb", "pg_ctl", "postgres"):
        (linkdir / tool).symlink_to(real / tool)
    monkeypatch.delenv("PGWALLET_PG_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(linkdir))
    assert find_bindir() == real  # symlinks resolved to the real bindir


# --------------------------------------------------------------------------- no PostgreSQL at all


def test_no_binaries_and_no_pgserver_raises_helpful_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_server: MakeServer
) -> None:
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    monkeypatch.setenv("PGWALLET_PG_BINDIR", str(empty))
    monkeypatch.setitem(sys.modules, "pgserver", None)  # makes `import pgserver` fail even if installed
    server = make_server(tmp_path / "home")
    with pytest.raises(EmbeddedServerError) as info:
        server.up()
    message = str(info.value)
    assert "DATABASE_URL" in message
    assert "PGWALLET_PG_BINDIR" in message
    assert "pgwallet[embedded]" in message


def test_status_of_fresh_home(tmp_path: Path) -> None:
    info = EmbeddedServer(tmp_path / "never").status()
    assert not info.running
    assert info.url is None
    assert info.port is None
    assert info.source == "none"
    EmbeddedServer(tmp_path / "never").down()  # fine when nothing was ever started


def test_reserved_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EmbeddedServer(tmp_path, settings={"port": "1"})
    with pytest.raises(ValueError):
        EmbeddedServer(tmp_path, settings={"a; rm -rf /": "x"})


def test_default_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWALLET_HOME", str(tmp_path / "state"))
    assert embedded.default_home() == tmp_path / "state"
    monkeypatch.delenv("PGWALLET_HOME")
    monkeypatch.chdir(tmp_path)
    assert embedded.default_home() == tmp_path / ".pgwallet"


# --------------------------------------------------------------------------- lifecycle


@needs_binaries
def test_up_gives_running_server_with_database(shared_server: EmbeddedServer) -> None:
    server = shared_server
    info = server.up()
    assert info.running
    assert info.port is not None
    assert info.url == f"postgresql://postgres@127.0.0.1:{info.port}/pgwallet_test"
    assert info.source.startswith("binaries:")
    assert server.url() == info.url
    assert _select_one(info.url) == 1
    with psycopg.connect(info.url) as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('fsync'), current_setting('listen_addresses'),"
            " current_setting('unix_socket_directories'), current_setting('max_connections')"
        ).fetchone()
    assert row == ("pgwallet_test", "off", "127.0.0.1", "", "300")
    assert (server.home / "server.json").is_file()


@needs_binaries
def test_up_is_idempotent_and_keeps_port(shared_server: EmbeddedServer) -> None:
    server = shared_server
    first = server.up()
    second = server.up()
    assert second == first
    assert second.running


@needs_binaries
def test_down_then_up_restarts_on_same_port(server: EmbeddedServer) -> None:
    first = server.up()
    assert first.url is not None
    _select_one(first.url)  # leave some TIME_WAIT behind: the port must still be reused
    server.down()
    stopped = server.status()
    assert not stopped.running
    assert stopped.url is None
    assert server.url() is None
    server.down()  # idempotent
    again = server.up()
    assert again.running
    assert again.port == first.port
    assert again.url is not None
    assert _select_one(again.url) == 1


@needs_binaries
def test_new_port_when_saved_one_is_taken(server: EmbeddedServer) -> None:
    import socket

    first = server.up()
    server.down()
    assert first.port is not None
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        again = server.up()
    assert again.running
    assert again.port != first.port
    assert EmbeddedServer(server.home).status().port == again.port  # saved for later calls


@needs_binaries
def test_destroy_removes_cluster(server: EmbeddedServer) -> None:
    info = server.up()
    data_dir = info.data_dir
    assert (data_dir / "PG_VERSION").exists()
    server.destroy()
    assert not data_dir.exists()
    assert not (server.home / "server.json").exists()
    after = server.status()
    assert not after.running
    assert after.source == "none"
    if data_dir.parent != server.home:  # root fallback folder goes too
        assert not data_dir.parent.exists()


@needs_binaries
def test_status_correct_after_kill_9(server: EmbeddedServer) -> None:
    info = server.up()
    pid = int((info.data_dir / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.status().running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.status().running
    again = server.up()  # stale postmaster.pid is handled
    assert again.running
    assert again.url is not None
    assert _select_one(again.url) == 1


@needs_binaries
def test_other_instance_sees_same_server(shared_server: EmbeddedServer) -> None:
    server = shared_server
    info = server.up()
    other = EmbeddedServer(server.home, dbname="pgwallet_test")
    assert other.status() == info
    second_db = EmbeddedServer(server.home, dbname="other db")  # needs quoting
    url = second_db.up().url
    assert url is not None
    assert url.endswith("/other%20db")
    assert _select_one(url) == 1


# --------------------------------------------------------------------------- root layouts


@needs_binaries
@pytest.mark.skipif(not IS_ROOT, reason="root-only behaviour")
def test_root_unreachable_home_uses_var_tmp(shared_server: EmbeddedServer) -> None:
    # The shared home is below /tmp/pytest-of-root (mode 700): the run user cannot traverse it.
    server = shared_server
    if all(parent.stat().st_mode & stat.S_IXOTH for parent in server.home.parents):
        pytest.skip("pytest's temp folders are reachable by other users here")
    info = server.up()
    assert info.data_dir.parent.parent == Path("/var/tmp")
    assert info.data_dir.parent.name.startswith("pgwallet-")
    owner = info.data_dir.stat().st_uid
    assert owner != 0
    assert stat.S_IMODE(info.data_dir.stat().st_mode) == 0o700
    assert (info.data_dir.parent / "server.log").stat().st_uid == owner
    # server.json records the real location so that a fresh instance finds it
    assert EmbeddedServer(server.home, dbname="pgwallet_test").status().data_dir == info.data_dir


@needs_binaries
@pytest.mark.skipif(not IS_ROOT, reason="root-only behaviour")
def test_root_reachable_home_keeps_cluster_in_home(make_server: MakeServer) -> None:
    parent = Path(tempfile.mkdtemp(prefix="pgwallet-test-", dir="/tmp"))
    try:
        parent.chmod(0o755)
        server = make_server(parent / "home", dbname="pgwallet_test", settings=TEST_SETTINGS)
        info = server.up()
        assert info.data_dir == parent / "home" / "data"
        assert info.data_dir.stat().st_uid != 0
        assert (parent / "home" / "server.log").stat().st_uid == info.data_dir.stat().st_uid
        assert info.url is not None
        assert _select_one(info.url) == 1
        server.destroy()
        assert not info.data_dir.exists()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="root-only behaviour")
def test_root_missing_run_user_is_explained(tmp_path: Path, make_server: MakeServer) -> None:
    server = make_server(tmp_path / "home", run_as="no-such-user-pgwallet")
    if not HAVE_BINARIES:
        pytest.skip("no PostgreSQL binaries on this machine")
    with pytest.raises(EmbeddedServerError) as info:
        server.up()
    assert "PGWALLET_PG_USER" in str(info.value)
    assert "DATABASE_URL" in str(info.value)


@needs_binaries
def test_concurrent_up_calls_share_one_server(server: EmbeddedServer) -> None:
    import threading

    results: list[object] = []

    def call_up() -> None:
        try:
            results.append(EmbeddedServer(server.home, dbname="pgwallet_test", settings=TEST_SETTINGS).up())
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=call_up) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 3
    infos = [r for r in results if isinstance(r, embedded.ServerInfo)]
    assert len(infos) == 3, results
    assert len({info.port for info in infos}) == 1
    assert all(info.running for info in infos)
