"""Signed events: only a holder of the source's key can produce an event a consumer accepts."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.checks import check_settings
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from tests.conftest import Broker, Received

KEYS = {"tests": {"k1": "old-secret-1", "k2": "new-secret-2"}}


class Refund(BaseModel):
    order_id: int


refunded = Signal()


def publish_signed(broker: Broker, settings: Any, key_id: str | None) -> Received:
    settings.BROADCASTER = {**settings.BROADCASTER, "SIGNING_KEYS": KEYS, "SIGNING_KEY_ID": key_id}
    broadcaster.broadcast(refunded, event="billing.refunded", schema=Refund)
    tap = broker.tap()
    refunded.send(sender=None, order_id=3)
    broadcaster.flush(10)
    [message] = broker.drain(tap)
    return message


def consume(message: Received, settings: Any, **security: Any) -> Outcome:
    settings.BROADCASTER = {**settings.BROADCASTER, "SIGNING_KEYS": KEYS, "REQUIRE_SIGNATURES": True, **security}
    broadcaster.subscribe("billing.refunded", schema=Refund)
    return dispatch(message.properties, message.body, settings=get_settings(), subscriptions=subscriptions())


def altered(message: Received, body: bytes | None = None, **headers: str) -> Received:
    properties = pika.BasicProperties(**{**vars(message.properties), "headers": {**message.headers, **headers}})
    return Received(message.routing_key, properties, message.body if body is None else body)


@pytest.mark.parametrize("key_id", ["k1", "k2"])
def test_signed_event_is_accepted_with_either_key_while_keys_rotate(broker: Broker, settings: Any, key_id: str) -> None:
    message = publish_signed(broker, settings, key_id)
    assert message.headers["ce-signaturekeyid"] == key_id
    scheme, digest = message.headers["ce-signature"].split(":")
    assert (scheme, len(digest)) == ("v1", 64)
    assert consume(message, settings).action is Action.ACK


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"order_id": 4}'}, "bad-signature"),
        ({"ce-subject": "forged"}, "bad-signature"),
        ({"ce-source": "tests", "ce-id": "replayed-with-new-id"}, "bad-signature"),
        ({"ce-signaturekeyid": "k9"}, "unknown-key"),
        ({"ce-source": "intruder"}, "unknown-key"),
    ],
)
def test_tampered_or_forged_events_never_reach_receivers(
    broker: Broker, settings: Any, change: dict[str, Any], reason: str
) -> None:
    message = publish_signed(broker, settings, "k2")
    calls: list[object] = []
    broadcaster.subscribe("billing.refunded", schema=Refund).connect(lambda **kw: calls.append(kw), weak=False)
    body = change.pop("body", None)
    outcome = consume(altered(message, body, **change), settings)
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, reason)
    assert calls == []


def test_unsigned_event_is_rejected_when_signatures_are_required(broker: Broker, settings: Any) -> None:
    message = publish_signed(broker, settings, None)
    assert "ce-signature" not in message.headers
    outcome = consume(message, settings)
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "unsigned")


def test_broker_validated_user_id(broker: Broker, settings: Any) -> None:
    message = publish_signed(broker, settings, "k1")
    assert message.properties.user_id == "guest"  # the broker checked it against the connection
    outcome = consume(message, settings, REQUIRE_USER_ID=True)
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "user-mismatch")  # source 'tests' != 'guest'
    own_user = Received(
        message.routing_key, pika.BasicProperties(**{**vars(message.properties), "user_id": "tests"}), message.body
    )
    assert consume(own_user, settings, REQUIRE_USER_ID=True).action is Action.ACK


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"SIGNING_KEYS": KEYS, "SIGNING_KEY_ID": "k7"}, "SIGNING_KEY_ID 'k7'"),
        ({"REQUIRE_SIGNATURES": True}, "REQUIRE_SIGNATURES needs SIGNING_KEYS"),
        ({"TLS_CA_FILE": "/etc/ca.pem"}, "need an amqps://"),
        ({"BROKER_URL": "amqps://h", "TLS_CERT_FILE": "/c.pem"}, "go together"),
    ],
)
def test_security_misconfiguration_is_a_system_check(settings: Any, changes: dict[str, Any], words: str) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, **changes}
    [message] = check_settings()
    assert message.id == "broadcaster.E005"
    assert words in message.msg


def test_secrets_stay_out_of_repr(settings: Any) -> None:
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "BROKER_URL": "amqp://svc:hunter2@rabbit/%2F",
        "SIGNING_KEYS": {"tests": {"k1": "topsecret"}},
        "SIGNING_KEY_ID": "k1",
    }
    text = f"{get_settings()!r} {get_settings()!s}"
    assert "hunter2" not in text
    assert "topsecret" not in text
