"""Hundreds of generated hostile messages through the real broker into a running daemon.

Afterwards the daemon is alive and every message is accounted for: each was either
handled by a receiver (a record) or dead-lettered (in ``<queue>.dead-letter``), and the
service queue is empty: nothing lost, nothing looping, nothing fatal.
"""

from __future__ import annotations

import json
import pickle
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import amqp_raw
from tests.helpers import CreatesFile
from tests.integration.conftest import Broker, Service, wait_for

pytestmark = pytest.mark.faults

CASES = 300
SUBSCRIBED = ["relay.ping", "relay.priced"]  # relay.boom is left out: its receiver raises, on purpose
ACCOUNTED_WITHIN = 60.0
STRUCTURED = "application/cloudevents+json"

# Only what an AMQP field table can carry (pika refuses the rest before sending).
wire_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
wire_scalar = st.one_of(
    wire_text,
    st.binary(max_size=30),  # often not UTF-8: arrives as bytes
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.none(),
    st.floats(),
    st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)),
)
wire_value = st.recursive(
    wire_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(wire_text, inner, max_size=3), max_leaves=5
)
ATTRIBUTES = ["specversion", "id", "source", "type", "time", "schemaversion", "hops", "subject", "causationid"]
header_name = st.one_of(
    st.builds(lambda prefix, name: prefix + name, st.sampled_from(["ce-", "CE-", "Ce-"]), st.sampled_from(ATTRIBUTES)),
    st.sampled_from(["x-broadcaster-attempt", "x-broadcaster-reason", "x-death", "x-broadcaster-first-failure"]),
    wire_text.filter(lambda name: len(name.encode()) < 200),
)
event_type = st.one_of(st.sampled_from([*SUBSCRIBED, "relay.unknown", "", "RELAY.PING"]), wire_text)
attributes = st.fixed_dictionaries(
    {"ce-specversion": st.sampled_from(["1.0", "1.0", "0.3", ""])},
    optional={
        "ce-id": st.one_of(st.uuids().map(str), wire_text),
        "ce-source": wire_text,
        "ce-type": event_type,
        "ce-time": st.one_of(st.datetimes().map(datetime.isoformat), wire_text),
        "ce-schemaversion": st.sampled_from(["1.0", "1.3", "1.9", "2.0", "0.1", "x", ""]),
        "ce-hops": st.one_of(st.sampled_from(["0", "3", "8", "9", "-1", "1e3"]), st.integers(-5, 2**40)),
    },
)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), wire_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(wire_text, inner, max_size=3),
    max_leaves=8,
)
payload = st.one_of(
    st.fixed_dictionaries({"n": st.integers(-(2**70), 2**70)}, optional={"note": wire_text, "x": json_value}),
    st.fixed_dictionaries({"sku": wire_text, "amount": st.decimals(allow_nan=False, allow_infinity=False).map(str)}),
    st.fixed_dictionaries({}, optional={"n": json_value, "note": json_value, "sku": json_value, "amount": json_value}),
    json_value,
)
body = st.one_of(
    payload.map(lambda value: json.dumps(value, default=str).encode()),
    st.binary(max_size=200),
    st.sampled_from(
        [b"", b"null", b"{}", b"[" * 100_000 + b"]" * 100_000, b'{"n": 1, "note": "' + b"x" * 3000 + b'"}']
    ),
    st.integers(1, 5000).map(lambda digits: b'{"n": ' + b"9" * digits + b"}"),
)
content_type = st.sampled_from(
    [None, "application/json", "text/json", "application/x-python-serialize", "application/octet-stream", "", "x/y"]
)


@pytest.fixture
def consumer(service) -> Service:
    return service("hostile", "consumer", MAX_MESSAGE_BYTES="2048", RETRY_DELAYS="0.2")


def _publish(rabbit: Broker, routing_key: str, raw: bytes, headers: dict[str, Any], ctype: str | None) -> None:
    props = pika.BasicProperties(content_type=ctype, headers=headers, delivery_mode=2)
    try:
        props.encode()  # what the broker could never carry is not hostile input, it is no input
    except Exception:
        assume(False)
    rabbit.publish(routing_key, raw, headers=headers, content_type=ctype)


def _structured(raw_attributes: dict[str, Any], data: Any, ctype: str | None) -> bytes:
    document = {key.lower().removeprefix("ce-"): value for key, value in raw_attributes.items()}
    document |= {"data": data, "datacontenttype": ctype}  # a string or null: see the xfail below
    return json.dumps(document, default=str).encode()


def _handled(consumer: Service, rabbit: Broker) -> tuple[int, int]:
    return len(consumer.records()), rabbit.count(consumer.dead_letter_queue)


def test_generated_hostile_messages_are_all_accounted_for(consumer: Service, rabbit: Broker, tmp_path: Path) -> None:
    daemon = consumer.daemon()
    marker = tmp_path / "unpickled"
    published = 0

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(
        routing_key=st.sampled_from(SUBSCRIBED),
        head=attributes,
        extra=st.dictionaries(header_name, wire_value, max_size=4),
        raw=body,
        ctype=content_type,
        structured=st.integers(0, 9),
    )
    def publish_one(  # noqa: PLR0917 - one argument per generated part, as @given names them
        routing_key: str, head: dict[str, Any], extra: dict[str, Any], raw: bytes, ctype: str | None, structured: int
    ) -> None:
        nonlocal published
        headers = {**extra, **head}
        if structured == 0:  # one in ten in structured mode, attributes in the body
            _publish(rabbit, routing_key, _structured(head, raw.decode(errors="replace"), ctype), extra, STRUCTURED)
        else:
            _publish(rabbit, routing_key, raw, headers, ctype)
        published += 1

    publish_one()
    # And a few that are not random at all.
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        evil = pickle.dumps(CreatesFile(marker), protocol=protocol)
        ids = {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "x", "ce-type": "relay.ping"}
        rabbit.publish("relay.ping", evil, headers=ids, content_type="application/x-python-serialize")
        rabbit.publish("relay.ping", evil, headers=ids, content_type="application/json")
        published += 2
    odd = {"ce-specversion": "1.0", "ce-id": "odd", "ce-source": "x", "ce-type": "relay.ping", b"ce-\xff": b"\xff"}
    rabbit.publish("relay.ping", b'{"n": 5}', headers=odd)  # a key that is not UTF-8
    rabbit.publish("relay.ping", b'{"n": 6}', headers={**odd, "x-broadcaster-attempt": 10**6})
    rabbit.publish("relay.ping", b'{"n": 7}', headers=odd, timestamp=0, message_id="\x00", type="relay.boom")
    published += 3

    wait_for(lambda: sum(_handled(consumer, rabbit)) >= published, ACCOUNTED_WITHIN, f"{published} messages handled")
    acked, dead = _handled(consumer, rabbit)
    assert acked + dead == published
    assert acked > 0
    assert dead > 0
    assert daemon.alive, daemon.log()
    assert rabbit.count(consumer.queue) == 0
    assert all(rabbit.count(queue) == 0 for queue in consumer.queues[2:])  # no retries: no receiver raised
    assert not marker.exists()
    log = daemon.stop()
    assert f"stopped after {published} message(s) (acked {acked}, dead-lettered {dead})" in log
    for letter in rabbit.take_all(consumer.dead_letter_queue):
        assert letter.headers["x-broadcaster-reason"], letter.headers
        # Dead-lettered on its first delivery; a generated x-broadcaster-attempt header may claim a later one.
        assert letter.headers["x-broadcaster-attempts"] >= 1


def test_a_structured_event_with_a_non_string_datacontenttype_does_not_stop_the_daemon(
    consumer: Service, rabbit: Broker
) -> None:
    daemon = consumer.daemon()
    document = {"specversion": "1.0", "id": "poison", "source": "x", "type": "relay.ping", "data": {"n": 1}}
    rabbit.publish(
        "relay.ping",
        json.dumps({**document, "datacontenttype": True}).encode(),
        content_type="application/cloudevents+json",
    )
    rabbit.publish_event("relay.ping", {"n": 2})
    wait_for(lambda: consumer.records() or not daemon.alive, 15, "the daemon to handle or die")
    assert daemon.alive, daemon.log()
    assert [record["payload"]["n"] for record in consumer.wait_records(1)] == [2]
    assert rabbit.count(consumer.dead_letter_queue) == 1


def test_the_decimal_and_datetime_header_types_survive_dead_lettering(consumer: Service, rabbit: Broker) -> None:
    daemon = consumer.daemon()
    headers = {"ce-specversion": "1.0", "ce-id": "typed", "ce-source": "x", "ce-type": "relay.unknown"}
    typed = {"x-decimal": Decimal("1.25"), "x-when": datetime(2024, 1, 2, tzinfo=UTC), "x-list": [1, "a", None]}
    rabbit.publish("relay.ping", b'{"n": 1}', headers={**headers, **typed})
    [letter] = rabbit.take(consumer.dead_letter_queue)
    assert letter.headers["x-broadcaster-reason"] == "unknown-event"
    assert letter.headers["x-decimal"] == Decimal("1.25")
    assert letter.headers["x-list"] == [1, b"a", None] or letter.headers["x-list"] == [1, "a", None]
    assert daemon.alive


def _raw_classes() -> dict[str, list[tuple[str, bytes, bytes]]]:
    """Hostile classes pika's own encoder would refuse to send: (routing key, property bytes, body)."""

    def props(event: str, *extra: tuple[bytes, bytes], content_type: bytes = b"application/json") -> bytes:
        entries = [(name, value) for name, value in amqp_raw.ce_headers(event) if name != b"ce-id"]
        entries.append((b"ce-id", b"S" + amqp_raw.longstr(uuid.uuid4().hex.encode())))
        return amqp_raw.properties(amqp_raw.table([*entries, *extra]), content_type=content_type)

    def text(value: str) -> bytes:
        return b"S" + amqp_raw.longstr(value.encode())

    def timestamp(seconds: int) -> bytes:
        return b"T" + seconds.to_bytes(8, "big")

    filler = b"S" + amqp_raw.longstr(b"f" * (131072 - 700))
    return {
        "timestamp past year 9999": [
            ("relay.ping", props("relay.ping", (b"x-when", timestamp(seconds))), b'{"n": 1}')
            for seconds in (253402300800, 2**40, 2**62, 2**63, 2**64 - 1)
        ],
        "tables nested 1500-5000 deep": [
            ("relay.ping", props("relay.ping", (b"x-deep", b"F" + amqp_raw._deep(depth))), b'{"n": 1}')
            for depth in (1500, 2000, 3000, 4000, 5000)
        ],
        "headers filling the frame": [
            ("relay.ping", props("relay.ping", (b"x-filler", filler)), body)
            for body in (b'{"n": "x"}', b"not json", b"[]", b'{"n": 1.5}', b"{}")
        ],
        "attempt header at the 2^63 edge, receiver raising": [
            (
                "relay.boom",
                props("relay.boom", (b"x-broadcaster-attempt", b"l" + value.to_bytes(8, "big", signed=True))),
                b'{"n": 1}',
            )
            for value in (2**63 - 1, 2**63 - 2, -(2**63), 0, 5)
        ],
        "huge exponents in a Decimal field": [
            ("relay.priced", props("relay.priced"), b'{"sku": "a", "amount": ' + number + b"}")
            for number in (
                b"1e99999999999999999999",
                b"-1E+999999999999",
                b"1e-99999999999999999999",
                b"9" * 4000,
                b"NaN",
            )
        ],
        "Unicode digits in ce-hops and ce-schemaversion": [
            ("relay.ping", props("relay.ping", (name, text(digit))), b'{"n": 1}')
            for name in (b"ce-hops", b"ce-schemaversion")
            for digit in ("\u00b2", "\u0663", "1\u00b9")
        ],
        "content type that is not UTF-8": [
            ("relay.ping", props("relay.ping", content_type=value), b'{"n": 1}')
            for value in (b"application/\xff", b"\xc3\x28", b"\xed\xa0\x80json")
        ],
    }


def test_hostile_classes_over_the_wire_are_each_accounted_for(consumer: Service, rabbit: Broker) -> None:
    """Messages the old daemon died on, or looped on forever, sent as raw frames; then a good event."""
    daemon = consumer.daemon()
    classes = _raw_classes()
    for messages in classes.values():
        for routing_key, raw, payload in messages:
            rabbit.channel.basic_publish(
                rabbit.exchange, routing_key, payload, amqp_raw.RawProperties(raw), mandatory=True
            )
    published = sum(len(messages) for messages in classes.values())
    wait_for(lambda: sum(_handled(consumer, rabbit)) >= published, ACCOUNTED_WITHIN, f"{published} raw messages")
    acked, dead = _handled(consumer, rabbit)
    assert daemon.alive, daemon.log()
    assert acked + dead == published
    letters = rabbit.take_all(consumer.dead_letter_queue)
    assert all(letter.headers.get("x-broadcaster-reason") for letter in letters)
    reasons = sorted({letter.headers["x-broadcaster-reason"] for letter in letters})
    assert "undecodable" in reasons
    rabbit.publish_event("relay.ping", {"n": 42})  # and the daemon goes on
    wait_for(lambda: any(record["payload"].get("n") == 42 for record in consumer.records()), 15, "the good event")
    assert rabbit.count(consumer.queue) == 0
    assert "connection lost" not in daemon.log()  # nothing made the connection drop
    counts = ", ".join(f"{name}: {len(messages)}" for name, messages in classes.items())
    print(f"raw hostile classes ({published} messages; {counts}): {acked} handled, {dead} dead-lettered {reasons}")
