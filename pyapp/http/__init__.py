"""The HTTP service (``pgwallet serve``): routes, bearer tokens mapped to role tiers, health, metrics, an
admin page. ``pyapp.http:app`` is an application configured from the environment (``DATABASE_URL``,
``PGWALLET_HTTP_TOKENS``), for any ASGI host; :func:`create_app` builds one explicitly. Needs the ``http``
extra (``pip install 'pgwallet[http]'``)."""

from __future__ import annotations

from typing import Any

__all__ = ["app", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    from pyapp.http.service import create_app as build

    return build(*args, **kwargs)


_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first use, from the environment
        if "app" not in _built:
            _built["app"] = create_app()
        return _built["app"]
    raise AttributeError(name)
