"""Feature flags: ``pgwallet flags list | enable NAME | disable NAME``.

A flag is read by the procedures it guards on every call: switching it takes effect on the next call,
with no deploy and no restart.
"""

from __future__ import annotations

import click

from cli.context import AppContext, confirm, emit, json_option, pass_app, staff_option, yes_option
from pyapp.investments import FeatureFlag


def describe_flag(flag: FeatureFlag) -> str:
    by = f" (by {flag.updated_by} at {flag.updated_at.isoformat(timespec='seconds')})" if flag.updated_by \
        and flag.updated_at else ""
    return f"{'on ' if flag.enabled else 'OFF'} {flag.name}: {flag.description}{by}"


@click.group()
def flags() -> None:
    """Feature flags (kill switches): list, enable, disable."""


@flags.command("list")
@json_option
@pass_app
def flags_list(app: AppContext, as_json: bool) -> None:
    """Every flag and its state."""
    found = app.client.list_feature_flags()
    emit(found, as_json, "\n".join(describe_flag(f) for f in found))


@flags.command("enable")
@click.argument("name")
@staff_option
@json_option
@pass_app
def flags_enable(app: AppContext, name: str, staff_id: int, as_json: bool) -> None:
    """Switch NAME on."""
    flag = app.client.set_feature_flag(name, True, staff_id)
    emit(flag, as_json, describe_flag(flag))


@flags.command("disable")
@click.argument("name")
@staff_option
@yes_option
@json_option
@pass_app
def flags_disable(app: AppContext, name: str, staff_id: int, yes: bool, as_json: bool) -> None:
    """Switch NAME off: the calls it guards are refused (FEATURE_DISABLED) from the next one on."""
    confirm(f"Switch {name} off? The calls it guards are refused at once.", yes)
    flag = app.client.set_feature_flag(name, False, staff_id)
    emit(flag, as_json, describe_flag(flag))


COMMANDS = (flags,)
