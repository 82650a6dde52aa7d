"""Bearer tokens and the role tier each one acts as, hashed at rest.

``PGWALLET_HTTP_TOKENS`` (or the file ``PGWALLET_HTTP_TOKENS_FILE``, one entry per line) holds entries
``name:tier:sha256hex``: a name for the logs, a tier (``app``, ``webhook``, ``worker``, ``staff``, ``admin``,
``readonly``) and the SHA-256 of the token in hex (``pgwallet serve --hash-token`` prints it). Only hashes
are kept; a presented token is hashed and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

TIERS = ("app", "webhook", "worker", "staff", "admin", "readonly")


class TokenConfigError(ValueError):
    """The token configuration cannot be read: the service refuses to start rather than guess."""


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a configured token's name and its tier."""

    name: str
    tier: str

    @property
    def role(self) -> str:
        return f"pgwallet_{self.tier}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse(text: str) -> list[tuple[str, str, str]]:
    """``name:tier:sha256hex`` entries, separated by newlines or commas; '#' starts a comment."""
    entries = []
    for raw in text.replace(",", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(":")
        if len(parts) != 3:
            raise TokenConfigError(f"token entry {line!r}: expected name:tier:sha256hex")
        name, tier, digest = (p.strip() for p in parts)
        if tier not in TIERS:
            raise TokenConfigError(f"token {name!r}: tier must be one of {', '.join(TIERS)}, not {tier!r}")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise TokenConfigError(f"token {name!r}: the hash must be 64 hex digits (pgwallet serve --hash-token)")
        entries.append((name, tier, digest.lower()))
    return entries


class Tokens:
    """The configured tokens; ``caller(token)`` is the :class:`Caller` a token stands for, or None."""

    def __init__(self, entries: list[tuple[str, str, str]]) -> None:
        self._entries = entries

    @classmethod
    def from_env(cls) -> Tokens:
        text = os.environ.get("PGWALLET_HTTP_TOKENS", "")
        path = os.environ.get("PGWALLET_HTTP_TOKENS_FILE")
        if path:
            try:
                text += "\n" + Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise TokenConfigError(f"PGWALLET_HTTP_TOKENS_FILE: {exc}") from exc
        return cls(parse(text))

    def __len__(self) -> int:
        return len(self._entries)

    def caller(self, token: str) -> Caller | None:
        digest = token_hash(token)
        found = None
        for name, tier, expected in self._entries:  # every entry compared: no early exit to time
            if hmac.compare_digest(digest, expected):
                found = Caller(name, tier)
        return found
