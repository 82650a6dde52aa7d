"""The DBA's path without guesswork: the wheel carries the SQL and migrates a fresh database completely; a
rollback asks first and takes the procedures with it (calls then say which versions differ); a stale yoyo
lock is named and can be broken; plain yoyo runs from yoyo.ini; the embedded server's home is found from any
folder of the project."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from conftest import Server
from test_cli import TtyInput

from cli.main import cli
from pyapp import Client, errors, migrations
from pyapp.embedded import default_home

REPO = Path(__file__).resolve().parent.parent
ALL = [s.stem for s in sorted((REPO / "sql" / "migrations").glob("*.sql")) if not s.stem.endswith(".rollback")]


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[str]:
    name = "pgwallet_dba_empty"
    janitor = pg_server.janitor(name)
    janitor.drop()
    janitor.init()
    try:
        yield pg_server.url(name)
    finally:
        janitor.drop()


def test_the_wheel_migrates_a_fresh_database_completely(empty_db: str, tmp_path: Path) -> None:
    """Built with pip, installed into a fresh virtual environment, run from a folder with no checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("pgwallet-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True, capture_output=True,
                   timeout=600)
    env = {k: v for k, v in os.environ.items() if k not in ("PGWALLET_SQL_DIR", "VIRTUAL_ENV")}
    env["DATABASE_URL"] = empty_db
    run = lambda *args: subprocess.run([str(venv / "bin" / "pgwallet"), *args], capture_output=True, text=True,  # noqa: E731
                                       env=env, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    migrated = run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines() == [f"applied {m}" for m in ALL] + ["procedures installed"]
    listed = run("migrate", "--list")
    assert listed.stdout.splitlines() == [f"[x] {m}" for m in ALL]
    with psycopg.connect(empty_db) as conn:
        row = conn.execute("select count(*) from pg_proc where pronamespace = 'pgwallet'::regnamespace").fetchone()
    assert row is not None and row[0] > 100
    assert run("check").stdout.startswith("ok")


def test_a_rollback_asks_first_on_a_terminal(empty_db: str) -> None:
    migrations.migrate(empty_db)
    for args in (["--rollback", "--all"], ["--rollback"]):
        answer = CliRunner().invoke(cli, ["--database-url", empty_db, "migrate", *args], input=TtyInput(b"n\n"))
        assert answer.exit_code == 1 and "Roll back" in answer.output and "dropped" not in answer.output
        assert all(s.applied for s in migrations.status(empty_db))
    done = CliRunner().invoke(cli, ["--database-url", empty_db, "migrate", "--rollback", "--yes"],
                              input=TtyInput(b""))
    assert done.exit_code == 0 and done.output == f"rolled back {ALL[-1]}\n"


def test_procedures_follow_the_schema(empty_db: str) -> None:
    """Up, roll back one, call: NOT_MIGRATED naming both versions (never a 500 on a missing column); roll
    forward, call: it works."""
    migrations.migrate(empty_db)
    assert migrations.rollback(empty_db) == [ALL[-1]]
    with Client(empty_db) as client, pytest.raises(errors.NotMigrated) as stale:
        client.get_account(1)
    assert f"the database is at {ALL[-2]}, this code expects {ALL[-1]}" in (stale.value.detail or "")
    migrations.migrate(empty_db)
    with Client(empty_db) as client, pytest.raises(errors.AccountNotFound):
        client.get_account(1)


def test_a_stale_lock_is_named_and_broken(empty_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    migrations.migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:  # what a killed `yoyo apply` leaves
        conn.execute("insert into yoyo_lock (locked, ctime, pid) values (1, now(), 999999)")
    monkeypatch.setattr(migrations, "LOCK_WAIT", 0.5)
    stuck = CliRunner().invoke(cli, ["--database-url", empty_db, "migrate"])
    assert stuck.exit_code == 1 and "--break-lock" in stuck.stderr and "Traceback" not in stuck.output
    assert CliRunner().invoke(cli, ["--database-url", empty_db, "migrate", "--list"]).exit_code == 0  # reads
    broken = CliRunner().invoke(cli, ["--database-url", empty_db, "migrate", "--break-lock", "--yes"])
    assert broken.exit_code == 0 and "removed" in broken.output
    assert CliRunner().invoke(cli, ["--database-url", empty_db, "migrate"]).exit_code == 0


def test_plain_yoyo_from_yoyo_ini(empty_db: str) -> None:
    """The DBA's own tool, as documented: DATABASE_URL in yoyo's psycopg 3 form, yoyo.ini, no prompt."""
    env = {**os.environ, "DATABASE_URL": empty_db.replace("postgresql://", "postgresql+psycopg://")}
    yoyo = Path(sys.executable).parent / "yoyo"
    applied = subprocess.run([str(yoyo), "apply"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
    assert applied.returncode == 0, applied.stderr
    assert all(s.applied for s in migrations.status(empty_db))
    with Client(empty_db) as client:  # the post-apply hook installed the procedures
        assert client.check_invariants() == []


def test_the_embedded_home_is_found_from_any_folder_of_the_project(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGWALLET_HOME", raising=False)
    assert default_home(REPO / "sql" / "procedures") == REPO / ".pgwallet"
    project = tmp_path / "project"
    (project / "deep" / "down").mkdir(parents=True)
    (project / ".pgwallet").mkdir()
    assert default_home(project / "deep" / "down") == project / ".pgwallet"
    monkeypatch.setenv("PGWALLET_HOME", str(tmp_path / "elsewhere"))
    assert default_home(project) == tmp_path / "elsewhere"
