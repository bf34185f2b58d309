"""The envelope maps onto CloudEvents binary mode and is read back from binary and structured mode."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pika
import pytest

from broadcaster.envelope import Envelope, OutboundMessage, decode, properties_for
from broadcaster.exceptions import RejectedMessage


def make_envelope(**changes: object) -> Envelope:
    envelope = Envelope.new(source="orders", type="orders.order_placed", subject="orders.Order", schema_version="1.2")
    return Envelope(**{**{name: getattr(envelope, name) for name in Envelope.__slots__}, **changes})  # type: ignore[arg-type]


def test_new_envelope_has_a_uuid4_id_and_utc_time() -> None:
    envelope = make_envelope()
    assert uuid.UUID(envelope.id).version == 4
    assert envelope.time.tzinfo is UTC
    assert envelope.hops == 0
    assert envelope.causation_id is None


def test_caused_envelope_carries_the_chain() -> None:
    cause = make_envelope(hops=2)
    caused = Envelope.new(source="inventory", type="inventory.stock_low", cause=cause)
    assert caused.causation_id == cause.id
    assert caused.hops == 3


def test_properties_mirror_the_ce_headers() -> None:
    envelope = make_envelope(causation_id="abc", hops=1)
    properties = properties_for(envelope)
    headers = properties.headers
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == properties.message_id == envelope.id
    assert headers["ce-type"] == properties.type == "orders.order_placed"
    assert headers["ce-source"] == properties.app_id == "orders"
    assert headers["ce-subject"] == "orders.Order"
    assert headers["ce-schemaversion"] == "1.2"
    assert headers["ce-causationid"] == "abc"
    assert headers["ce-hops"] == "1"
    assert headers["ce-time"].endswith("Z")
    assert properties.timestamp == int(envelope.time.timestamp())
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert "ce-traceparent" not in headers  # optional attributes are left out, not empty


def test_binary_round_trip() -> None:
    envelope = make_envelope(causation_id="abc", hops=4)
    message = decode(properties_for(envelope), b'{"a":1}', attempt=3)
    assert message.envelope == envelope
    assert message.envelope.attempt == 3
    assert message.data == b'{"a":1}'


def test_structured_mode_is_read_with_decimals_kept_exact() -> None:
    document = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/elsewhere",
        "type": "orders.order_placed",
        "time": "2026-01-02T03:04:05+01:00",
        "datacontenttype": "application/json",
        "data": {"total": 0.1000000000000000055511151231257827},
    }
    body = json.dumps(document).replace("0.1", "0.10000000000000000555", 1).encode()
    properties = pika.BasicProperties(content_type="application/cloudevents+json")
    message = decode(properties, body)
    assert message.envelope.id == "e-1"
    assert message.envelope.time == datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert message.data == {"total": Decimal("0.10000000000000000555")}


def test_structured_mode_base64_data() -> None:
    body = json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "eyJhIjogMX0="})
    assert decode(pika.BasicProperties(content_type="application/cloudevents+json"), body.encode()).data == b'{"a": 1}'


def test_missing_content_type_is_read_as_json() -> None:
    properties = pika.BasicProperties(headers={"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"})
    assert decode(properties, b"{}").envelope.type == "t"


@pytest.mark.parametrize(
    ("properties", "body", "reason"),
    [
        (pika.BasicProperties(content_type="application/x-python-serialize"), b"\x80\x04", "content-type"),
        (pika.BasicProperties(content_type="text/plain"), b"hi", "content-type"),
        (pika.BasicProperties(content_type="application/json", headers={"ce-id": "1"}), b"{}", "bad-attribute"),
        (pika.BasicProperties(content_type="application/cloudevents+json"), b"{not json", "not-json"),
        (pika.BasicProperties(content_type="application/cloudevents+json"), b"[1]", "not-json"),
        (pika.BasicProperties(content_type="application/cloudevents+json"), b"[" * 100_000, "too-deep"),
        (
            pika.BasicProperties(headers={"ce-specversion": "0.3", "ce-id": "1", "ce-source": "s", "ce-type": "t"}),
            b"{}",
            "bad-attribute",
        ),
        (
            pika.BasicProperties(
                headers={"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-hops": "-1"}
            ),
            b"{}",
            "bad-attribute",
        ),
        (
            pika.BasicProperties(
                headers={"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-time": "noon"}
            ),
            b"{}",
            "bad-attribute",
        ),
        (
            pika.BasicProperties(
                headers={"ce-specversion": "1.0", "ce-id": {"x": 1}, "ce-source": "s", "ce-type": "t"}
            ),
            b"{}",
            "bad-attribute",
        ),
    ],
)
def test_what_is_not_a_json_cloudevent_is_rejected_with_a_reason(
    properties: pika.BasicProperties, body: bytes, reason: str
) -> None:
    with pytest.raises(RejectedMessage) as caught:
        decode(properties, body)
    assert caught.value.reason == reason


def test_ids_are_unique_and_not_shared_with_a_forked_child() -> None:
    import os

    ids = {Envelope.new(source="s", type="t").id for _ in range(5000)}
    assert len(ids) == 5000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(write, Envelope.new(source="s", type="t").id.encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    parent_next = Envelope.new(source="s", type="t").id
    assert child_id != parent_next  # the child did not reuse the parent's pool
    assert uuid.UUID(child_id).version == 4


def test_a_drafted_message_makes_its_envelope_once_with_the_time_of_send() -> None:
    cause = make_envelope(hops=1)
    before = datetime.now(UTC)
    message = OutboundMessage.draft(
        b"{}",
        source="orders",
        type="orders.order_placed",
        subject="orders.Order",
        schema_version="1.2",
        cause=cause,
        traceparent=None,
    )
    after = datetime.now(UTC)
    time.sleep(0.01)  # the envelope is read later, as the I/O thread would
    envelope = message.envelope
    assert before <= envelope.time <= after, "the time is when send() ran, not when the envelope was read"
    assert message.envelope is envelope, "a second read must not draw a new id"
    assert (envelope.type, envelope.subject, envelope.schema_version) == ("orders.order_placed", "orders.Order", "1.2")
    assert (envelope.causation_id, envelope.hops) == (cause.id, 2)
    assert message.routing_key == message.type == "orders.order_placed"


def test_the_envelope_time_is_the_send_time_cut_to_whole_microseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # 43.180088999 s: through a float it would round up to .180089, after send() ran.
    monkeypatch.setattr(time, "time_ns", lambda: 1_795_542_763_180_088_999)
    message = OutboundMessage.draft(
        b"{}",
        source="orders",
        type="orders.order_placed",
        subject=None,
        schema_version="1.0",
        cause=None,
        traceparent=None,
    )
    assert message.envelope.time == datetime(2026, 11, 24, 17, 52, 43, 180088, tzinfo=UTC)
