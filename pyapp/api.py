"""The methods both clients offer: every spec, under the name of its SQL function.

Adding a procedure means one spec in its domain module and one line here; ``Client`` and
``AsyncClient`` both inherit it.
"""

from __future__ import annotations

from pyapp import ledger


class Procedures:
    open_account = ledger.open_account
    set_account_status = ledger.set_account_status
    transfer = ledger.transfer
    post_operation = ledger.post_operation
    place_hold = ledger.place_hold
    capture_hold = ledger.capture_hold
    void_hold = ledger.void_hold
    expire_holds = ledger.expire_holds
    get_account = ledger.get_account
    get_hold = ledger.get_hold
    account_history = ledger.account_history
    purge_idempotency_keys = ledger.purge_idempotency_keys
    check_invariants = ledger.check_invariants
