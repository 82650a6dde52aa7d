"""``pgwallet queue ...``: through click's CliRunner, and once as the installed console script."""

from __future__ import annotations

import json
import threading
import time

from queue_stage import Stage
from test_cli import ok, process, refused, run

from pyapp import Client


def test_show_start_finish(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer, user = stage.performer(), stage.user(500)
    first = stage.enqueue(performer, user, 100)
    second = stage.enqueue(performer, user, 50)
    shown = ok(db_url, "queue", "show", str(performer)).output
    assert shown.startswith(f"performer {performer}: 2 open of at most 50 (0 started, 2 waiting)")
    assert f"   1. item {first}" in shown and f"   2. item {second}" in shown
    data = json.loads(ok(db_url, "queue", "show", str(performer), "--json").output)
    assert data["depth"]["depth"] == 2 and [i["item_id"] for i in data["items"]] == [first, second]
    started = ok(db_url, "queue", "start", str(first), "--key", "s1").output
    assert started.startswith(f"item {first} STARTED") and "(key s1)" in started
    done = json.loads(ok(db_url, "queue", "finish", str(first), "--key", "f1", "--json").output)
    assert (done["item"]["status"], done["item"]["fee"], done["idempotency_key"]) == ("FINISHED", 20, "f1")
    again = ok(db_url, "queue", "finish", str(first), "--key", "f1").output
    assert "(replayed)" in again and f"account {performer}" in again
    assert stage.balance(performer) == 80
    assert json.loads(ok(db_url, "queue", "item", str(second), "--json").output)["position"] == 1


def test_abandon_refund_sweep(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer, user = stage.performer(start_timeout_seconds=1), stage.user(500)
    a, b, c = (stage.enqueue(performer, user, 100) for _ in range(3))
    assert run(db_url, "queue", "abandon", str(a)).exit_code == 2  # --reason is required
    out = ok(db_url, "queue", "abandon", str(a), "--reason", "left", "--yes").output
    assert out.startswith(f"item {a} ABANDONED") and "(left)" in out
    assert json.loads(ok(db_url, "queue", "refund", str(b), "--reason", "oops", "--json").output)["item"][
        "refund_reason"] == "oops"
    time.sleep(1.1)
    assert json.loads(ok(db_url, "queue", "sweep", "--json").output) == {"abandoned": 1, "refunded": 0}
    assert client.get_queue_item(c).status == "ABANDONED"
    assert ok(db_url, "queue", "sweep").output == "abandoned 0 items not started in time, refunded 0 overrun items\n"
    assert stage.available(user) == 500


def test_refusals_are_one_line(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer, user = stage.performer(), stage.user()
    a, b = stage.enqueue(performer, user), stage.enqueue(performer, user)
    ok(db_url, "queue", "start", str(a))
    refused(db_url, "ALREADY_PROCESSING", "queue", "start", str(b))
    refused(db_url, "INVALID_STATE_TRANSITION", "queue", "finish", str(b), "--yes")
    refused(db_url, "NOT_FOUND", "queue", "show", "999999")
    refused(db_url, "NOT_FOUND", "queue", "refund", "999999")
    refused(db_url, "INVALID_REQUEST", "queue", "abandon", str(b), "--reason", "")
    result = run(db_url, "queue", "start", str(b), "--json")
    assert result.exit_code == 1 and json.loads(result.stderr)["error"]["code"] == "ALREADY_PROCESSING"


def test_configure(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer = client.open_account("TOKEN", "performer").id
    out = ok(db_url, "queue", "configure", str(performer), str(stage.fees), "--fee-bps", "1500", "--max-open",
             "5").output
    assert "fee 1500 bps" in out and "at most 5 open items" in out
    data = json.loads(ok(db_url, "queue", "configure", str(performer), str(stage.fees), "--json").output)
    assert (data["fee_bps"], data["max_open"]) == (1500, 5)
    refused(db_url, "INVALID_REQUEST", "queue", "configure", str(performer), str(stage.fees), "--fee-bps", "10001")


def test_watch_prints_events(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer, user = stage.performer(), stage.user()
    outputs: list[str] = []
    watcher = threading.Thread(target=lambda: outputs.append(
        run(db_url, "queue", "watch", str(performer), "--count", "2", "--timeout", "10", "--json").output))
    watcher.start()
    deadline = time.monotonic() + 15
    with client.pool.connection() as conn:  # wait until the watcher listens
        while not conn.execute("select count(*) from pg_stat_activity where query like %s",
                               (f'LISTEN "pgwallet_queue_{performer}"%',)).fetchone()["count"]:
            assert time.monotonic() < deadline, "the watcher never listened"
            time.sleep(0.05)
    item = stage.enqueue(performer, user)
    client.start_item(item, "s")
    watcher.join(15)
    events = [json.loads(line) for line in outputs[0].splitlines()]
    assert [(e["item_id"], e["status"]) for e in events] == [(item, "CREATED"), (item, "STARTED")]


def test_queue_show_as_a_process(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer = stage.performer()
    item = stage.enqueue(performer, stage.user())
    done = process(db_url, "queue", "show", str(performer), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["items"][0]["item_id"] == item
    done = process(db_url, "queue", "finish", str(item), "--yes")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: INVALID_STATE_TRANSITION: ") and "Traceback" not in done.stderr


def test_demo_live_show(client: Client, db_url: str) -> None:
    from cli.queue import demo_live_show

    lines: list[str] = []
    demo_live_show(client, db_url, "t1", lines.append)
    text = "\n".join(lines)
    assert "purchase 1 SUCCESS (50 tokens)" in text
    assert "ALREADY_PROCESSING" in text
    assert "bob's purchase is now SUCCESS" in text and "carol's purchase is now REFUNDED" in text
    assert "sweep: 0 abandoned, 1 refunded" in text
    assert "saw 11 events" in text
    assert client.check_invariants() == []


def test_relay(client: Client, db_url: str) -> None:
    stage = Stage(client)
    performer, user = stage.performer(), stage.user()
    with client.pool.connection() as conn:
        conn.execute("update pgwallet.settings set value = 'outbox' where name = 'queue_events'")
    for _ in range(3):
        stage.enqueue(performer, user)
    assert json.loads(ok(db_url, "queue", "relay", "--batch-size", "2", "--json").output) == {"relayed": 3}
    assert ok(db_url, "queue", "relay").output == "relayed 0 queue events\n"
