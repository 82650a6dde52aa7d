"""Declarative procedure specs: one Python signature per SQL function, shared by both clients.

A spec is written once, as a typed function signature whose parameters carry their validation rules
(``Annotated[int, AMOUNT]``); :func:`procedure` turns it into a descriptor. Put on
:class:`pyapp.api.Procedures`, the descriptor becomes a method of ``Client`` (returning ``T``) and of
``AsyncClient`` (returning ``Awaitable[T]``), with the same name, arguments and result type. The
descriptor validates the arguments before any connection is touched, then the client sends one
statement and ``decode`` turns what came back into the result dataclass.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from pyapp.errors import invalid

P = ParamSpec("P")
T = TypeVar("T")

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
INT_MAX = 2**31 - 1

Shape = Literal["json", "row", "rows", "scalar"]


@dataclass(frozen=True)
class Rule:
    """How one argument is checked and sent: its SQL type and a check returning the broken rule."""

    sql_type: str
    check: Callable[[Any], str | None]


def _whole(lo: int, hi: int, what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number ({what})"
        if not lo <= value <= hi:
            return f"must be {what}"
        return None

    return check


def _text_problem(value: str) -> str | None:
    """PostgreSQL text holds no NUL, and only what encodes as UTF-8 (no lone surrogates)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def _text(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if not lo <= len(value) <= hi:
            return f"must be {lo} to {hi} characters"
        return _text_problem(value)

    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in choices else f"must be one of {', '.join(choices)}"

    return check


def _json_safe(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return _text_problem(value) is None
    if isinstance(value, int):
        return BIGINT_MIN <= value <= BIGINT_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(
            isinstance(k, str) and _text_problem(k) is None and _json_safe(v, depth + 1) for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return all(_json_safe(v, depth + 1) for v in value)
    return False


def _json_object(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "must be a JSON object"
    return None if _json_safe(value) else "must hold only JSON values (strings without NUL, finite numbers)"


def _legs(value: Any) -> str | None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not 1 <= len(value) <= 1000:
        return "must be a list of 1 to 1000 legs"
    for leg in value:
        if not isinstance(leg, Mapping) or set(leg) != {"debit_account_id", "credit_account_id", "amount"}:
            return "each leg is {debit_account_id, credit_account_id, amount}"
        if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= BIGINT_MAX for v in leg.values()):
            return "each leg holds positive whole numbers (ids and minor units)"
        if leg["debit_account_id"] == leg["credit_account_id"]:
            return "a leg's credit_account_id must differ from its debit_account_id"
    return None


def _to_json(value: Any) -> Any:
    """Plain dicts and lists for json.dumps, whatever Mapping or Sequence the caller passed."""
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


ID = Rule("bigint", _whole(1, BIGINT_MAX, "a positive id"))
AMOUNT = Rule("bigint", _whole(1, BIGINT_MAX, "a positive whole number of minor units"))
KEY = Rule("text", _text(1, 255))
NAME = Rule("text", _text(1, 200))
CURRENCY = Rule("text", _text(1, 16))
SECONDS = Rule("integer", _whole(1, INT_MAX, "a positive number of seconds"))
LIMIT = Rule("integer", _whole(1, 1000, "1 to 1000"))
BATCH = Rule("integer", _whole(1, 100000, "1 to 100000"))
FLAG = Rule("boolean", _boolean)
OBJECT = Rule("jsonb", _json_object)
LEGS = Rule("jsonb", _legs)
IDENTIFIER = Rule("text", _text(1, 63))
#: An end user's id in the calling application: who acts (``acting_user``) or owns an account (``owner``).
USER = Rule("text", _text(1, 200))


READ_PREFIXES = ("pgwallet.get_", "pgwallet.list_")
READS = frozenset({"pgwallet.account_history", "pgwallet.card_history", "pgwallet.check_invariants",
                   "pgwallet.cards_to_cash_out"})


def one_of(*choices: str) -> Rule:
    return Rule("text", _one_of(*choices))


@dataclass(frozen=True)
class Param:
    name: str
    rule: Rule
    optional: bool  # None is allowed and sent as SQL null (the function's own default applies)

    def bind(self, value: Any) -> Any:
        if value is None:
            if self.optional:
                return None
            raise invalid(self.name, "is required")
        broken = self.rule.check(value)
        if broken:
            raise invalid(self.name, broken)
        if self.rule.sql_type == "jsonb":
            if type(value) in (dict, list):  # the common case, dumped as is (a 100,000-item list: 4x faster)
                with contextlib.suppress(TypeError):
                    return json.dumps(value, separators=(",", ":"))
            return json.dumps(_to_json(value if isinstance(value, Mapping) else list(value)), separators=(",", ":"))
        if self.rule.sql_type.endswith("[]"):  # both drivers send a list as an array, not every sequence
            return list(value)
        return value


@dataclass(frozen=True)
class ProcedureSpec(Generic[T]):
    """What a client needs to call one SQL function: name, parameters, result shape and decoder."""

    sql_name: str
    params: tuple[Param, ...]
    shape: Shape
    decode_one: Callable[[Any], T] | None
    signature: inspect.Signature

    @functools.cached_property
    def repeatable(self) -> bool:
        """Safe to send again when its outcome is unknown: it carries an idempotency key (a committed call
        answers its first result again) or only reads. The clients retry only these (``retries=``)."""
        return any(p.rule is KEY or p.name == "stripe_session_id" for p in self.params) or self.reads_only

    @functools.cached_property
    def reads_only(self) -> bool:
        """It changes nothing (a GET route of the HTTP service)."""
        return self.sql_name.startswith(READ_PREFIXES) or self.sql_name in READS

    def sql(self, placeholder: Callable[[int], str]) -> str:
        """The one statement sent, with the driver's placeholders (``%s`` or ``$n``)."""
        args = ", ".join(
            placeholder(i + 1) + ("::text::jsonb" if p.rule.sql_type == "jsonb" else f"::{p.rule.sql_type}")
            for i, p in enumerate(self.params)
        )
        if self.shape == "json":
            return f"select {self.sql_name}({args})::text as result"
        if self.shape == "scalar":
            return f"select {self.sql_name}({args}) as result"
        return f"select * from {self.sql_name}({args})"

    @functools.cached_property
    def format_sql(self) -> str:
        """The statement with ``%s`` placeholders (psycopg)."""
        return self.sql(lambda _: "%s")

    @functools.cached_property
    def numeric_sql(self) -> str:
        """The statement with ``$n`` placeholders (asyncpg)."""
        return self.sql(lambda i: f"${i}")

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """Validate the call's arguments and return them in SQL order; raises INVALID_REQUEST."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise invalid("arguments", str(exc)) from None
        bound.apply_defaults()
        return [p.bind(bound.arguments[p.name]) for p in self.params]

    def decode(self, rows: Sequence[Mapping[str, Any]]) -> T:
        """Turn the rows a driver returned (as mappings) into the typed result."""
        if self.shape == "rows":
            assert self.decode_one is not None
            return typing.cast(T, [self.decode_one(r) for r in rows])
        value: Any = rows[0]["result"] if self.shape in ("json", "scalar") else rows[0]
        if self.shape == "json":
            value = json.loads(value)
        return self.decode_one(value) if self.decode_one else typing.cast(T, value)


class SyncInvoker:
    """Base of the blocking client: runs a spec and returns its result."""

    def _invoke(self, spec: ProcedureSpec[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        raise NotImplementedError


class AsyncInvoker:
    """Base of the asyncio client: runs a spec and returns an awaitable of its result."""

    async def _invoke(self, spec: ProcedureSpec[T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        raise NotImplementedError


class Procedure(Generic[P, T]):
    """A spec as a class attribute: a method on both clients, typed after the spec's signature."""

    def __init__(self, spec: ProcedureSpec[T], fn: Callable[P, T]) -> None:
        self.spec = spec
        self.fn = fn
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Procedure[P, T]: ...
    @overload
    def __get__(self, obj: SyncInvoker, owner: type | None = None) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncInvoker, owner: type | None = None) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        spec = self.spec

        @functools.wraps(self.fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return obj._invoke(spec, args, kwargs)

        return call


def procedure(
    sql_name: str, *, shape: Shape = "json", decode: Callable[[Any], Any] | None = None
) -> Callable[[Callable[P, T]], Procedure[P, T]]:
    """Declare the SQL function ``sql_name`` with the decorated signature.

    Every parameter must be annotated ``Annotated[type, Rule]``; a parameter whose type admits None is
    optional. ``decode`` builds the result from one decoded JSON object or row (default: the result
    dataclass's ``from_mapping``).
    """

    def wrap(fn: Callable[P, T]) -> Procedure[P, T]:
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
        params = []
        for name in signature.parameters:
            hint = hints[name]
            rule = next(m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Rule))
            optional = type(None) in typing.get_args(typing.get_args(hint)[0])
            params.append(Param(name, rule, optional))
        result_type = hints["return"]
        item_type = typing.get_args(result_type)[0] if shape == "rows" else result_type
        decoder = decode or getattr(item_type, "from_mapping", None)
        spec: ProcedureSpec[T] = ProcedureSpec(sql_name, tuple(params), shape, decoder, signature)
        return Procedure(spec, fn)

    return wrap
