"""Operators see each event: a log line with its fields, Prometheus metrics, a continued trace."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from pydantic import BaseModel

import broadcaster
from broadcaster.testing import InMemoryBroker
from tests.conftest import Broker, wait_for

EVENT = "audit.logged"


class Logged(BaseModel):
    entry: int


logged = Signal()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def received() -> list[dict[str, Any]]:
    broadcaster.broadcast(logged, event=EVENT, schema=Logged)
    calls: list[dict[str, Any]] = []
    broadcaster.subscribe(EVENT, schema=Logged).connect(lambda **kw: calls.append(kw), weak=False)
    return calls


def test_each_handled_event_is_a_log_line_and_counted(
    broker: Broker, daemon: Any, received: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    before = (
        sample("broadcaster_published_total", event=EVENT),
        sample("broadcaster_confirmed_total", event=EVENT),
        sample("broadcaster_consumed_total", event=EVENT, outcome="acked"),
    )
    caplog.set_level(logging.INFO, logger="broadcaster.events")
    daemon()
    logged.send(sender=None, entry=1)
    broadcaster.flush(10)
    wait_for(lambda: any(r.name == "broadcaster.events" for r in caplog.records), "the log line")
    [record] = [r for r in caplog.records if r.name == "broadcaster.events"]
    fields = record.broadcaster  # type: ignore[attr-defined]
    assert fields["event"] == EVENT
    assert fields["id"] == received[0]["envelope"].id
    assert fields["source"] == "tests"
    assert (fields["attempt"], fields["outcome"]) == (1, "acked")
    assert fields["duration_ms"] >= 0
    assert f"id={fields['id']}" in record.getMessage()
    after = (
        sample("broadcaster_published_total", event=EVENT),
        sample("broadcaster_confirmed_total", event=EVENT),
        sample("broadcaster_consumed_total", event=EVENT, outcome="acked"),
    )
    assert after == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert sample("broadcaster_publish_latency_seconds_count", event=EVENT) >= 1


def test_dead_letters_are_counted_by_reason_with_bounded_labels(
    broker: Broker, daemon: Any, received: list[Any]
) -> None:
    import pika

    before = sample("broadcaster_dead_lettered_total", reason="unknown-event")
    consumer = daemon()
    broker.connection.channel().queue_bind(consumer.topology.queue, broker.exchange, "random.type.x1")
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "x", "ce-type": "random.type.x1"}
    broker.publish("random.type.x1", b"{}", pika.BasicProperties(content_type="application/json", headers=headers))
    wait_for(lambda: sample("broadcaster_dead_lettered_total", reason="unknown-event") == before + 1, "the count")
    assert sample("broadcaster_consumed_total", event="(other)", outcome="dead-lettered") >= 1
    assert sample("broadcaster_consumed_total", event="random.type.x1", outcome="dead-lettered") == 0


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider = trace._TRACER_PROVIDER  # restore afterwards: the API allows one global set
    trace._TRACER_PROVIDER = provider
    yield exporter
    trace._TRACER_PROVIDER = tracer_provider


def test_trace_context_continues_in_the_remote_receivers(spans: InMemorySpanExporter, received: list[Any]) -> None:
    tracer = trace.get_tracer("tests")
    with InMemoryBroker(), tracer.start_as_current_span("checkout") as request_span:
        logged.send(sender=None, entry=2)
    envelope = received[0]["envelope"]
    trace_id = f"{request_span.get_span_context().trace_id:032x}"
    assert envelope.traceparent.split("-")[1] == trace_id
    receive = next(s for s in spans.get_finished_spans() if s.name == f"{EVENT} receive")
    assert receive.context.trace_id == request_span.get_span_context().trace_id
    assert receive.parent is not None
    assert receive.parent.span_id == request_span.get_span_context().span_id
    assert receive.attributes["messaging.message.id"] == envelope.id


def test_no_traceparent_without_an_active_span(received: list[Any]) -> None:
    with InMemoryBroker():
        logged.send(sender=None, entry=3)
    assert received[0]["envelope"].traceparent is None
