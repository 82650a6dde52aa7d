"""pgwallet's Python layer: validate, call one PL/pgSQL procedure, map its errors.

``Client`` (psycopg) and ``AsyncClient`` (asyncpg) offer the same methods, built from the specs in
the domain modules (``pyapp.ledger``, ...). Errors are in ``pyapp.errors``, results in ``pyapp.results``.
"""

from pyapp import errors, results
from pyapp.aio import AsyncClient
from pyapp.client import Client
from pyapp.errors import PgWalletError

__all__ = ["AsyncClient", "Client", "PgWalletError", "errors", "results"]
