"""A private PostgreSQL cluster for development (``pgwallet db up|down|status|url``) and the test harness.

Why this exists: the ledger lives in PL/pgSQL, so every developer and every test run needs a real
PostgreSQL server.  Asking people to configure a shared system server (roles, pg_hba.conf, ports) is
the usual source of "works on my machine"; instead we keep a throw-away cluster in a state folder
(``.pgwallet/`` by default) that only listens on 127.0.0.1, trusts local connections and can be
removed at any time.

Layout of the state folder ``home``::

    home/server.json   port, data dir, log file, binaries, settings (the source of truth for later calls)
    home/data/         the cluster (initdb output)
    home/server.log    server log (pg_ctl -l)

Running as root (containers, CI images): ``initdb`` and ``postgres`` refuse to run as root, so every
binary runs through ``runuser -u USER --`` with USER = ``run_as`` / ``$PGWALLET_PG_USER`` / ``postgres``.
That user owns the data dir and must be able to reach it; when it cannot traverse ``home`` (for instance
``home`` below ``/root`` or pytest's ``/tmp/pytest-of-root``, both mode 700) the cluster goes to
``/var/tmp/pgwallet-<hash of home>/`` instead and ``home/server.json`` records where it is.  Note that
``/var/tmp`` may be cleaned by tmpfiles after a few weeks; ``up()`` then simply creates a fresh cluster.

When no PostgreSQL binaries are found, the optional ``pgserver`` package (``pgwallet[embedded]``, which
bundles PostgreSQL) is used if installed.

Unix only (flock, runuser, pg_ctl).  Nothing here prints: functions return values or raise
:class:`EmbeddedServerError` whose message tells a human what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = [
    "EmbeddedServer",
    "EmbeddedServerError",
    "ServerInfo",
    "default_home",
    "find_bindir",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
STATE_FILE = "server.json"
DEFAULT_RUN_USER = "postgres"
# Where the cluster goes when running as root and the run user cannot reach ``home``.
FALLBACK_ROOT = Path("/var/tmp")
# Searched last by find_bindir(), highest version first (Debian/Ubuntu, then RHEL/PGDG layouts).
VERSIONED_BIN_GLOBS: tuple[tuple[Path, str], ...] = (
    (Path("/usr/lib/postgresql"), "*/bin"),
    (Path("/usr"), "pgsql-*/bin"),
)

_TOOLS = ("initdb", "pg_ctl", "postgres")
_START_TIMEOUT = 60  # seconds, pg_ctl -t
_CONNECT_TIMEOUT = 10.0  # seconds spent retrying the first connection after start
_LOG_TAIL_LINES = 20
# These settings define how we reach the server; letting callers override them would break url().
_RESERVED_SETTINGS = frozenset({"port", "listen_addresses", "unix_socket_directories"})
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


@dataclass(frozen=True)
class ServerInfo:
    """Snapshot of the embedded server, as reported by up()/status()."""

    home: Path  # the state folder
    data_dir: Path  # the cluster; may be outside home when running as root (see module docstring)
    port: int | None  # configured TCP port (also reported when stopped: up() tries to reuse it)
    url: str | None  # postgresql://postgres@127.0.0.1:PORT/DBNAME when running, else None
    running: bool
    source: str  # "binaries:/usr/lib/postgresql/15/bin", "pgserver" or "none" (never set up)


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be managed; the message says what to do about it."""


def _no_postgres_message(bindir_env: str | None) -> str:
    why = (
        f"PGWALLET_PG_BINDIR={bindir_env} does not contain initdb, pg_ctl and postgres "
        "(when it is set, no other place is searched)"
        if bindir_env
        else "no PostgreSQL server binaries were found (looked at `pg_config --bindir`, initdb on PATH, "
        "/usr/lib/postgresql/*/bin)"
    )
    return (
        f"Cannot start a development PostgreSQL server: {why}, and the optional 'pgserver' package "
        "is not installed. Do one of:\n"
        "  * install PostgreSQL, e.g. `sudo apt-get install postgresql` (Debian/Ubuntu) or "
        "`brew install postgresql@16` (macOS), or point PGWALLET_PG_BINDIR at the folder holding "
        "initdb/pg_ctl/postgres;\n"
        "  * `pip install 'pgwallet[embedded]'` (bundles PostgreSQL through pgserver);\n"
        "  * set DATABASE_URL to an existing server, e.g. postgresql://user:password@localhost:5432/pgwallet."
    )


# --------------------------------------------------------------------------- binaries


def _has_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) and (bindir / tool).is_file() for tool in _TOOLS)


def _version_key(name: str) -> tuple[int, ...] | None:
    """'15' -> (15,), '9.6' -> (9, 6), 'pgsql-16' -> (16,); None when not a version."""
    match = re.fullmatch(r"(?:pgsql-)?(\d+(?:\.\d+)*)", name)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def find_bindir() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres, or None if none.

    Order: $PGWALLET_PG_BINDIR if set; `pg_config --bindir` (if pg_config is on PATH and that dir has
    the binaries); `initdb` found on PATH; the highest-version /usr/lib/postgresql/*/bin (numeric sort,
    15 > 9.6).

    Setting $PGWALLET_PG_BINDIR disables the search: if that folder lacks the binaries the answer is
    None (so a user, or a test, can say "do not use the system PostgreSQL").  A directory only counts
    if it holds all three of initdb, pg_ctl and postgres.  After /usr/lib/postgresql, the RHEL/PGDG
    layout /usr/pgsql-*/bin is also tried.
    """
    env = os.environ.get("PGWALLET_PG_BINDIR")
    if env:
        forced = Path(env).expanduser()
        return forced if _has_tools(forced) else None

    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_tools(Path(out)):
            return Path(out)

    initdb = shutil.which("initdb")
    if initdb:
        # /usr/local/bin/initdb is often a symlink into the real bindir: prefer the real one.
        for candidate in (Path(initdb).resolve().parent, Path(initdb).parent):
            if _has_tools(candidate):
                return candidate

    for root, pattern in VERSIONED_BIN_GLOBS:
        found: list[tuple[tuple[int, ...], Path]] = []
        for bindir in root.glob(pattern):
            key = _version_key(bindir.parent.name)
            if key is not None and _has_tools(bindir):
                found.append((key, bindir))
        if found:
            return max(found)[1]
    return None


def default_home(start: Path | None = None) -> Path:
    """$PGWALLET_HOME if set; else the ``.pgwallet`` folder of the project this folder is in: the nearest
    one from here up, or the project's root (the nearest folder with ``yoyo.ini`` and ``sql/migrations``,
    or a ``pyproject.toml``); else ``.pgwallet`` here. So ``pgwallet db url`` answers from any folder of a
    checkout, not only from its root."""
    env = os.environ.get("PGWALLET_HOME")
    if env:
        return Path(env).expanduser()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".pgwallet").is_dir():
            return folder / ".pgwallet"
    for folder in (here, *here.parents):
        if ((folder / "yoyo.ini").is_file() and (folder / "sql" / "migrations").is_dir()) \
                or (folder / "pyproject.toml").is_file():
            return folder / ".pgwallet"
    return here / ".pgwallet"


# --------------------------------------------------------------------------- small helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR like the postmaster, so that TIME_WAIT leftovers of our own previous run
    # do not make us abandon the saved port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    # A killed postmaster lingers as a zombie when PID 1 does not reap orphans (many containers).
    return not _is_zombie(pid)


def _processes_in(data_dir: Path) -> list[int]:
    """Live processes whose working directory is data_dir (postgres processes chdir there)."""
    target = str(data_dir.resolve())
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == target and _pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _clear_zombie_pid_file(data_dir: Path) -> None:
    """Remove postmaster.pid when it names a zombie (a postmaster killed with -9 nobody reaped).

    postgres itself only ignores a lock file whose pid no longer exists, and a zombie still exists,
    so without this a `kill -9`-ed server could never be restarted in such containers.  Orphaned
    backends of the dead postmaster must be gone first: the lock file is what protects against two
    sets of processes writing the same cluster.
    """
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid <= 0 or not _is_zombie(pid):
        return
    deadline = time.monotonic() + 15
    while leftovers := _processes_in(data_dir):
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"The PostgreSQL server in {data_dir} died, but its processes {leftovers} are still "
                f"running; stop them (kill {' '.join(map(str, leftovers))}) and run again."
            )
        time.sleep(0.1)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()


def _postmaster(data_dir: Path) -> tuple[int, int | None] | None:
    """(pid, port) of a live postmaster according to data_dir/postmaster.pid, else None (stale/absent)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 0 or not _pid_alive(pid):
        return None
    try:
        port: int | None = int(lines[3])
    except (ValueError, IndexError):
        port = None
    return pid, port


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _log_tail(log_file: Path | None) -> str:
    if log_file is None:
        return ""
    try:
        content = log_file.read_text(errors="replace")
    except OSError:
        return ""
    return f"\n--- last lines of {log_file} ---\n{_tail(content)}" if content.strip() else ""


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --------------------------------------------------------------------------- the server


class EmbeddedServer:
    """A development cluster kept in ``home`` (see the module docstring for layout and root handling).

    ``settings`` are extra ``-c name=value`` server settings applied on every start (the test harness
    passes fsync=off and friends); they are saved in server.json, and ``settings=None`` reuses the saved
    ones.  Changing them only takes effect at the next start (``down()`` then ``up()``).  ``run_as`` is
    the unprivileged account used when running as root for a *new* cluster; an existing cluster always
    runs as the account that owns its data dir.  It is ignored for non-root users.
    """

    def __init__(
        self,
        home: Path | None = None,
        dbname: str = "pgwallet",
        settings: Mapping[str, str] | None = None,
        run_as: str | None = None,
    ) -> None:
        self.home = Path(home if home is not None else default_home()).expanduser().resolve()
        if not dbname:
            raise ValueError("dbname must not be empty")
        self.dbname = dbname
        self._settings: dict[str, str] | None = None
        if settings is not None:
            self._settings = {}
            for name, value in settings.items():
                if not _SETTING_NAME.match(name) or name.lower() in _RESERVED_SETTINGS:
                    raise ValueError(f"invalid or reserved server setting name: {name!r}")
                if "\0" in str(value):
                    raise ValueError(f"server setting {name} contains a NUL byte")
                self._settings[name] = str(value)
        self._run_as = run_as

    # ------------------------------------------------------------------ public API

    def up(self) -> ServerInfo:
        """Make the server run: initdb if needed, start if stopped, create the database if missing.

        Idempotent, and safe against concurrent callers on the same home (flock on the folder).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with self._locked():
            state = self._load_state()
            if state.get("source") == "pgserver":
                return self._up_pgserver(state)
            bindir = self._choose_bindir(state)
            if bindir is None:
                return self._up_pgserver(state)
            return self._up_binaries(state, bindir)

    def down(self) -> None:
        """Stop the server (pg_ctl stop -m fast); nothing happens if it is not running."""
        if not self.home.is_dir():
            return
        with self._locked():
            self._down_locked(self._load_state())

    def status(self) -> ServerInfo:
        """Report without changing anything; a postmaster killed with -9 counts as stopped."""
        state = self._load_state()
        source = str(state.get("source", "none"))
        data_dir, _ = self._locate(state)
        saved_port = state.get("port")
        port = saved_port if isinstance(saved_port, int) else None
        live = _postmaster(data_dir)
        running = False
        url: str | None = None
        if live is not None:
            if source == "pgserver":
                running = True
                admin_url = state.get("admin_url")
                if isinstance(admin_url, str):  # pgserver's unix-socket URL, pointed at our database
                    url = urlsplit(admin_url)._replace(path="/" + quote(self.dbname, safe="")).geturl()
            else:
                port = live[1] if live[1] is not None else port
                if port is not None and _accepts_tcp(port):
                    running = True
                    url = self._url_for(port)
        return ServerInfo(home=self.home, data_dir=data_dir, port=port, url=url, running=running, source=source)

    def url(self) -> str | None:
        """Connection URL of the running server, None when stopped."""
        return self.status().url

    def destroy(self) -> None:
        """Stop the server and remove the cluster, its log and server.json (used by tests)."""
        if not self.home.is_dir():
            return
        with self._locked():
            state = self._load_state()
            self._down_locked(state)
            data_dir, log_file = self._locate(state)
            fallback = self._fallback_base()
            known = {self.home / "data", self.home / "pgserver", fallback / "data"}
            # Only delete what is ours: a known location, or a folder that really is a cluster.
            if data_dir in known or (data_dir / "PG_VERSION").exists():
                shutil.rmtree(data_dir, ignore_errors=True)
            for path in (log_file, self.home / STATE_FILE, self.home / "server.log"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            shutil.rmtree(self.home / "pgserver", ignore_errors=True)
            shutil.rmtree(fallback, ignore_errors=True)

    # ------------------------------------------------------------------ state

    def _state_path(self) -> Path:
        return self.home / STATE_FILE

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, state: Mapping[str, Any]) -> None:
        tmp = self._state_path().with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(state), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self._state_path())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.home, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _fallback_base(self) -> Path:
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]
        return FALLBACK_ROOT / f"pgwallet-{digest}"

    def _locate(self, state: Mapping[str, Any]) -> tuple[Path, Path]:
        """(data_dir, log_file): as recorded, else home/, else the root fallback if that one exists."""
        if isinstance(state.get("data_dir"), str):
            data_dir = Path(state["data_dir"])
            log = state.get("log_file")
            return data_dir, Path(log) if isinstance(log, str) else data_dir.parent / "server.log"
        if state.get("source") == "pgserver":
            return self.home / "pgserver", self.home / "pgserver" / "log"
        local = (self.home / "data", self.home / "server.log")
        fallback = self._fallback_base()
        if not local[0].exists() and (fallback / "data").exists():
            return fallback / "data", fallback / "server.log"
        return local

    def _url_for(self, port: int) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{port}/{quote(self.dbname, safe='')}"

    def _effective_settings(self, state: Mapping[str, Any]) -> dict[str, str]:
        if self._settings is not None:
            return dict(self._settings)
        saved = state.get("settings")
        return {str(k): str(v) for k, v in saved.items()} if isinstance(saved, dict) else {}

    # ------------------------------------------------------------------ running commands

    def _run_account(self, data_dir: Path) -> pwd.struct_passwd | None:
        """None when we are not root; else the unprivileged account that runs the binaries."""
        if os.geteuid() != 0:
            return None
        with contextlib.suppress(OSError):
            owner = data_dir.stat().st_uid
            if owner != 0 and (data_dir / "PG_VERSION").exists():
                with contextlib.suppress(KeyError):
                    return pwd.getpwuid(owner)
        name = self._run_as or os.environ.get("PGWALLET_PG_USER") or DEFAULT_RUN_USER
        hint = (
            "Create an unprivileged user (e.g. `useradd --system --no-create-home postgres`), "
            "or set PGWALLET_PG_USER to an existing unprivileged user, "
            "or set DATABASE_URL to an existing PostgreSQL server."
        )
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedServerError(
                f"Running as root, and PostgreSQL refuses to run as root, so the development server "
                f"must run as an unprivileged user, but user {name!r} does not exist. {hint}"
            ) from None
        if account.pw_uid == 0:
            raise EmbeddedServerError(f"User {name!r} has uid 0; PostgreSQL refuses to run as root. {hint}")
        return account

    def _run(
        self,
        args: list[str],
        account: pwd.struct_passwd | None,
        *,
        what: str,
        timeout: float = 120,
        log_file: Path | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        cmd = args if account is None else ["runuser", "-u", account.pw_name, "--", *args]
        env = dict(os.environ, LC_ALL="C")
        if account is not None:
            env.update(HOME=account.pw_dir or "/", USER=account.pw_name, LOGNAME=account.pw_name)
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                errors="replace",
                env=env,
                cwd="/",  # the run user may not be allowed into our cwd
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as exc:
            tip = (
                "`runuser` (util-linux) is needed when running as root; install it or run as a normal user"
                if account is not None
                else "check PGWALLET_PG_BINDIR / your PostgreSQL installation"
            )
            raise EmbeddedServerError(f"{what}: cannot execute {cmd[0]}: {exc}. {tip}.") from exc
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedServerError(
                f"{what} did not finish within {timeout:.0f} s: {shlex.join(cmd)}{_log_tail(log_file)}"
            ) from exc
        if check and proc.returncode != 0:
            output = _tail(proc.stderr + "\n" + proc.stdout)
            raise EmbeddedServerError(
                f"{what} failed (exit code {proc.returncode}): {shlex.join(cmd)}\n{output}{_log_tail(log_file)}"
            )
        return proc

    def _reachable(self, account: pwd.struct_passwd, test_args: list[str]) -> bool:
        proc = self._run(["test", *test_args], account, what="permission check", timeout=30, check=False)
        return proc.returncode == 0

    # ------------------------------------------------------------------ binaries

    def _choose_bindir(self, state: Mapping[str, Any]) -> Path | None:
        # The cluster must keep running with the binaries that created it, unless the user overrides.
        saved = state.get("bindir")
        if not os.environ.get("PGWALLET_PG_BINDIR") and isinstance(saved, str) and _has_tools(Path(saved)):
            return Path(saved)
        return find_bindir()

    def _prepare_layout(self, state: Mapping[str, Any], account: pwd.struct_passwd | None) -> tuple[Path, Path]:
        data_dir, log_file = self._locate(state)
        if account is None:
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            data_dir.mkdir(mode=0o700, exist_ok=True)
            return data_dir, log_file

        uid, gid = account.pw_uid, account.pw_gid
        # Can the run user traverse every folder down to home?  `test -x` resolves the whole path
        # as that user, so a mode-700 ancestor (/root, /tmp/pytest-of-root) makes it fail.
        if (
            "data_dir" not in state
            and data_dir == self.home / "data"
            and not self._reachable(account, ["-x", str(self.home)])
        ):
            base = self._fallback_base()
            data_dir, log_file = base / "data", base / "server.log"
        if data_dir.parent != self.home:
            base = data_dir.parent
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = base.lstat()
            if not base.is_dir() or base.is_symlink() or st.st_uid not in (0, uid):
                raise EmbeddedServerError(
                    f"{base} exists but is not a folder owned by root or {account.pw_name}; remove it and run again."
                )
            os.chown(base, uid, gid)
            base.chmod(0o700)
        data_dir.mkdir(mode=0o700, exist_ok=True)
        if not (data_dir / "PG_VERSION").exists():
            os.chown(data_dir, uid, gid)
            data_dir.chmod(0o700)
        log_file.touch(exist_ok=True)
        os.chown(log_file, uid, gid)
        if not self._reachable(account, ["-w", str(data_dir), "-a", "-w", str(log_file)]):
            raise EmbeddedServerError(
                f"User {account.pw_name} cannot write {data_dir} or {log_file}. Make the folders "
                f"reachable for that user, choose another home (PGWALLET_HOME) or user (PGWALLET_PG_USER), "
                "or set DATABASE_URL to an existing server."
            )
        return data_dir, log_file

    def _up_binaries(self, state: dict[str, Any], bindir: Path) -> ServerInfo:
        account = self._run_account(self._locate(state)[0])
        data_dir, log_file = self._prepare_layout(state, account)
        settings = self._effective_settings(state)
        state.update(
            source=f"binaries:{bindir}",
            bindir=str(bindir),
            data_dir=str(data_dir),
            log_file=str(log_file),
            settings=settings,
            dbname=self.dbname,
        )
        state.pop("admin_url", None)
        self._save_state(state)  # from now on status/down/destroy find the cluster

        if not (data_dir / "PG_VERSION").exists():
            if any(data_dir.iterdir()):
                raise EmbeddedServerError(
                    f"{data_dir} is not empty but holds no PostgreSQL cluster (an interrupted initdb?). "
                    f"Remove it (rm -rf '{data_dir}') and run again."
                )
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",  # a dev cluster: skip the fsync of every initial file
                ],
                account,
                what="initdb",
            )

        live = _postmaster(data_dir)
        if live is not None and live[1] is not None:
            port = live[1]
        else:
            _clear_zombie_pid_file(data_dir)
            saved = state.get("port")
            port = saved if isinstance(saved, int) and _port_is_free(saved) else _free_port()
            port = self._start(bindir, data_dir, log_file, port, settings, account)
        state["port"] = port
        self._save_state(state)
        self._ensure_database(
            make_conninfo(host=HOST, port=port, user=SUPERUSER, dbname="postgres", sslmode="disable"),
            log_file,
        )
        return self.status()

    def _start(
        self,
        bindir: Path,
        data_dir: Path,
        log_file: Path,
        port: int,
        settings: Mapping[str, str],
        account: pwd.struct_passwd | None,
    ) -> int:
        """pg_ctl start; returns the port used (a new one if someone grabbed ours meanwhile)."""
        for attempt in range(3):
            options = [
                "-p",
                str(port),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                "unix_socket_directories=",  # TCP only: no socket path length or permission problems
                "-c",
                "max_connections=300",
            ]
            for name, value in settings.items():
                options += ["-c", f"{name}={value}"]
            try:
                self._run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data_dir),
                        "-l",
                        str(log_file),
                        "-w",
                        "-t",
                        str(_START_TIMEOUT),
                        # pg_ctl hands -o to /bin/sh, hence the quoting
                        "-o",
                        shlex.join(options),
                        "start",
                    ],
                    account,
                    what="starting PostgreSQL (pg_ctl start)",
                    timeout=_START_TIMEOUT + 30,
                    log_file=log_file,
                )
            except EmbeddedServerError:
                # Lost a race for the port? Then try another one; anything else is a real failure.
                if attempt < 2 and _postmaster(data_dir) is None and not _port_is_free(port):
                    port = _free_port()
                    continue
                raise
            return port
        raise AssertionError("unreachable")  # pragma: no cover

    def _down_locked(self, state: Mapping[str, Any]) -> None:
        data_dir, log_file = self._locate(state)
        live = _postmaster(data_dir)
        if live is None:
            return
        pid = live[0]
        bindir = self._choose_bindir(state)
        if state.get("source") == "pgserver" or bindir is None:
            self._stop_by_signal(pid, data_dir)
            return
        try:
            self._run(
                [str(bindir / "pg_ctl"), "stop", "-D", str(data_dir), "-m", "fast", "-w", "-t", "60"],
                self._run_account(data_dir),
                what="stopping PostgreSQL (pg_ctl stop)",
                timeout=90,
                log_file=log_file,
            )
        except EmbeddedServerError:
            if _postmaster(data_dir) is not None:
                raise

    @staticmethod
    def _stop_by_signal(pid: int, data_dir: Path) -> None:
        """What `pg_ctl stop -m fast` does: SIGINT to the postmaster, then wait."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not _wait_gone(pid, 60):
            raise EmbeddedServerError(
                f"PostgreSQL (pid {pid}, data {data_dir}) did not stop within 60 s; stop it by hand (kill {pid})."
            )

    # ------------------------------------------------------------------ database

    def _ensure_database(self, conninfo: str, log_file: Path | None) -> None:
        deadline = time.monotonic() + _CONNECT_TIMEOUT
        while True:
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
                    found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone()
                    if found is None:
                        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"The server started but does not accept connections ({exc}).{_log_tail(log_file)}"
                    ) from exc
                time.sleep(0.2)

    # ------------------------------------------------------------------ pgserver fallback

    def _up_pgserver(self, state: dict[str, Any]) -> ServerInfo:
        try:
            import pgserver
        except ImportError:
            raise EmbeddedServerError(_no_postgres_message(os.environ.get("PGWALLET_PG_BINDIR"))) from None
        data_dir = self.home / "pgserver"
        try:
            # cleanup_mode=None: the server outlives this process, like the binaries-based one.
            server = pgserver.get_server(str(data_dir), cleanup_mode=None)
            admin_url = str(server.get_uri("postgres"))
        except Exception as exc:
            raise EmbeddedServerError(
                f"pgserver could not start a server in {data_dir}: {exc}{_log_tail(data_dir / 'log')}"
            ) from exc
        state.update(source="pgserver", data_dir=str(data_dir), log_file=str(data_dir / "log"))
        state.update(admin_url=admin_url, dbname=self.dbname, port=None)
        self._save_state(state)
        self._ensure_database(admin_url, data_dir / "log")
        return self.status()
