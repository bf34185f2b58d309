"""The consumer's boundary, without a broker: whatever bytes a content header carries.

Property bytes are drawn as a hostile publisher could write them (header values of every
AMQP field type, values pika can decode but not encode back, tables nested thousands
deep, timestamps past year 9999, headers filling the frame), bodies as numbers of every
shape. Each message goes through pika's decoding, the daemon's handling and the retry or
dead-letter copy. None may raise, every outcome is an ack, a retry or a dead letter with
a reason, and every copy is one pika can encode within the frame size.
"""

from __future__ import annotations

import json
import os
import struct
from decimal import Decimal
from typing import Any

import pika
import pika.frame
import pika.spec
import pytest
from django.dispatch import Signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

import broadcaster
from broadcaster import properties as amqp_properties
from broadcaster.consumer import Consumer
from broadcaster.dispatch import Action
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings
from broadcaster.settlement import Verdict, settle
from broadcaster.workers import Delivery
from tests import amqp_raw

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "800"))
BOUNDARY = settings(
    max_examples=max(EXAMPLES // 4, 1),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
FRAME_MAX = 131072
EVENT = "orders.priced"


class Priced(BaseModel):
    amount: Decimal
    note: str = ""

    @field_validator("note")
    @classmethod
    def _no_boom(cls, value: str) -> str:
        if value == "boom":  # a schema's own validator raising something other than ValueError
            raise RuntimeError("the validator itself broke")
        return value


class Channel:
    """Records what the daemon would send on its channel."""

    is_open = True

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, pika.BasicProperties]] = []
        self.nacked: list[int] = []

    def basic_publish(self, exchange: str, queue: str, body: bytes, properties: Any, mandatory: bool) -> None:
        self.published.append((queue, body, properties))

    def basic_nack(self, tag: int, requeue: bool) -> None:
        self.nacked.append(tag)


@pytest.fixture
def consumer() -> Consumer:
    config = BroadcasterSettings.model_validate({"SERVICE_NAME": "boundary", "RETRY_DELAYS": [1, 2]})
    broadcaster.subscribe(EVENT, schema=Priced, signal=Signal())
    return Consumer(config, subscriptions())


numbers = st.one_of(
    st.sampled_from(
        [
            "1e99999999999999999999",
            "-1e-99999999999999999999",
            "1E+999999999",
            "NaN",
            "Infinity",
            "-0",
            str(2**63),
            str(-(2**63) - 1),
            "9" * 5000,
            "0." + "1" * 5000,
        ]
    ),
    st.integers().map(str),
    st.floats().map(json.dumps),
    st.decimals().map(str),
)
bodies = st.one_of(
    numbers.map(lambda number: ('{"amount": ' + number + "}").encode()),
    st.tuples(numbers, st.sampled_from(['"boom"', '"ok"', "1", "null", "[]"])).map(
        lambda pair: ('{"amount": ' + pair[0] + ', "note": ' + pair[1] + "}").encode()
    ),
    st.binary(max_size=60),
    st.integers(500, 3000).map(lambda depth: b'{"amount": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"),
)
ce_overrides = st.dictionaries(
    st.sampled_from([b"ce-hops", b"ce-schemaversion", b"ce-time", b"ce-id", b"x-broadcaster-attempt"]),
    st.one_of(
        st.sampled_from(["\u00b2", "\u0663", "1\u00b9", "1.0", "2.0", "9" * 30, "2026-01-01T00:00:00Z"]).map(
            lambda text: b"S" + amqp_raw.longstr(text.encode())
        ),
        st.sampled_from([2**63 - 1, -(2**63), 0]).map(lambda value: b"l" + struct.pack(">q", value)),
        amqp_raw.field_value,
    ),
    max_size=3,
)
extra_headers = st.lists(st.tuples(amqp_raw.header_name, amqp_raw.field_value), max_size=6)
content_types = st.one_of(
    st.sampled_from([b"application/json", b"application/cloudevents+json", b"\xff\xfe", b"text/plain", None]),
    st.binary(max_size=20),
)


def _properties(raw: bytes) -> pika.BasicProperties:
    """Decode raw property bytes as pika does for a delivery, through the content header frame."""
    payload = struct.pack(">HHQ", 60, 0, 10) + raw
    frame = struct.pack(">BHI", pika.spec.FRAME_HEADER, 1, len(payload)) + payload + bytes([pika.spec.FRAME_END])
    amqp_properties.install_tolerant_decoder()
    consumed, header = pika.frame.decode_frame(frame)
    assert consumed == len(frame)
    return header.properties


def _run(consumer: Consumer, raw: bytes, body: bytes, attempt: int = 1) -> tuple[Verdict, Channel]:
    channel = Channel()
    delivery = Delivery(consumer.topology, channel, 7, EVENT, _properties(raw), body, attempt)
    finished = consumer._handle(delivery)
    outcome = finished.outcome
    assert outcome.action in (Action.ACK, Action.RETRY, Action.DEAD_LETTER)
    if outcome.action is not Action.ACK:
        assert outcome.reason, outcome
    settlement = settle(outcome, attempt, consumer.topology, caused_confirmed=finished.confirmed)
    consumer._executor.carry_out(finished, settlement)
    for queue, copied_body, props in channel.published:
        assert queue == settlement.queue
        assert copied_body == body  # the original body, always
        encoded = b"".join(props.encode())  # pika can encode the copy ...
        assert len(encoded) <= FRAME_MAX - 20  # ... within one content header frame
    return settlement.verdict, channel


@BOUNDARY
@given(ce=ce_overrides, extra=extra_headers, body=bodies, content_type=content_types)
def test_any_content_header_ends_acked_retried_or_dead_lettered(
    consumer: Consumer, ce: dict[bytes, bytes], extra: list[tuple[bytes, bytes]], body: bytes, content_type: bytes
) -> None:
    entries = [*amqp_raw.ce_headers(EVENT), *ce.items(), *extra]
    raw = amqp_raw.properties(amqp_raw.table(entries), content_type=content_type)
    verdict, channel = _run(consumer, raw, body)
    assert (verdict is Verdict.ACKED) == (channel.published == [])


@BOUNDARY
@given(value=amqp_raw.deeply_nested, body=bodies)
def test_tables_nested_past_the_recursion_limit_are_dead_lettered_as_undecodable(
    consumer: Consumer, value: bytes, body: bytes
) -> None:
    raw = amqp_raw.properties(amqp_raw.table([*amqp_raw.ce_headers(EVENT), (b"x-deep", value)]))
    verdict, channel = _run(consumer, raw, body)
    [(_, copied_body, copy)] = channel.published
    assert verdict is Verdict.DEAD_LETTERED
    assert copy.headers["x-broadcaster-reason"] == "undecodable"
    assert "RecursionError" in copy.headers["x-broadcaster-error"]
    assert copied_body == body


def test_a_timestamp_past_year_9999_is_a_dead_letter_not_a_dropped_connection(consumer: Consumer) -> None:
    past = b"T" + struct.pack(">Q", 253402300800)  # 10000-01-01
    raw = amqp_raw.properties(amqp_raw.table([*amqp_raw.ce_headers(EVENT), (b"x-when", past)]))
    verdict, channel = _run(consumer, raw, b'{"amount": 1}')
    [(queue, body, copy)] = channel.published
    assert (verdict, queue) == (Verdict.DEAD_LETTERED, "boundary.dead-letter")
    assert copy.headers["x-broadcaster-reason"] == "undecodable"
    assert "year" in copy.headers["x-broadcaster-error"] or "range" in copy.headers["x-broadcaster-error"]
    assert body == b'{"amount": 1}'


def test_header_values_pika_cannot_encode_are_copied_as_text_and_named(consumer: Consumer) -> None:
    # Values a decoder can hand over that pika's encoder refuses: an unsigned 64-bit
    # integer (pika decodes "L" as signed today; RabbitMQ and other clients do not), a
    # lone surrogate, a set.
    headers = {
        **{name.decode(): value for name, value in _ce(EVENT).items()},
        "x-big": 2**64 - 1,
        "x-surrogate": "a\udcff",
        "x-nested": {"fine": 1, "bad": {1, 2}},
    }
    props = pika.BasicProperties(content_type="application/json", headers=headers)
    channel = Channel()
    delivery = Delivery(consumer.topology, channel, 7, EVENT, props, b'{"amount": "x"}', 1)
    finished = consumer._handle(delivery)
    settlement = settle(finished.outcome, 1, consumer.topology)
    consumer._executor.carry_out(finished, settlement)
    [(_, _, copy)] = channel.published
    b"".join(copy.encode())  # pika encodes it
    assert settlement.verdict is Verdict.DEAD_LETTERED
    assert copy.headers["x-big"] == str(2**64 - 1)
    assert copy.headers["x-surrogate"] == '"a\\udcff"'
    assert json.loads(copy.headers["x-nested"])["fine"] == 1
    assert sorted(json.loads(copy.headers["x-broadcaster-unencodable-headers"])) == ["x-big", "x-nested", "x-surrogate"]
    assert "could not be encoded" in copy.headers["x-broadcaster-copy-note"]
    assert copy.headers["x-broadcaster-reason"] == "schema-violation"
    assert copy.headers["ce-type"] == EVENT


def _ce(event: str) -> dict[bytes, str]:
    return {name: value[5:].decode() for name, value in amqp_raw.ce_headers(event)}


def test_headers_just_under_the_frame_size_are_left_out_of_the_copy_and_named(consumer: Consumer) -> None:
    filler = b"S" + amqp_raw.longstr(b"x" * (FRAME_MAX - 300))
    raw = amqp_raw.properties(amqp_raw.table([*amqp_raw.ce_headers(EVENT), (b"x-filler", filler)]))
    verdict, channel = _run(consumer, raw, b'{"amount": "nope"}')
    [(_, _, copy)] = channel.published
    assert verdict is Verdict.DEAD_LETTERED
    assert "x-filler" not in copy.headers
    assert json.loads(copy.headers["x-broadcaster-dropped-headers"]) == ["x-filler"]
    assert copy.headers["ce-type"] == EVENT  # everything that fits is kept


def test_a_validator_raising_something_else_is_an_internal_error_dead_letter(consumer: Consumer) -> None:
    raw = amqp_raw.properties(amqp_raw.table(amqp_raw.ce_headers(EVENT)))
    verdict, channel = _run(consumer, raw, b'{"amount": 1, "note": "boom"}')
    [(_, _, copy)] = channel.published
    assert verdict is Verdict.DEAD_LETTERED
    assert copy.headers["x-broadcaster-reason"] == "internal-error"
    assert copy.headers["x-broadcaster-exception"] == "builtins.RuntimeError"
    assert "the validator itself broke" in copy.headers["x-broadcaster-error"]


@pytest.mark.parametrize("digit", ["\u00b2", "\u0663", "\u2167"])
@pytest.mark.parametrize("attribute", [b"ce-hops", b"ce-schemaversion"])
def test_unicode_digits_are_a_bad_attribute_not_a_crash(consumer: Consumer, attribute: bytes, digit: str) -> None:
    value = b"S" + amqp_raw.longstr(digit.encode())
    raw = amqp_raw.properties(amqp_raw.table([*amqp_raw.ce_headers(EVENT), (attribute, value)]))
    verdict, channel = _run(consumer, raw, b'{"amount": 1}')
    [(_, _, copy)] = channel.published
    assert verdict is Verdict.DEAD_LETTERED
    assert copy.headers["x-broadcaster-reason"] in ("bad-attribute", "unsupported-schema-version")


def test_a_huge_exponent_in_a_decimal_field_is_dead_lettered(consumer: Consumer) -> None:
    raw = amqp_raw.properties(amqp_raw.table(amqp_raw.ce_headers(EVENT)))
    verdict, channel = _run(consumer, raw, b'{"amount": 1e99999999999999999999}')
    [(_, _, copy)] = channel.published
    assert verdict is Verdict.DEAD_LETTERED
    assert copy.headers["x-broadcaster-reason"] == "not-json"
    assert "too large" in copy.headers["x-broadcaster-error"]


def test_a_content_type_that_is_not_utf8_is_dead_lettered(consumer: Consumer) -> None:
    raw = amqp_raw.properties(amqp_raw.table(amqp_raw.ce_headers(EVENT)), content_type=b"application/\xff")
    verdict, channel = _run(consumer, raw, b'{"amount": 1}')
    [(_, _, copy)] = channel.published
    assert verdict is Verdict.DEAD_LETTERED
    assert copy.headers["x-broadcaster-reason"] == "content-type"


def test_the_log_names_a_message_without_an_envelope_by_what_the_broker_says_of_it(
    consumer: Consumer, caplog: pytest.LogCaptureFixture
) -> None:
    # No ce- headers, and a hostile AMQP type with a line break: the dead-letter line must
    # still say which message it was, on one line.
    raw = amqp_raw.properties(amqp_raw.table([]), content_type=b"application/json")
    props = _properties(raw)
    props.type, props.message_id = "forged\nERROR everything is fine", "m-1"
    channel = Channel()
    finished = consumer._handle(Delivery(consumer.topology, channel, 7, EVENT, props, b"{}", 1))
    consumer._executor.carry_out(finished, settle(finished.outcome, 1, consumer.topology))
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead-lettered")]
    assert f"a message routed as {EVENT!r} (queue {consumer.topology.queue}, delivery tag 7;" in line
    assert "type 'forged\\nERROR everything is fine' id 'm-1'" in line
    assert "\n" not in line
