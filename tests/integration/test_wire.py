"""CloudEvents interop: the SDK reads what we publish, and the daemon consumes what the SDK writes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cloudevents.core.bindings.rabbitmq import (
    RabbitMQMessage,
    from_binary_event,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.v1.event import CloudEvent

from tests.helpers import Received


def _as_sdk_message(message: Received) -> RabbitMQMessage:
    headers = {
        key: value.decode() if isinstance(value, bytes) else str(value) for key, value in message.headers.items()
    }
    return RabbitMQMessage(headers=headers, content_type=message.properties.content_type, body=message.body)


def test_the_sdk_reads_a_published_event_and_amqp_properties_mirror_it(service, rabbit):
    observer = rabbit.observe("relay.ping")
    before = datetime.now(UTC).replace(microsecond=0)

    service("orders", "producer").fire("ping", {"n": 7, "note": "héllo", "ignored": "not in the schema"})

    [message] = rabbit.take(observer)
    event = from_binary_event(_as_sdk_message(message))
    assert event.get_specversion() == "1.0"
    assert uuid.UUID(event.get_id()).version == 4
    assert event.get_source() == "orders"
    assert event.get_type() == "relay.ping"
    sent_at = event.get_time()
    assert sent_at is not None
    assert sent_at.utcoffset() == timedelta(0)
    assert before <= sent_at <= datetime.now(UTC)
    assert event.get_extension("schemaversion") == "1.3"
    assert event.get_extension("hops") == "0"
    assert event.get_data() == {"n": 7, "note": "héllo"}

    properties = message.properties
    assert message.routing_key == "relay.ping"
    assert properties.message_id == event.get_id()
    assert properties.type == "relay.ping"
    assert properties.app_id == "orders"
    assert properties.timestamp == int(sent_at.timestamp())
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"


def test_a_rolled_back_transaction_publishes_nothing(service, rabbit):
    observer = rabbit.observe("relay.ping")
    orders = service("orders", "producer")

    orders.fire("ping", {"n": 1}, count=2, rollback=True)
    orders.fire("ping", {"n": 2}, count=3)

    # Each fire process exits only after the broker confirmed what it published.
    assert [json.loads(m.body)["n"] for m in rabbit.take_all(observer)] == [2, 2, 2]


def test_a_process_that_exits_right_after_sending_still_delivers(service, rabbit):
    observer = rabbit.observe("relay.ping")

    service("orders", "producer").fire("ping", {"n": 3}, count=200, flush=False)

    assert len(rabbit.take_all(observer)) == 200


@pytest.mark.parametrize("mode", [to_binary_event, to_structured_event], ids=["binary", "structured"])
def test_the_daemon_consumes_events_the_sdk_writes(service, rabbit, mode):
    shipping = service("shipping", "consumer")
    shipping.daemon()
    event = CloudEvent(
        attributes={
            "id": str(uuid.uuid4()),
            "source": "https://example.com/some-java-service",
            "type": "relay.ping",
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
        },
        data={"n": 42, "note": mode.__name__},
    )
    written = mode(event)

    rabbit.publish("relay.ping", written.body, headers=written.headers, content_type=written.content_type)

    [record] = shipping.wait_records(1)
    assert record["id"] == event.get_id()
    assert record["source"] == "https://example.com/some-java-service"
    assert record["payload"] == {"n": 42, "note": mode.__name__}
    assert record["hops"] == 0


# 17 significant digits are all a float holds: more shows whether a decimal went through one.
EXACT = "12345678901234567890.123456789012"


def test_a_structured_event_keeps_the_precision_of_a_decimal(service, rabbit):
    shipping = service("shipping", "consumer")
    shipping.daemon()
    attributes = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "ledger", "type": "relay.priced"}
    # Written by hand, as a producer with exact decimals (Java's BigDecimal) writes it.
    body = json.dumps(attributes)[:-1] + f', "data": {{"sku": "gold", "amount": {EXACT}}}}}'

    rabbit.publish("relay.priced", body.encode(), content_type="application/cloudevents+json")

    [record] = shipping.wait_records(1)
    assert record["payload"] == {"sku": "gold", "amount": EXACT}


def test_a_binary_event_keeps_the_precision_of_a_decimal(service, rabbit):
    shipping = service("shipping", "consumer")
    shipping.daemon()

    rabbit.publish_raw_json("relay.priced", f'{{"sku": "gold", "amount": {EXACT}}}')

    [record] = shipping.wait_records(1)
    assert record["payload"] == {"sku": "gold", "amount": EXACT}
