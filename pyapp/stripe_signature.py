"""Stripe webhook signatures, after Stripe's published scheme (no dependency on the ``stripe`` package).

The ``Stripe-Signature`` header reads ``t=<unix time>,v1=<hex>[,v1=<hex>...][,v0=...]``. A signature is the
HMAC-SHA256, keyed with the endpoint's signing secret (``whsec_...``), of ``"<t>.<raw body>"``; any one
``v1`` may match (several are sent while a secret is rolled), compared in constant time, and ``t`` must
lie within the tolerance (300 s by default) of now, which defeats replays of an old delivery. Only the
raw body as received is signed: verify before parsing, never a re-serialised JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from pyapp.errors import InvalidRequest

DEFAULT_TOLERANCE = 300


class SignatureVerificationError(InvalidRequest):
    """The webhook's signature is missing, malformed, wrong or too old: HTTP 400, nothing is read."""

    code = "INVALID_SIGNATURE"
    default_message = "The webhook signature is invalid"


def compute(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex ``v1`` signature of ``payload`` sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value for ``payload``, as Stripe would send it (tests, local tools)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={compute(payload, secret, t)}"


def verify(payload: bytes, signature_header: str | None, secret: str, *, tolerance: int = DEFAULT_TOLERANCE,
           now: float | None = None) -> int:
    """Return the signed timestamp, or raise :class:`SignatureVerificationError` (field ``Stripe-Signature``)."""
    if not secret:
        raise SignatureVerificationError(detail="no webhook signing secret is configured", field="Stripe-Signature")
    if not signature_header:
        raise SignatureVerificationError(detail="Stripe-Signature: header is missing", field="Stripe-Signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in signature_header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureVerificationError(detail="Stripe-Signature: must hold t=<timestamp> and v1=<signature>",
                                         field="Stripe-Signature")
    expected = compute(payload, secret, timestamp)
    if not any(hmac.compare_digest(expected.encode(), c.encode("utf-8", "replace")) for c in candidates):
        raise SignatureVerificationError(detail="Stripe-Signature: no v1 signature matches the payload",
                                         field="Stripe-Signature")
    current = time.time() if now is None else now
    # as Stripe's own libraries: too old is refused (a replayed capture), ahead of now is accepted (the
    # signer's clock may run ahead of ours; the signature still proves the payload is Stripe's)
    if timestamp < current - tolerance:
        raise SignatureVerificationError(
            detail=f"Stripe-Signature: timestamp is {int(current - timestamp)} s old (tolerance {tolerance} s)",
            field="Stripe-Signature")
    return timestamp
