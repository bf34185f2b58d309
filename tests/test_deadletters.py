"""`manage.py dead_letters` lists, replays and purges dead letters without losing any."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster import deadletters, failures, sweep
from broadcaster.exceptions import TransientError
from broadcaster.settings import get_settings
from broadcaster.topology import Topology
from tests import amqp_raw
from tests.conftest import Broker, wait_for

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"order_id":1,"weight":"2.5"}'


class Packed(BaseModel):
    order_id: int
    weight: Decimal


packed = Signal()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("dead_letters", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def topology(broker: Broker, settings: Any) -> Topology:
    """This test's queues, declared as the daemon declares them, with short retry delays."""
    settings.BROADCASTER = {**settings.BROADCASTER, "RETRY_DELAYS": [0.1, 0.1]}
    topology = Topology.for_settings(get_settings())
    topology.declare(broker.connection.channel(), ["warehouse.packed"])
    return topology


@pytest.fixture
def dead_letter(broker: Broker, topology: Topology) -> Callable[..., str]:
    """Put a message into the dead-letter queue as the consumer writes one; returns its envelope id."""

    def put(
        event: str = "warehouse.packed",
        *,
        reason: str = "schema-violation",
        attempts: int = 1,
        age: timedelta = timedelta(hours=2),
        error: str = "order_id: Field required",
    ) -> str:
        envelope_id = str(uuid.uuid4())
        failed = datetime.now(UTC) - age
        headers = {
            "ce-specversion": "1.0",
            "ce-id": envelope_id,
            "ce-source": "warehouse",
            "ce-type": event,
            "ce-time": failed.isoformat(),
            "ce-hops": "0",
        }
        original = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            message_id=envelope_id,
            type=event,
            app_id="warehouse",
            headers=headers,
        )
        # Sealed as the consumer seals it: the tool believes no other failure headers.
        properties = failures.failure_properties(
            original,
            BODY,
            get_settings(),
            attempt=attempts,
            reason=reason,
            error=error,
            exception="",
            queue=topology.queue,
            routing_key=event,
            now=failed,
        )
        broker.publish(topology.dead_letter_queue, BODY, properties, exchange="")
        return envelope_id

    return put


@pytest.fixture
def failing_receiver(topology: Topology) -> tuple[list[broadcaster.Envelope], threading.Event]:
    """warehouse.packed is broadcast and received here; the receiver raises while `broken` is set."""
    broadcaster.broadcast(packed, event="warehouse.packed", schema=Packed)
    local = broadcaster.subscribe("warehouse.packed", schema=Packed)
    handled: list[broadcaster.Envelope] = []
    broken = threading.Event()
    broken.set()

    def receiver(envelope: broadcaster.Envelope, **_: object) -> None:
        if broken.is_set():
            raise RuntimeError("label printer offline")
        handled.append(envelope)

    local.connect(receiver, weak=False)
    return handled, broken


def queue_ids(broker: Broker, queue: str) -> list[str]:
    """The envelope ids in `queue`, head first, read without removing anything."""
    channel = broker.connection.channel()
    ids = []
    while (got := channel.basic_get(queue, auto_ack=False))[0] is not None:
        ids.append(got[1].headers["ce-id"])
    channel.basic_nack(0, multiple=True, requeue=True)
    # The broker requeues asynchronously; the next step of a test must see them all.
    wait_for(lambda: broker.count(queue) >= len(ids), "the messages to be requeued")
    channel.close()
    return ids


def test_list_shows_event_reason_attempts_and_age_in_a_table(
    broker: Broker, topology: Topology, dead_letter: Any
) -> None:
    first = dead_letter(reason="schema-violation", attempts=1, age=timedelta(hours=2))
    second = dead_letter("warehouse.weighed", reason="receiver-error", attempts=5, age=timedelta(minutes=3))
    output = run("list")
    header, row1, row2, summary = output.splitlines()
    assert header.split() == ["ID", "EVENT", "REASON", "ATTEMPTS", "AGE", "ERROR"]
    assert row1.split()[:5] == [first, "warehouse.packed", "schema-violation", "1", "2h"]
    assert row2.split()[:5] == [second, "warehouse.weighed", "receiver-error", "5", "3m"]
    assert "order_id: Field required" in row1
    assert summary == f"listed 2 of 2 dead letters in queue '{topology.dead_letter_queue}'"


def test_list_json_can_be_parsed(topology: Topology, dead_letter: Any) -> None:
    envelope_id = dead_letter(attempts=4, age=timedelta(hours=2))
    listing = json.loads(run("list", "--json"))
    assert listing["queue"] == topology.dead_letter_queue
    assert listing["total"] == 1
    [letter] = listing["dead_letters"]
    assert letter["id"] == envelope_id
    assert letter["event"] == "warehouse.packed"
    assert letter["reason"] == "schema-violation"
    assert letter["attempts"] == 4
    assert 7190 < letter["age_seconds"] < 7260
    assert datetime.fromisoformat(letter["dead_lettered_at"]) < datetime.now(UTC)


def test_list_leaves_every_message_in_place_and_in_order(broker: Broker, topology: Topology, dead_letter: Any) -> None:
    ids = [dead_letter() for _ in range(5)]
    run("list", "--limit", "3")
    run("list", "--event", "warehouse.packed")
    assert broker.count(topology.dead_letter_queue) == 5
    assert queue_ids(broker, topology.dead_letter_queue) == ids


def test_list_is_bounded_by_limit(topology: Topology, dead_letter: Any) -> None:
    ids = [dead_letter() for _ in range(4)]
    listing = json.loads(run("list", "--json", "--limit", "2"))
    assert [letter["id"] for letter in listing["dead_letters"]] == ids[:2]
    assert listing["total"] == 4
    assert "listed 2 of 4 dead letters" in run("list", "--limit", "2")


def test_list_filters_by_event_and_id(dead_letter: Any) -> None:
    dead_letter("warehouse.packed")
    weighed = dead_letter("warehouse.weighed")
    by_event = json.loads(run("list", "--json", "--event", "warehouse.weighed"))["dead_letters"]
    assert [letter["id"] for letter in by_event] == [weighed]
    by_id = json.loads(run("list", "--json", "--id", weighed))["dead_letters"]
    assert [letter["id"] for letter in by_id] == [weighed]
    both = json.loads(run("list", "--json", "--id", weighed, "--event", "warehouse.packed"))["dead_letters"]
    assert both == []


def test_a_real_dead_letter_replayed_by_id_is_handled_from_attempt_one(
    broker: Broker, topology: Topology, daemon: Any, dead_letter: Any, failing_receiver: Any
) -> None:
    handled, broken = failing_receiver
    other = dead_letter()
    daemon()
    packed.send(sender=None, order_id=7, weight="1.5")
    broadcaster.flush(10)
    wait_for(lambda: broker.count(topology.dead_letter_queue) == 2, "the consumer to dead-letter the event")
    listing = json.loads(run("list", "--json", "--event", "warehouse.packed"))["dead_letters"]
    [real] = [letter for letter in listing if letter["id"] != other]
    assert (real["reason"], real["attempts"]) == ("receiver-error", 3)
    assert real["error"] == "label printer offline"

    broken.clear()
    output = run("replay", "--id", real["id"])

    assert output.startswith(f"replayed 1 of 2 dead letters to queue '{topology.queue}'")
    wait_for(lambda: handled, "the daemon to handle the replayed event")
    [envelope] = handled
    assert (envelope.id, envelope.attempt) == (real["id"], 1)
    assert queue_ids(broker, topology.dead_letter_queue) == [other]


def test_replay_by_event_keeps_the_envelope_and_drops_the_failure_headers(
    broker: Broker, topology: Topology, dead_letter: Any
) -> None:
    packed_ids = [dead_letter("warehouse.packed", attempts=5), dead_letter("warehouse.packed")]
    weighed = dead_letter("warehouse.weighed")
    output = run("replay", "--event", "warehouse.packed")
    assert output.strip() == (
        f"replayed 2 of 3 dead letters to queue '{topology.queue}' (matching event 'warehouse.packed'); "
        f"1 left in '{topology.dead_letter_queue}'"
    )
    replayed = broker.drain(topology.queue)
    assert [message.headers["ce-id"] for message in replayed] == packed_ids
    for message in replayed:
        # Only what a fresh start needs: attempt 1, the routing key it first came with, sealed
        # (the dead letter had no user_id to carry).
        assert {name for name in message.headers if name.startswith("x-")} == {
            "x-broadcaster-attempt",
            "x-broadcaster-routing-key",
            "x-broadcaster-seal",
        }
        assert message.headers["x-broadcaster-routing-key"] == "warehouse.packed"
        state = failures.trusted_state(message.properties, message.body, get_settings())
        assert state == failures.State(attempt=1, publisher=None)
        assert message.properties.user_id == "guest"  # the replaying connection's user
        assert message.properties.message_id == message.headers["ce-id"]
        assert message.properties.content_type == "application/json"
        assert message.body == BODY
    assert queue_ids(broker, topology.dead_letter_queue) == [weighed]


def test_replay_all_and_progress(
    broker: Broker, topology: Topology, dead_letter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "PROGRESS_EVERY", 2)
    for _ in range(5):
        dead_letter()
    out, err = io.StringIO(), io.StringIO()
    call_command("dead_letters", "replay", stdout=out, stderr=err)
    assert out.getvalue().startswith(f"replayed 5 of 5 dead letters to queue '{topology.queue}'")
    assert err.getvalue().splitlines() == [
        "dead_letters: 2 looked at, 2 replayed so far",
        "dead_letters: 4 looked at, 4 replayed so far",
    ]
    assert broker.count(topology.queue) == 5
    assert broker.count(topology.dead_letter_queue) == 0


def test_replay_to_a_missing_service_queue_loses_nothing(broker: Broker, topology: Topology, dead_letter: Any) -> None:
    dead_letter()
    broker.connection.channel().queue_delete(topology.queue)
    with pytest.raises(CommandError, match=f"queue '{topology.queue}' does not exist"):
        run("replay")
    assert broker.count(topology.dead_letter_queue) == 1


def test_purge_with_yes_deletes_the_matching_dead_letters(broker: Broker, topology: Topology, dead_letter: Any) -> None:
    dead_letter("warehouse.packed")
    weighed = dead_letter("warehouse.weighed")
    dead_letter("warehouse.packed")
    output = run("purge", "--event", "warehouse.packed", "--yes")
    assert output.startswith(f"purged 2 of 3 dead letters from queue '{topology.dead_letter_queue}'")
    assert queue_ids(broker, topology.dead_letter_queue) == [weighed]
    assert run("purge", "--yes").startswith("purged 1 of 1 dead letter ")
    assert broker.count(topology.dead_letter_queue) == 0


def test_purge_without_yes_and_without_a_terminal_refuses(broker: Broker, topology: Topology, dead_letter: Any) -> None:
    dead_letter()
    with pytest.raises(CommandError, match=r"refusing to purge without confirmation.*pass --yes"):
        run("purge")
    assert broker.count(topology.dead_letter_queue) == 1


def test_purge_refusal_exits_with_status_1_and_one_line() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "django", "dead_letters", "purge"],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 1
    assert finished.stderr.strip().splitlines() == [
        "CommandError: dead_letters: refusing to purge without confirmation: stdin is not a terminal; pass --yes"
    ]


class Terminal(io.StringIO):
    """A stdin that claims to be a terminal and answers with its text."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer", ["n\n", "\n", "y\n", "yes\n"])
def test_purge_asks_on_a_terminal(
    broker: Broker, topology: Topology, dead_letter: Any, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    left = 0 if answer.startswith("y") else 2
    dead_letter()
    dead_letter()
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    output = run("purge")
    assert output.startswith(f"Delete every dead letter of the 2 in queue '{topology.dead_letter_queue}'?")
    assert broker.count(topology.dead_letter_queue) == left
    assert ("purge cancelled; nothing deleted" in output) == (left == 2)


def test_missing_dead_letter_queue_is_a_clear_error(broker: Broker) -> None:
    with pytest.raises(CommandError, match=r"queue '.*\.dead-letter' does not exist \(consume_signals declares it\)"):
        run("list")


@pytest.mark.parametrize("args", [("list",), ("replay",), ("purge", "--yes")])
def test_unreachable_broker_is_a_one_line_error_without_the_password(settings: Any, args: tuple[str, ...]) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": "amqp://app:s3cret@127.0.0.1:1/%2F"}
    with pytest.raises(
        CommandError, match=r"cannot connect to the broker at amqp://app:\*\*\*@127\.0\.0\.1:1/"
    ) as caught:
        run(*args)
    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value.__cause__, TransientError)  # worth running again once the broker is back


def test_messages_the_broker_dead_lettered_or_in_structured_mode_are_described() -> None:
    died = datetime(2025, 1, 2, 3, 4, 5)  # pika gives AMQP timestamps as naive UTC
    structured = pika.BasicProperties(
        content_type="application/cloudevents+json",
        headers={"x-death": [{"reason": "delivery_limit", "time": died, "queue": "orders", "count": 1}]},
    )
    body = b'{"specversion":"1.0","id":"e-1","type":"orders.placed","source":"orders","data":{}}'
    moment = died.replace(tzinfo=UTC) + timedelta(seconds=90)
    letter = deadletters.describe(structured, body, settings=get_settings(), now=moment)
    assert (letter.id, letter.event, letter.reason, letter.age) == ("e-1", "orders.placed", "delivery_limit", 90.0)
    assert letter.dead_lettered_at == died.replace(tzinfo=UTC)


def test_quorum_dead_letter_queue(broker: Broker, settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "QUEUE_TYPE": "quorum", "RETRY_DELAYS": [0.1]}
    topology = Topology.for_settings(get_settings())
    topology.declare(broker.connection.channel(), [])
    for event in ("warehouse.packed", "warehouse.weighed", "warehouse.packed"):
        properties = pika.BasicProperties(message_id=str(uuid.uuid4()), type=event, headers={"ce-type": event})
        broker.publish(topology.dead_letter_queue, b"{}", properties, exchange="")
    assert "listed 3 of 3 dead letters" in run("list")
    assert broker.count(topology.dead_letter_queue) == 3
    assert run("replay", "--event", "warehouse.weighed").startswith("replayed 1 of 3 dead letters")
    assert run("purge", "--yes", "--limit", "1").startswith("purged 1 of 1 dead letter ")
    assert broker.count(topology.dead_letter_queue) == 1
    assert broker.count(topology.queue) == 1


def test_unreadable_dead_letters_are_shown_as_such_and_the_rest_can_be_replayed_and_purged(
    broker: Broker, topology: Topology, dead_letter: Any
) -> None:
    """A deeply nested message and one pika cannot decode sit among ordinary dead letters."""
    keep, replayed, purged = dead_letter(), dead_letter(), dead_letter()
    nested = b"[" * 100_000 + b"]" * 100_000
    broker.publish(
        topology.dead_letter_queue,
        nested,
        pika.BasicProperties(content_type="application/cloudevents+json", headers={"x-broadcaster-reason": "not-json"}),
        exchange="",
    )
    past_9999 = amqp_raw.properties(amqp_raw.table([(b"x-when", b"T" + (2**63).to_bytes(8, "big"))]))
    channel = broker.connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", topology.dead_letter_queue, b"{}", amqp_raw.RawProperties(past_9999))

    listing = json.loads(run("list", "--json"))
    assert listing["total"] == 5
    reasons = [letter["reason"] for letter in listing["dead_letters"]]
    assert reasons.count(None) == 1  # the nested one: its reason header is not sealed, so not believed
    assert reasons.count("undecodable") == 1
    [undecodable] = [letter for letter in listing["dead_letters"] if letter["reason"] == "undecodable"]
    assert "OverflowError" in undecodable["error"] or "range" in undecodable["error"]

    assert "replayed 1 of 5" in run("replay", "--id", replayed)
    assert "purged 1 of 4" in run("purge", "--id", purged, "--yes")
    left = queue_ids_tolerant(broker, topology.dead_letter_queue)
    assert keep in left
    assert replayed not in left
    assert purged not in left
    assert broker.count(topology.dead_letter_queue) == 3  # the two unreadable ones are still there
    assert "purged 3 of 3" in run("purge", "--yes")  # and an operator can clear them


def queue_ids_tolerant(broker: Broker, queue: str) -> list[str | None]:
    """The envelope ids in `queue`, None for a message without one, left in place."""
    letters = deadletters.peek(broker.connection.channel(), queue, settings=get_settings(), limit=100).letters
    return [letter.id for letter in letters]
