"""Typed, immutable results. Each is built from a JSON response or a row by ``from_mapping``."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self


class Result:
    """Mixin: build the dataclass from a mapping, keeping only its fields, with exact types."""

    @classmethod
    def from_mapping(cls, data: typing.Mapping[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                values[f.name] = _coerce(hints[f.name], data[f.name])
        return cls(**values)


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    types = typing.get_args(hint) or (hint,)
    if datetime in types and isinstance(value, str):
        return datetime.fromisoformat(value)
    if typing.get_origin(hint) is tuple:
        item = (typing.get_args(hint) or (None,))[0]
        if isinstance(item, type) and issubclass(item, Result):  # a list of results, e.g. the items of a batch
            return tuple(item.from_mapping(v) for v in value)
        return tuple(value)
    return value


@dataclass(frozen=True)
class Account(Result):
    id: int
    currency: str
    exponent: int
    kind: str
    status: str
    balance: int
    held: int
    available: int
    version: int
    allow_negative: bool
    collector: bool
    name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Transfer(Result):
    operation_id: int
    transfer_ids: tuple[int, ...]
    debit_account_id: int
    credit_account_id: int
    amount: int
    currency: str
    created_at: datetime
    replayed: bool


@dataclass(frozen=True)
class Operation(Result):
    operation_id: int
    transfer_ids: tuple[int, ...]
    kind: str
    legs: int
    created_at: datetime
    replayed: bool


@dataclass(frozen=True)
class Hold(Result):
    hold_id: int
    account_id: int
    credit_account_id: int
    amount: int
    currency: str
    status: str
    released_amount: int
    replayed: bool
    captured_amount: int | None = None
    settlement_transfer_id: int | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    settled_at: datetime | None = None


@dataclass(frozen=True)
class HistoryEntry(Result):
    entry_id: int
    transfer_id: int
    operation_id: int
    kind: str
    counterparty_account_id: int
    amount: int
    previous_balance: int
    new_balance: int
    account_version: int
    created_at: datetime
    slot: int | None = None
    hold_id: int | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class InvariantViolation(Result):
    invariant: str
    detail: str
    account_id: int | None = None
    currency: str | None = None
