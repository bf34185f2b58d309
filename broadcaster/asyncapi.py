"""The AsyncAPI 3.0 document of a service's events: channels, operations, payload schemas."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic.json_schema import models_json_schema

from broadcaster.snapshot import EventContract, json_schema

__all__ = ["asyncapi_document"]

JsonSchema = Mapping[str, Any]

AMQP_BINDING_VERSION = "0.3.0"


def asyncapi_document(
    contracts: Sequence[EventContract], *, service: str, exchange: str, queue: str, version: str = "1.0.0"
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the service's events.

    One channel per event, addressed by its routing key on the topic exchange, where
    published events are sent; one channel for the service queue, where consumed events
    are received. Payload schemas live in ``components.schemas``.
    """
    for contract in contracts:
        json_schema(contract.schema, "validation")  # a schema with no JSON Schema: ContractError naming it
    models = list(dict.fromkeys(c.schema for c in contracts))  # two events may share a schema class
    refs, definitions = models_json_schema(
        [(model, "validation") for model in models], by_alias=True, ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = {"CloudEventHeaders": _cloudevent_headers(), **definitions.get("$defs", {})}
    messages = {c.event: _message(c, refs[(c.schema, "validation")]) for c in contracts}
    channels = {c.event: _event_channel(c, exchange) for c in contracts}
    operations = {f"{c.event}.send": _operation("send", c.event, c.event) for c in contracts if c.published}
    received = [c for c in contracts if c.consumed]
    if received:
        # A colon never appears in an event name, so this key cannot clash with an event's channel.
        queue_channel = f"queue:{queue}"
        channels[queue_channel] = _queue_channel(received, queue)
        operations.update({f"{c.event}.receive": _operation("receive", queue_channel, c.event) for c in received})
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": service,
            "version": version,
            "description": f"Events the {service} service publishes and consumes: CloudEvents 1.0 over AMQP 0-9-1 "
            "in binary content mode (payload JSON as the body, attributes as ce- headers).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _event_channel(contract: EventContract, exchange: str) -> dict[str, Any]:
    return {
        "address": contract.event,
        "title": contract.event,
        "description": f"Routing key {contract.event!r} on the topic exchange {exchange!r}.",
        "messages": {contract.event: {"$ref": f"#/components/messages/{contract.event}"}},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _queue_channel(received: Sequence[EventContract], queue: str) -> dict[str, Any]:
    keys = ", ".join(c.event for c in received)
    return {
        "address": queue,
        "title": queue,
        "description": f"The service queue, shared by all its instances; bound with the routing keys {keys}.",
        "messages": {c.event: {"$ref": f"#/components/messages/{c.event}"} for c in received},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {"name": queue, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"},
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _operation(action: str, channel: str, event: str) -> dict[str, Any]:
    pointer = channel.replace("~", "~0").replace("/", "~1")
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{pointer}"},
        "messages": [{"$ref": f"#/channels/{pointer}/messages/{event}"}],
    }
    if action == "send":
        # Persistent messages: delivery is at-least-once, with publisher confirms.
        operation["bindings"] = {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING_VERSION}}
    else:
        operation["bindings"] = {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}}
    return operation


def _message(contract: EventContract, payload_ref: JsonSchema) -> dict[str, Any]:
    doc = (contract.schema.__doc__ or "").strip()
    message: dict[str, Any] = {
        "name": contract.event,
        "title": contract.schema.__name__,
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "allOf": [
                {"$ref": "#/components/schemas/CloudEventHeaders"},
                {
                    "properties": {
                        "ce-type": {"const": contract.event},
                        "ce-schemaversion": {"const": contract.schema_version},
                    }
                },
            ],
        },
        "payload": dict(payload_ref),
        "bindings": {"amqp": {"messageType": contract.event, "bindingVersion": AMQP_BINDING_VERSION}},
        "x-schema-version": contract.schema_version,
    }
    if doc:
        message["summary"] = doc.splitlines()[0]
    return message


def _cloudevent_headers() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "description": "CloudEvents 1.0 attributes as AMQP application headers (binary content mode).",
        "required": ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-hops"],
        "properties": {
            "ce-specversion": {"type": "string", "const": "1.0"},
            "ce-id": {**text, "description": "A uuid4, the same on every redelivery."},
            "ce-source": {**text, "description": "SERVICE_NAME of the producing service."},
            "ce-type": {**text, "description": "The event type, also the routing key."},
            "ce-time": {**text, "format": "date-time"},
            "ce-hops": {**text, "pattern": "^[0-9]+$", "description": "Length of the causation chain."},
            "ce-subject": {**text, "description": "Label of the signal's sender."},
            "ce-schemaversion": {**text, "pattern": "^[0-9]+\\.[0-9]+$"},
            "ce-causationid": {**text, "description": "ce-id of the event whose receiver caused this one."},
            "ce-traceparent": {**text, "description": "W3C trace context."},
            "ce-signaturekeyid": text,
            "ce-signature": {**text, "description": "HMAC-SHA256 of body and attributes, hex."},
        },
    }
