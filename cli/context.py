"""What every command shares: the database URL, one client, output and confirmation helpers."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from pyapp.client import Client
from pyapp.errors import DatabaseError
from pyapp.settings import database_url


class AppContext:
    """Resolves the URL lazily, so ``pgwallet db up`` and ``--help`` need no database."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self._client: Client | None = None
        self.as_json = False  # set by any subcommand's --json, so errors come out as JSON too

    @property
    def url(self) -> str:
        resolved = database_url(self._url)
        if resolved:
            return resolved
        from pyapp.embedded import EmbeddedServer

        embedded = EmbeddedServer().url()
        if embedded:
            return embedded
        raise DatabaseError(detail="no database: pass --database-url, set DATABASE_URL, or run `pgwallet db up`")

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, min_size=1, max_size=4, timeout=5).open(wait=True)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


pass_app = click.make_pass_decorator(AppContext)

def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    app = ctx.find_object(AppContext)
    if value and app is not None:
        app.as_json = True
    return value


json_option = click.option("--json", "as_json", is_flag=True, callback=_remember_json,
                           help="Print the result as JSON (errors too).")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def emit(value: Any, as_json: bool, text: str) -> None:
    """Print ``value`` as JSON with ``--json``, else the human ``text``."""
    click.echo(json.dumps(_plain(value), indent=2, sort_keys=True) if as_json else text)


def confirm(question: str, yes: bool) -> None:
    """Ask before moving money, unless ``--yes`` or standard input is not a terminal (scripts, CI)."""
    if yes or not sys.stdin.isatty():
        return
    if not click.confirm(question, default=False):
        raise click.Abort()


#: The active staff member (pgwallet.staff) a staff command acts as: recorded, and what rate limits count.
staff_option = click.option("--staff", "staff_id", type=int, required=True, envvar="PGWALLET_STAFF_ID",
                            help="Your staff id (`pgwallet staff add NAME`; or $PGWALLET_STAFF_ID).")


def worker_logging() -> None:
    """Workers' log records (pgwallet.*) at INFO, each with its time, on standard error: a worker runs for
    hours under systemd or in a container, and its lines are read afterwards."""
    import logging

    logger = logging.getLogger("pgwallet")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def stamped(line: str) -> str:
    """``line`` with the local time in front, for the lines a worker prints."""
    from datetime import datetime

    return f"{datetime.now().astimezone().isoformat(timespec='seconds')} {line}"
