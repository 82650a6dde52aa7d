"""Real PostgreSQL clusters for the fault suites: a durable primary, a synchronous standby made with
pg_basebackup, promotion, ``kill -9`` of the postmaster, and PgBouncer in front. Started from the local
binaries; as root, as the unprivileged ``postgres`` user (initdb, postgres and pgbouncer refuse root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pyapp.embedded import find_bindir

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "wal_level": "replica",
           "max_wal_senders": "10", "max_connections": "200", "shared_buffers": "128MB", "hot_standby": "on",
           "wal_keep_size": "256MB", "listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_user() -> pwd.struct_passwd | None:
    """The account the binaries run as: None for an ordinary user, ``postgres`` (or PGWALLET_PG_USER) as root."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(os.environ.get("PGWALLET_PG_USER", "postgres"))


def run(args: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    account = run_user()
    cmd = args if account is None else ["runuser", "-u", account.pw_name, "--", *args]
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/", timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}{proc.stdout[-500:]}")
    return proc


def workdir(prefix: str) -> Path:
    """A folder the run user owns, on disk (/var/tmp): these clusters are durable."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    account = run_user()
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)
    base.chmod(0o755)
    return base


@dataclass
class Cluster:
    """One PostgreSQL cluster (data directory + port)."""

    data: Path
    port: int
    name: str
    bindir: Path = field(default_factory=lambda: find_bindir() or Path("/usr/bin"))

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    @classmethod
    def init(cls, base: Path, name: str, settings: dict[str, str] | None = None) -> Cluster:
        cluster = cls(base / name, free_port(), name)
        run([cluster.tool("initdb"), "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-locale"])
        conf = {**DURABLE, **(settings or {}), "port": str(cluster.port)}
        with (cluster.data / "postgresql.auto.conf").open("a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        with (cluster.data / "pg_hba.conf").open("a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")
        return cluster

    def start(self) -> None:
        run([self.tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])

    def stop(self) -> None:
        run([self.tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], check=False)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill9(self) -> None:
        """``kill -9`` of the postmaster, then of its children (as an OOM kill or a crashed host would)."""
        pid = self.postmaster_pid()
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(_alive(int(p)) for p in [pid, *children]):
                return
            time.sleep(0.05)

    def standby(self, base: Path, name: str) -> Cluster:
        """A streaming standby of this cluster named ``name`` (its application_name), started."""
        replica = Cluster(base / name, free_port(), name, self.bindir)
        run([self.tool("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D",
             str(replica.data), "-X", "stream", "-R", "-c", "fast"])
        with (replica.data / "postgresql.auto.conf").open("a") as f:
            f.write(f"port = {replica.port}\n")
            f.write(f"primary_conninfo = 'host=127.0.0.1 port={self.port} user=postgres "
                    f"application_name={name}'\n")
            f.write("synchronous_standby_names = ''\n")
        replica.start()
        return replica

    def promote(self) -> None:
        run([self.tool("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote"])

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def set(self, name: str, value: str) -> None:
        self.sql(f"alter system set {name} = '{value}'")
        self.sql("select pg_reload_conf()")

    def wait_streaming(self, standby: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql(f"select state from pg_stat_replication where application_name = '{standby}'")
            if rows and rows[0][0] == "streaming":
                return
            time.sleep(0.1)
        raise RuntimeError(f"standby {standby} is not streaming from {self.name}")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@dataclass
class Bouncer:
    """PgBouncer in transaction mode in front of ``target``, database ``dbname``."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, target: Cluster, dbname: str, workdir: Path) -> Bouncer:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        port = free_port()
        ini = workdir / "pgbouncer.ini"
        ini.write_text(f"""[databases]
{dbname} = host=127.0.0.1 port={target.port} dbname={dbname} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
logfile = {workdir / 'pgbouncer.log'}
pidfile = {workdir / 'pgbouncer.pid'}
""")
        account = run_user()
        if account is not None:
            for path in (workdir, ini):
                os.chown(path, account.pw_uid, account.pw_gid)
        cmd = [binary, str(ini)] if account is None else ["runuser", "-u", account.pw_name, "--", binary, str(ini)]
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return cls(workdir, port, process)
            time.sleep(0.05)
        process.kill()
        raise RuntimeError(f"pgbouncer did not listen on {port}: {(workdir / 'pgbouncer.log').read_text()[-2000:]}")

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
