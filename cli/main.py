"""``pgwallet``: the command line for staff and operators.

Exit codes: 0 done; 1 refused by a rule or the database is unreachable (the error code is printed);
2 usage error (click's own). No traceback reaches the user.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, yes_option
from pyapp import migrations
from pyapp.embedded import EmbeddedServer, EmbeddedServerError
from pyapp.errors import PgWalletError


class Group(click.Group):
    """Turns pgwallet's errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgWalletError as exc:
            if isinstance(ctx.obj, AppContext) and ctx.obj.as_json:
                click.echo(json.dumps({"error": exc.to_dict()}), err=True)
            else:
                click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except EmbeddedServerError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=Group)
@click.version_option(package_name="pgwallet", prog_name="pgwallet")
@click.option("--database-url", envvar="DATABASE_URL", default=None, metavar="URL",
              help="postgresql://... (default: $DATABASE_URL, else the embedded server if it runs).")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """pgwallet: money movements inside PostgreSQL."""
    app = AppContext(database_url)
    ctx.obj = app
    ctx.call_on_close(app.close)


@cli.group()
def db() -> None:
    """The embedded PostgreSQL server under .pgwallet/ (or $PGWALLET_HOME)."""


@db.command("up")
@json_option
def db_up(as_json: bool) -> None:
    """Create and start the embedded server (idempotent); print its URL."""
    info = EmbeddedServer().up()
    emit(info, as_json, info.url or "")


@db.command("down")
def db_down() -> None:
    """Stop the embedded server."""
    EmbeddedServer().down()
    click.echo("stopped")


@db.command("status")
@json_option
def db_status(as_json: bool) -> None:
    """Is the embedded server running, where, on which port."""
    server = EmbeddedServer()
    info = server.status()
    text = (f"running at {info.url} ({info.source}, data in {info.data_dir})" if info.running
            else f"stopped (home {server.home}: PGWALLET_HOME, else the .pgwallet of this project)")
    emit(info, as_json, text)
    if not info.running:
        sys.exit(3)


@db.command("url")
def db_url() -> None:
    """Print the embedded server's URL (exit 3 when it is not running)."""
    server = EmbeddedServer()
    url = server.url()
    if not url:
        click.echo(f"the embedded server of {server.home} is not running: `pgwallet db up` (looked for "
                   ".pgwallet/ from this folder up to the project's root; PGWALLET_HOME overrides)", err=True)
        sys.exit(3)
    click.echo(url)


@cli.command()
@click.option("--list", "show_list", is_flag=True, help="List migrations and whether each is applied.")
@click.option("--rollback", is_flag=True, help="Roll back the latest migration (asks first on a terminal).")
@click.option("--all", "all_migrations", is_flag=True, help="With --rollback: roll back every migration.")
@click.option("--break-lock", is_flag=True, help="Remove yoyo's lock left by a killed migration (none may run).")
@yes_option
@json_option
@pass_app
def migrate(app: AppContext, show_list: bool, rollback: bool, all_migrations: bool, break_lock: bool, yes: bool,
            as_json: bool) -> None:
    """Apply pending migrations, then re-install sql/procedures (one transaction).

    URL: DATABASE_URL or --database-url, postgresql:// or postgresql+psycopg://; a multi-host URL migrates
    its primary. A rollback drops the procedures too: calls answer NOT_MIGRATED until the next migrate."""
    if all_migrations and not rollback:
        raise click.UsageError("--all goes with --rollback")
    if break_lock:
        confirm("Remove yoyo's migration lock? Only when no migration is running.", yes)
        migrations.break_lock(app.url)
        emit({"lock": "broken"}, as_json, "yoyo's migration lock removed")
        return
    if show_list:
        states = migrations.status(app.url)
        emit(states, as_json, "\n".join(f"[{'x' if s.applied else ' '}] {s.id}" for s in states))
        return
    if rollback:
        applied = [s.id for s in migrations.status(app.url) if s.applied]
        going = applied[::-1] if all_migrations else applied[-1:]
        if going:
            what = "every pgwallet table and its data" if all_migrations else "its tables and their data"
            confirm(f"Roll back {', '.join(going)}? This drops {what}.", yes)
        done = migrations.rollback(app.url, all_migrations=all_migrations)
        emit({"rolled_back": done}, as_json, "\n".join(f"rolled back {m}" for m in done) or "nothing to roll back")
        return
    applied = migrations.migrate(app.url)
    emit({"applied": applied}, as_json,
         "\n".join(f"applied {m}" for m in applied) + ("\n" if applied else "") + "procedures installed")


@cli.command()
@json_option
@pass_app
def check(app: AppContext, as_json: bool) -> None:
    """Check the ledger invariants; exit 1 when one is violated."""
    violations = app.client.check_invariants()
    lines = [f"VIOLATED {v.invariant}: account {v.account_id} {v.currency or ''} {v.detail}" for v in violations]
    emit({"ok": not violations, "violations": violations}, as_json,
         "\n".join(lines) or "ok: every ledger invariant holds")
    if violations:
        sys.exit(1)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="Processes (uvicorn workers).")
@click.option("--hash-token", "token", default=None, metavar="TOKEN",
              help="Print the SHA-256 to configure for TOKEN (PGWALLET_HTTP_TOKENS=name:tier:HASH) and exit.")
@pass_app
def serve(app: AppContext, host: str, port: int, workers: int, token: str | None) -> None:
    """Run the HTTP service: /v1 routes, the seeds' paths, /admin, /healthz, /readyz, /metrics."""
    if token is not None:
        from pyapp.http.tokens import token_hash

        click.echo(token_hash(token))
        return
    try:
        import uvicorn

        from pyapp.http.tokens import TokenConfigError, Tokens
    except ImportError as exc:
        raise click.ClickException(f"the HTTP service needs its extra: pip install 'pgwallet[http]' ({exc})") from exc
    try:
        tokens = Tokens.from_env()
    except TokenConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if not tokens:
        click.echo("warning: no token configured (PGWALLET_HTTP_TOKENS): every route but the Stripe webhook, "
                   "/healthz, /readyz and /metrics answers 401", err=True)
    import os

    os.environ["DATABASE_URL"] = app.url
    uvicorn.run("pyapp.http:app", host=host, port=port, workers=workers, log_level="info",
                proxy_headers=True, forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"))


@cli.command("roles")
@pass_app
def roles(app: AppContext) -> None:
    """Print the privilege matrix: which role tier may call which public function (as in the README)."""
    import psycopg

    from pyapp.client import error_from_psycopg
    from pyapp.roles import privilege_matrix

    try:
        with psycopg.connect(app.url, autocommit=True) as conn:
            click.echo(privilege_matrix(conn))
    except psycopg.Error as exc:
        raise error_from_psycopg(exc) from exc


def _register() -> None:
    from cli import cashless, demo, flags, invest, jobs, ledger, payouts, queue

    for command in (*ledger.COMMANDS, *cashless.COMMANDS, *queue.COMMANDS, *payouts.COMMANDS, *jobs.COMMANDS,
                    *flags.COMMANDS, *invest.COMMANDS, demo.demo):
        cli.add_command(command)


_register()


def global_options_first(args: list[str]) -> list[str]:
    """``--database-url`` may come after the subcommand too (``pgwallet account show 4 --database-url U``):
    moved to the front, where click reads it."""
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg == "--database-url" and i + 1 < len(args):
            moved += args[i:i + 2]
            i += 2
            continue
        (moved if arg.startswith("--database-url=") else rest).append(arg)
        i += 1
    return moved + rest


def main() -> None:
    # the pool's retries would print a warning per attempt; the one error line (what failed, where) is ours
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    cli(args=global_options_first(sys.argv[1:]), prog_name="pgwallet")
