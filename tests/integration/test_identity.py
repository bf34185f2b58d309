"""Identity on a shared broker, attacked: forged failure headers against real daemons and replays.

Two broker users of the test's own: the producer's, named like its SERVICE_NAME, and the
consuming service's. The consumer runs with REQUIRE_USER_ID and a receiver that fails on
purpose a number of times. A forger publishes as the shared `guest` user with no user_id
and every x-broadcaster-* header it likes, as a compromised service on the same broker
could.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.broker_admin import delete_user, rabbitmqctl, strong_password, unique
from tests.integration.conftest import Broker, Service, wait_for

DELAYS = "0.05,0.06,0.07,0.08"  # four retries: five attempts
ATTEMPTS = 5
FORGED_SEAL = "v1:" + "0" * 64


@dataclass(frozen=True)
class User:
    """A broker user made for this module."""

    name: str
    url: str


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, User]]:
    """Two broker users: the producer's and the consuming service's; deleted afterwards."""
    made: dict[str, User] = {}
    try:
        for role in ("producer", "consumer"):
            name, password = unique(f"id-{role}"), strong_password()
            made[role] = User(name, f"amqp://{quote(name, safe='')}:{quote(password, safe='')}@127.0.0.1:5672/%2F")
            rabbitmqctl("add_user", name, password)
            rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        yield made
    finally:
        for user in made.values():
            delete_user(user.name)


@pytest.fixture
def billing(service: Callable[..., Service], users: dict[str, User]) -> Callable[..., Service]:
    """Factory: the consuming service, as its own broker user, with REQUIRE_USER_ID unless told otherwise."""

    def make(fail_times: int, *, require_user_id: bool = True) -> Service:
        one = service(
            "billing",
            "flaky",
            RETRY_DELAYS=DELAYS,
            FAIL_TIMES=str(fail_times),
            REQUIRE_USER_ID="1" if require_user_id else "0",
        )
        one.env["BROADCASTER_BROKER_URL"] = users["consumer"].url
        return one

    return make


@pytest.fixture
def orders(service: Callable[..., Service], users: dict[str, User]) -> Service:
    """The producer: its broker user and its SERVICE_NAME are the same name, as REQUIRE_USER_ID wants."""
    one = service(users["producer"].name, "producer")
    one.env["BROADCASTER_BROKER_URL"] = users["producer"].url
    return one


def calls(one: Service) -> int:
    path = Path(f"{one.env['RECORD_FILE']}.calls")
    return int(path.read_text()) if path.exists() else 0


def dead_letters(one: Service) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = json.loads(one.manage("dead_letters", "list", "--json"))["dead_letters"]
    return letters


def dead_lettered(rabbit: Broker, one: Service) -> None:
    """Wait for a dead letter (a replay returns once it took the last one out of the queue)."""
    wait_for(lambda: rabbit.count(one.dead_letter_queue) >= 1, 30, "a dead letter")


def forge(rabbit: Broker, claimed_source: str, **extra: Any) -> str:
    """Publish relay.ping as the forger: guest's connection, no user_id, forged internal headers."""
    envelope_id = str(uuid.uuid4())
    headers = {
        "ce-specversion": "1.0",
        "ce-id": envelope_id,
        "ce-source": claimed_source,
        "ce-type": "relay.ping",
        "x-broadcaster-user-id": claimed_source,
        "x-broadcaster-attempt": ATTEMPTS,
        "x-broadcaster-attempts": ATTEMPTS - 1,
        "x-broadcaster-first-failure": "2000-01-01T00:00:00+00:00",
        "x-broadcaster-routing-key": "relay.forged",
        "x-broadcaster-reason": "receiver-error",
        "x-broadcaster-seal": FORGED_SEAL,
        **extra,
    }
    rabbit.publish("relay.ping", b'{"n": 1}', headers=headers)
    return envelope_id


def test_a_forged_event_is_dead_lettered_and_again_after_a_replay(
    billing: Callable[..., Service], rabbit: Broker, users: dict[str, User]
) -> None:
    consumer = billing(fail_times=0)
    consumer.daemon()
    forged = forge(rabbit, users["producer"].name)
    dead_lettered(rabbit, consumer)
    [letter] = dead_letters(consumer)
    assert (letter["id"], letter["reason"], letter["attempts"]) == (forged, "user-mismatch", 1)
    assert letter["error"].endswith("it was published without a broker-validated user_id")

    assert consumer.manage("dead_letters", "replay").startswith("replayed 1 of 1 dead letter ")
    dead_lettered(rabbit, consumer)
    [again] = dead_letters(consumer)
    assert (again["id"], again["reason"], again["attempts"]) == (forged, "user-mismatch", 1)
    [copy] = rabbit.take(consumer.dead_letter_queue)
    assert copy.properties.user_id == users["consumer"].name
    assert "x-broadcaster-user-id" not in copy.headers  # nobody vouches for a publisher it never had
    assert copy.headers["x-broadcaster-routing-key"] == "relay.ping"  # the one it came with, not the forged one
    assert calls(consumer) == 0
    assert consumer.records() == []


def test_a_genuine_event_failing_four_times_runs_on_its_fifth_attempt(
    billing: Callable[..., Service], orders: Service, rabbit: Broker, users: dict[str, User]
) -> None:
    consumer = billing(fail_times=ATTEMPTS - 1)
    daemon = consumer.daemon()
    orders.fire("ping", {"n": 7})
    [record] = consumer.wait_records(1, timeout=30)
    assert (record["source"], record["attempt"], record["payload"]["n"]) == (users["producer"].name, ATTEMPTS, 7)
    assert calls(consumer) == ATTEMPTS
    assert rabbit.count(consumer.dead_letter_queue) == 0
    assert "dead-lettered" not in daemon.log()


def test_a_genuine_event_keeps_its_identity_through_a_dead_letter_and_a_replay(
    billing: Callable[..., Service], orders: Service, rabbit: Broker, users: dict[str, User]
) -> None:
    consumer = billing(fail_times=2 * ATTEMPTS - 1)  # every attempt fails, then four after the replay
    consumer.daemon()
    orders.fire("ping", {"n": 8})
    dead_lettered(rabbit, consumer)
    [letter] = dead_letters(consumer)
    assert (letter["reason"], letter["attempts"], letter["routing_key"]) == ("receiver-error", ATTEMPTS, "relay.ping")

    assert consumer.manage("dead_letters", "replay").startswith("replayed 1 of 1 dead letter ")
    [record] = consumer.wait_records(1, timeout=30)
    assert (record["id"], record["source"]) == (letter["id"], users["producer"].name)
    assert record["attempt"] == ATTEMPTS  # counted afresh from the replay, four failures again
    assert calls(consumer) == 2 * ATTEMPTS
    assert dead_letters(consumer) == []


def test_internal_headers_from_a_publisher_are_ignored(billing: Callable[..., Service], rabbit: Broker) -> None:
    # No REQUIRE_USER_ID: the forged headers alone would skip the retries and lie in the dead letter.
    consumer = billing(fail_times=ATTEMPTS, require_user_id=False)
    consumer.daemon()
    forged = forge(rabbit, "integration-test", **{"X-Broadcaster-Attempt": 99, "x-broadcaster-queue": "elsewhere"})
    dead_lettered(rabbit, consumer)
    assert calls(consumer) == ATTEMPTS  # every retry happened: the forged attempt count was not believed
    [letter] = rabbit.take(consumer.dead_letter_queue)
    headers = letter.headers
    assert headers["ce-id"] == forged
    assert (headers["x-broadcaster-attempts"], headers["x-broadcaster-reason"]) == (ATTEMPTS, "receiver-error")
    assert headers["x-broadcaster-routing-key"] == "relay.ping"
    assert headers["x-broadcaster-queue"] == consumer.queue
    assert "x-broadcaster-user-id" not in headers
    assert "X-Broadcaster-Attempt" not in headers
    first = datetime.fromisoformat(headers["x-broadcaster-first-failure"])
    assert first > datetime.now(UTC) - timedelta(minutes=1)
    assert headers["x-broadcaster-seal"] != FORGED_SEAL
