"""Signed events: only a holder of the source's key can produce an event a consumer accepts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import pytest
from django.dispatch import Signal
from hypothesis import HealthCheck, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel

import broadcaster
from broadcaster import signing
from broadcaster.checks import check_settings
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.envelope import Envelope, properties_for
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings, get_settings
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
    ("changes", "words", "check_id"),
    [
        ({"SIGNING_KEYS": KEYS, "SIGNING_KEY_ID": "k7"}, "SIGNING_KEY_ID 'k7'", "broadcaster.E032"),
        ({"REQUIRE_SIGNATURES": True}, "REQUIRE_SIGNATURES needs SIGNING_KEYS", "broadcaster.E033"),
        ({"TLS_CA_FILE": "/etc/ca.pem"}, "need an amqps://", "broadcaster.E030"),
        ({"BROKER_URL": "amqps://h", "TLS_CERT_FILE": "/c.pem"}, "go together", "broadcaster.E031"),
    ],
)
def test_security_misconfiguration_is_a_system_check(
    settings: Any, changes: dict[str, Any], words: str, check_id: str
) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, **changes}
    [message] = check_settings()
    assert message.id == check_id
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


# -- one canonical signed form -------------------------------------------------------------
#
# A signed message, then every way of moving, merging, splitting, duplicating or
# re-encoding its ce- attributes between headers, AMQP properties and the body: whatever
# a receiver would see differently must be dead-lettered. A change that keeps the meaning
# may pass; a change of meaning that passes fails the test.

STRICT = BroadcasterSettings.model_validate(
    {"SERVICE_NAME": "tests", "SIGNING_KEYS": {**KEYS, "rogue": {"r1": "rogue-secret"}}, "REQUIRE_SIGNATURES": True}
)
NAMES = ["specversion", "id", "source", "type", "time", "hops", "subject", "schemaversion", "causationid"]
NAMES += ["traceparent", "signaturekeyid", "partitionkey"]
PROPERTIES = ["message_id", "type", "app_id", "correlation_id", "content_encoding", "cluster_id", "reply_to"]
SEPARATORS = ["\n", "\r\n", ":", "", " ", "\x00", '","', '"],["', "\t", "\u2028", "\n\n"]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "text/json",
    "application/cloudevents+json",
]


@dataclass
class Wire:
    """One message as a consumer receives it: headers, the other AMQP properties, the body."""

    headers: dict[Any, Any]
    properties: dict[str, Any]
    body: bytes

    def amqp(self) -> pika.BasicProperties:
        return pika.BasicProperties(**self.properties, headers=self.headers)


envelopes = st.builds(
    lambda id, subject, version, cause, hops: Envelope(
        id=id,
        source="tests",
        type="billing.refunded",
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        subject=subject,
        schema_version=version,
        causation_id=cause,
        hops=hops,
    ),
    # Control characters are refused in any signed attribute: see the test at the end.
    st.one_of(st.uuids().map(str), st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1)),
    st.none() | st.sampled_from(["billing.Refund", "a:b", 'say "hi"\\']),
    st.none() | st.sampled_from(["1.0", "1.3"]),
    st.none() | st.uuids().map(str),
    st.integers(0, 5),
)


def signed(envelope: Envelope, key_id: str = "k2", source: str = "tests") -> Wire:
    headers = envelope.headers()
    secret = {**KEYS, "rogue": {"r1": "rogue-secret"}}[source][key_id]
    signing.sign(headers, "application/json", b'{"order_id": 3}', (key_id, secret.encode()))
    properties = properties_for(envelope, headers=headers)
    kept = {name: value for name, value in vars(properties).items() if name != "headers" and value is not None}
    return Wire(headers, kept, b'{"order_id": 3}')


def meaning(wire: Wire, subscriptions: Mapping[str, Any], seen: list[Any]) -> object:
    """What the receivers saw (envelope and fields), or the reason the message was dead-lettered."""
    before = len(seen)
    outcome = dispatch(wire.amqp(), wire.body, settings=STRICT, subscriptions=subscriptions)
    if outcome.action is Action.DEAD_LETTER:
        assert len(seen) == before
        return Rejected(outcome.reason)
    assert outcome.action is Action.ACK, outcome
    [received] = seen[before:]
    return received


@dataclass(frozen=True)
class Rejected:
    reason: str


def _ce(wire: Wire) -> list[Any]:
    return [name for name in wire.headers if str(name).lower().startswith("ce-")]


def mutate(data: st.DataObject, wire: Wire) -> str:
    """Change `wire` in one of the ways an attacker could; return what was done."""
    kind = data.draw(st.sampled_from(sorted(MUTATIONS)))
    MUTATIONS[kind](data, wire)
    return kind


def _move_to_property(data: st.DataObject, wire: Wire) -> None:
    name = data.draw(st.sampled_from(_ce(wire)))
    wire.properties[data.draw(st.sampled_from(PROPERTIES))] = str(wire.headers.pop(name))


def _property_to_header(data: st.DataObject, wire: Wire) -> None:
    source = data.draw(st.sampled_from(PROPERTIES))
    value = wire.properties.pop(source, None) or data.draw(st.text(max_size=8))
    wire.headers[f"ce-{data.draw(st.sampled_from(NAMES))}"] = str(value)


def _merge(data: st.DataObject, wire: Wire) -> None:
    first, second = data.draw(st.lists(st.sampled_from(_ce(wire)), min_size=2, max_size=2, unique=True))
    before, after = data.draw(st.sampled_from(SEPARATORS)), data.draw(st.sampled_from(SEPARATORS))
    label = data.draw(st.sampled_from([str(second), f'"{second}"', str(second).upper(), ""]))
    wire.headers[first] = f"{wire.headers[first]}{before}{label}{after}{wire.headers.pop(second)}"


def _fold(data: st.DataObject, wire: Wire) -> None:
    # Into the attribute sorted just before it, as a line of a line-per-attribute form would read.
    names = sorted(str(name) for name in _ce(wire))
    at = data.draw(st.integers(1, len(names) - 1))
    line = data.draw(st.sampled_from(["\n", "\r\n", "\n\n", "\u2028"]))
    wire.headers[names[at - 1]] = f"{wire.headers[names[at - 1]]}{line}{names[at]}:{wire.headers.pop(names[at])}"


def _split(data: st.DataObject, wire: Wire) -> None:
    name = data.draw(st.sampled_from(_ce(wire)))
    value = str(wire.headers[name])
    cut = data.draw(st.integers(0, len(value)))
    wire.headers[name] = value[:cut]
    wire.headers[f"ce-{data.draw(st.sampled_from(NAMES))}"] = value[cut:]


def _duplicate(data: st.DataObject, wire: Wire) -> None:
    name = str(data.draw(st.sampled_from(_ce(wire))))
    spelling = data.draw(st.sampled_from([name.upper(), name.title(), name.capitalize(), " " + name]))
    wire.headers[spelling] = data.draw(st.sampled_from([wire.headers[name], "forged", ""]))


def _re_encode(data: st.DataObject, wire: Wire) -> None:
    name = data.draw(st.sampled_from(_ce(wire)))
    value = str(wire.headers.pop(name))
    encodings = [value.encode(), value.encode("utf-16"), "\ufeff" + value, value + " ", value.upper(), f'"{value}"']
    if value.lstrip("-").isdigit():
        encodings += [int(value), int(value) + 1]
    new_name = data.draw(st.sampled_from([name, str(name).encode(), str(name).upper()]))
    wire.headers[new_name] = data.draw(st.sampled_from(encodings))


def _rename(data: st.DataObject, wire: Wire) -> None:
    first, second = data.draw(st.lists(st.sampled_from(_ce(wire)), min_size=2, max_size=2, unique=True))
    wire.headers[first], wire.headers[second] = wire.headers[second], wire.headers[first]


def _structured(data: st.DataObject, wire: Wire) -> None:
    document: dict[str, Any] = {str(name)[3:]: value for name, value in wire.headers.items() if str(name) in _ce(wire)}
    document["data"] = json.loads(wire.body)
    if data.draw(st.booleans()):
        document[data.draw(st.sampled_from(NAMES))] = data.draw(st.sampled_from(["1.0", "forged", "rogue", "9"]))
    wire.body = json.dumps(document, default=lambda v: v.decode("utf-8", "replace")).encode()
    wire.properties["content_type"] = "application/cloudevents+json"


def _content_type(data: st.DataObject, wire: Wire) -> None:
    wire.properties["content_type"] = data.draw(st.sampled_from(CONTENT_TYPES))


def _body(data: st.DataObject, wire: Wire) -> None:
    wire.body = data.draw(st.sampled_from([b'{"order_id":3}', b'{"order_id": 4}', b' {"order_id": 3}', b"{}"]))


MUTATIONS = {
    "move to a property": _move_to_property,
    "property to a header": _property_to_header,
    "merge": _merge,
    "fold": _fold,
    "split": _split,
    "duplicate": _duplicate,
    "re-encode": _re_encode,
    "rename": _rename,
    "structured mode": _structured,
    "content type": _content_type,
    "body": _body,
}


class Refunds(tuple[dict[str, Any], list[Any]]):
    """The subscriptions of the test and what its receiver saw (a short repr for hypothesis)."""

    def __repr__(self) -> str:
        return f"Refunds({len(self[1])} seen)"


@pytest.fixture
def refunds() -> Refunds:
    seen: list[Any] = []
    local = broadcaster.subscribe("billing.refunded", schema=Refund)
    local.connect(lambda envelope, order_id, **_: seen.append((envelope, order_id)), weak=False)
    return Refunds((subscriptions(), seen))


@hypothesis_settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(envelope=envelopes, data=st.data())
def test_no_rearrangement_of_signed_attributes_changes_what_receivers_see(
    refunds: tuple[dict[str, Any], list[Any]], envelope: Envelope, data: st.DataObject
) -> None:
    subscriptions_, seen = refunds
    original = signed(envelope)
    expected = meaning(original, subscriptions_, seen)
    assert expected == (envelope, 3)
    attacked = signed(envelope)
    done = [mutate(data, attacked) for _ in range(data.draw(st.integers(1, 3)))]
    note(f"mutations: {done}; headers {attacked.headers!r}; properties {attacked.properties!r}")
    result = meaning(attacked, subscriptions_, seen)
    assert isinstance(result, Rejected) or result == expected


def test_folding_an_attribute_into_the_one_before_it_is_rejected(refunds: tuple[dict[str, Any], list[Any]]) -> None:
    # The attack on the old newline-joined form: same signed string, new id, no schema version.
    subscriptions_, seen = refunds
    envelope = Envelope.new(source="tests", type="billing.refunded", schema_version="1.0")
    attacked = signed(envelope)
    attacked.headers["ce-id"] = f"{envelope.id}\nce-schemaversion:1.0"
    del attacked.headers["ce-schemaversion"]
    assert meaning(attacked, subscriptions_, seen) == Rejected("bad-attribute")  # refused before any key is tried
    attacked.headers["ce-id"] = f"{envelope.id}ce-schemaversion:1.0"
    assert meaning(attacked, subscriptions_, seen) == Rejected("bad-signature")
    assert seen == []


def test_a_structured_event_signed_with_another_source_s_key_is_rejected(
    refunds: tuple[dict[str, Any], list[Any]],
) -> None:
    # 'rogue' holds a key of its own: it signs an event whose body claims to come from 'tests'.
    subscriptions_, seen = refunds
    envelope = Envelope.new(source="rogue", type="billing.refunded")
    document = {**{k[3:]: v for k, v in envelope.headers().items()}, "source": "tests", "data": {"order_id": 3}}
    body = json.dumps(document).encode()
    headers = envelope.headers()
    signing.sign(headers, "application/cloudevents+json", body, ("r1", b"rogue-secret"))
    wire = Wire(headers, {"content_type": "application/cloudevents+json"}, body)
    assert meaning(wire, subscriptions_, seen) == Rejected("bad-signature")


@pytest.mark.parametrize("signature", ["v0:" + "0" * 64, "0" * 64, "v2:" + "0" * 64, ""])
def test_an_unknown_signature_scheme_is_rejected(refunds: tuple[dict[str, Any], list[Any]], signature: str) -> None:
    subscriptions_, seen = refunds
    wire = signed(Envelope.new(source="tests", type="billing.refunded"))
    wire.headers["ce-signature"] = signature
    assert meaning(wire, subscriptions_, seen) == Rejected("bad-signature")


@pytest.mark.parametrize("character", ["\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\u2028"])
def test_control_characters_in_signed_attributes_are_refused_before_verification(
    refunds: tuple[dict[str, Any], list[Any]], character: str
) -> None:
    subscriptions_, seen = refunds
    envelope = Envelope.new(source="tests", type="billing.refunded", subject=f"billing{character}Refund")
    wire = signed(envelope)  # a producer signs what it was given; the consumer refuses it
    outcome = meaning(wire, subscriptions_, seen)
    assert outcome == Rejected("bad-attribute")
