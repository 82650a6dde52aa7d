"""The async iterator over queue events: what a listener sees, in commit order, and nothing for refusals."""

from __future__ import annotations

import asyncio

import pytest
from queue_stage import Stage

from pyapp import AsyncClient, Client, errors
from pyapp.events import QueueEvent, QueueEvents


def test_events_follow_every_transition(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer, user = stage.performer(), stage.user()
    fan = stage.owners[user]
    menu = client.create_tip_menu_item(performer, "flash", 100).tip_menu_item_id

    async def scene() -> list[QueueEvent]:
        async with QueueEvents(db_url, performer_ids=[performer], purchases=True) as events, \
                AsyncClient(db_url, max_size=2) as c:
            first = await c.create_queue_item(performer, user, 100, "a song", "k1", acting_user=fan)
            second = await c.create_queue_item(performer, user, 50, "a dance", "k2", acting_user=fan)
            await c.start_item(first.item_id, "s1")
            with pytest.raises(errors.AlreadyProcessing):
                await c.start_item(second.item_id, "s2")  # refused: nothing sent
            await c.complete_item(first.item_id, "c1")
            await c.abandon_item(second.item_id, "bored", "a2")
            await c.purchase_tip_grid_item(user, performer, menu, idempotency_key="buy", acting_user=fan)
            got = [await events.next(timeout=5) for _ in range(7)]
            with pytest.raises(TimeoutError):
                await events.next(timeout=0.3)
            return got

    got = asyncio.run(scene())
    queue = [(e.status, e.payload["previous_status"], e.payload["depth"]) for e in got if e.kind == "queue"]
    assert queue == [("CREATED", None, 1), ("CREATED", None, 2), ("STARTED", "CREATED", 2),
                     ("FINISHED", "STARTED", 1), ("ABANDONED", "CREATED", 0), ("FINISHED", None, 0)]
    purchases = [e for e in got if e.kind == "purchase"]
    assert len(purchases) == 1 and purchases[0].status == "SUCCESS" and purchases[0].item_id == got[5].item_id
    assert [e.positions_changed for e in got if e.kind == "queue"] == [False, False, True, True, True, False]


def test_listening_needs_a_channel_and_a_database() -> None:
    with pytest.raises(ValueError):
        QueueEvents("postgresql://postgres@127.0.0.1:1/nothing")

    async def listen() -> None:
        async with QueueEvents("postgresql://postgres@127.0.0.1:1/nothing", performer_ids=[1], timeout=2):
            pass

    with pytest.raises(errors.DatabaseError):
        asyncio.run(listen())
