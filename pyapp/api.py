"""The methods both clients offer: every spec, under the name of its SQL function.

Each domain module (``pyapp.ledger``, ...) ends with a class listing its specs; adding a domain means
one base class here, adding a procedure one spec and one line in its domain's class. ``Client`` and
``AsyncClient`` both inherit them all.
"""

from __future__ import annotations

from pyapp.cashless import CashlessProcedures
from pyapp.investments import InvestmentProcedures
from pyapp.jobs import JobProcedures
from pyapp.ledger import LedgerProcedures
from pyapp.payouts import PayoutProcedures
from pyapp.queue import QueueProcedures


class Procedures(LedgerProcedures, CashlessProcedures, QueueProcedures, PayoutProcedures, JobProcedures,
                 InvestmentProcedures):
    """Every public pgwallet procedure."""
