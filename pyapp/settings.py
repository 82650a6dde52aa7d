"""Connection settings: one ``postgresql://`` URL (``DATABASE_URL``) for every driver and for yoyo."""

from __future__ import annotations

import os
import re

_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+[a-z0-9]+)?://")


def database_url(explicit: str | None = None) -> str | None:
    """The URL to use: the explicit one, else ``$DATABASE_URL``, else None."""
    return explicit or os.environ.get("DATABASE_URL") or None


def plain_url(url: str) -> str:
    """``postgresql://...`` without a driver suffix, as psycopg and asyncpg expect it."""
    return _SCHEME.sub("postgresql://", url, count=1)


def yoyo_url(url: str) -> str:
    """yoyo picks its driver from the scheme: use psycopg 3, never psycopg2."""
    return _SCHEME.sub("postgresql+psycopg://", url, count=1)


def prepared_statements_enabled() -> bool:
    """Behind PgBouncer in transaction mode, set ``PGWALLET_PREPARED_STATEMENTS=0``."""
    return os.environ.get("PGWALLET_PREPARED_STATEMENTS", "1").lower() not in {"0", "false", "no", "off"}
