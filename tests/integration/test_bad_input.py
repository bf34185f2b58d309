"""Bad input against a running daemon: dead-lettered with the reason, never looped, never fatal."""

from __future__ import annotations

import json
import pickle
import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

import pytest

from tests.helpers import CreatesFile
from tests.integration.conftest import Broker, Daemon, Service


def _ce(event: str = "relay.ping", **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-source": "a-careless-producer",
        "ce-type": event,
        **extra,
    }


def _without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key not in names}


@pytest.fixture
def shipping(service) -> Service:
    return service("shipping", "consumer", MAX_MESSAGE_BYTES="2048", RETRY_DELAYS="0.2,0.4")


def _assert_daemon_goes_on(shipping: Service, rabbit: Broker, daemon: Daemon) -> None:
    good = rabbit.publish_event("relay.ping", {"n": 1})
    [record] = shipping.wait_records(1)
    assert record["id"] == good
    assert "stopped after 2 message(s) (acked 1, dead-lettered 1)" in daemon.stop()
    assert rabbit.count(shipping.queue) == 0  # nothing left unacked, nothing requeued
    assert rabbit.take_all(shipping.dead_letter_queue) == []  # dead-lettered once, not in a loop


class Bad(NamedTuple):
    reason: str
    routing_key: str
    body: bytes
    headers: dict[str, str]


BAD_INPUT = {
    "not-json": Bad("not-json", "relay.ping", b"{'n': 1,", _ce()),
    "unknown-event": Bad("unknown-event", "relay.unknown", b'{"n": 1}', _ce("relay.unknown")),
    "schema-violation": Bad("schema-violation", "relay.ping", b'{"n": "seven"}', _ce()),
    "too-large": Bad("too-large", "relay.ping", json.dumps({"n": 1, "note": "x" * 3000}).encode(), _ce()),
    "missing-ce-id": Bad("bad-attribute", "relay.ping", b'{"n": 1}', _without(_ce(), "ce-id", "ce-source")),
    "bad-hops": Bad("bad-attribute", "relay.ping", b'{"n": 1}', _ce(**{"ce-hops": "-1"})),
    "hops-beyond-limit": Bad("hop-limit", "relay.ping", b'{"n": 1}', _ce(**{"ce-hops": "9"})),
    "schema-2.0": Bad("unsupported-schema-version", "relay.ping", b'{"n": 1}', _ce(**{"ce-schemaversion": "2.0"})),
}


@pytest.mark.parametrize("bad", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_dead_lettered_with_its_reason(shipping, rabbit, bad):
    daemon = shipping.daemon()
    rabbit.bind(shipping.queue, "relay.unknown")  # so that an event nobody subscribed to reaches the queue

    rabbit.publish(bad.routing_key, bad.body, headers=bad.headers)

    [dead] = rabbit.take(shipping.dead_letter_queue)
    assert dead.headers["x-broadcaster-reason"] == bad.reason
    assert dead.headers["x-broadcaster-error"]
    assert dead.headers["x-broadcaster-attempts"] == 1
    assert dead.headers["x-broadcaster-routing-key"] == bad.routing_key
    assert dead.body == bad.body
    assert shipping.records() == []
    _assert_daemon_goes_on(shipping, rabbit, daemon)


def test_a_pickle_body_is_never_loaded(shipping, rabbit, tmp_path):
    armed = tmp_path / "proof-the-payload-works"
    pickle.loads(pickle.dumps(CreatesFile(armed)))  # our own payload: it is armed
    assert armed.exists()
    marker = tmp_path / "loaded-by-the-daemon"
    body = pickle.dumps(CreatesFile(marker))
    daemon = shipping.daemon()

    rabbit.publish("relay.ping", body, headers=_ce(), content_type="application/x-python-serialize")

    [dead] = rabbit.take(shipping.dead_letter_queue)
    assert dead.headers["x-broadcaster-reason"] == "content-type"
    assert dead.body == body
    assert dead.properties.content_type == "application/x-python-serialize"
    assert not marker.exists()
    _assert_daemon_goes_on(shipping, rabbit, daemon)
    assert not marker.exists()


def test_a_failing_receiver_is_retried_then_dead_lettered(shipping, rabbit):
    daemon = shipping.daemon()
    body = b'{"n": 5}'
    headers = _ce("relay.boom")

    rabbit.publish("relay.boom", body, headers=headers)

    [dead] = rabbit.take(shipping.dead_letter_queue)
    assert dead.headers["x-broadcaster-reason"] == "receiver-error"
    assert dead.headers["x-broadcaster-exception"] == "builtins.RuntimeError"
    assert dead.headers["x-broadcaster-error"] == "boom 5"
    assert dead.headers["x-broadcaster-attempts"] == 3
    assert dead.headers["x-broadcaster-routing-key"] == "relay.boom"
    assert dead.headers["ce-id"] == headers["ce-id"]
    assert dead.body == body
    first = datetime.fromisoformat(dead.headers["x-broadcaster-first-failure"])
    last = datetime.fromisoformat(dead.headers["x-broadcaster-last-failure"])
    assert last - first >= timedelta(seconds=0.6)  # the two retry delays, 0.2 s and 0.4 s
    records = shipping.records()
    assert [(r["id"], r["attempt"]) for r in records] == [(headers["ce-id"], n) for n in (1, 2, 3)]
    assert "stopped after 3 message(s) (dead-lettered 1, retried 2)" in daemon.stop()
    assert [rabbit.count(queue) for queue in shipping.queues] == [0, 0, 0, 0]
