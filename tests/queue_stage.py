"""A creator platform in TOKEN for the queue and tip-grid tests: a mint, a fee collector, performers with a
configured queue, funded users."""

from __future__ import annotations

import itertools
from typing import Any

from pyapp import Client


class Stage:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.mint = client.open_system_account("TOKEN", "system", name="mint").id
        self.fees = client.open_account("TOKEN", "fees", name="platform fees").id
        self._keys = itertools.count()
        self.owners: dict[int, str] = {}  # wallet -> the end user who owns it

    def key(self, prefix: str = "k") -> str:
        return f"{prefix}-{next(self._keys)}"

    def performer(self, **queue: Any) -> int:
        performer = self.client.open_account("TOKEN", "performer").id
        self.client.configure_performer_queue(performer, self.fees, **queue)
        return performer

    def user(self, tokens: int = 1000) -> int:
        owner = self.key("user")
        user = self.client.open_account("TOKEN", "user_wallet", owner=owner).id
        self.owners[user] = owner
        if tokens:
            self.client.fund_account(self.mint, user, tokens, self.key("fund"))
        return user

    def balance(self, account_id: int) -> int:
        return self.client.get_account(account_id).balance

    def available(self, account_id: int) -> int:
        return self.client.get_account(account_id).available

    def enqueue(self, performer: int, user: int, tokens: int = 100, **kwargs: Any) -> int:
        return self.client.create_queue_item(performer, user, tokens, "a song", self.key("item"), **kwargs).item_id
