"""What operators see: one log line per handled event, Prometheus metrics, trace context.

- Logs: ``broadcaster.events`` logs each handled event at INFO with `event`, `id`,
  `source`, `attempt`, `outcome` and `duration_ms`, in the text and as `extra` fields
  for JSON formatters.
- Metrics (extra ``prometheus``): counters, gauges and histograms below, served with
  the probes by ``consume_signals --metrics-port`` / ``relay_outbox --metrics-port``
  (``broadcaster.probes``).
- Traces (extra ``otel``): the trace context of the code that fired the signal travels
  in ``ce-traceparent``, and the remote receivers run in a span that continues it.

Without the optional packages every hook here is a cheap no-op.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broadcaster.envelope import Envelope

__all__ = [
    "confirmed",
    "current_traceparent",
    "handled",
    "publish_failed",
    "published",
    "receiving",
    "set_outbox_backlog",
    "set_paused",
    "unrouted",
    "watch_buffer",
]

events_logger = logging.getLogger("broadcaster.events")


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


prometheus = _optional("prometheus_client")
trace = _optional("opentelemetry.trace")
propagate = _optional("opentelemetry.propagate")
otel_context = _optional("opentelemetry.context")


class _Metrics:
    """The Prometheus metrics, made once per process when prometheus_client is there."""

    def __init__(self) -> None:
        assert prometheus is not None
        self.published = prometheus.Counter(
            "broadcaster_published", "Events sent to the broker (first attempts, not re-publications)", ["event"]
        )
        self.confirmed = prometheus.Counter("broadcaster_confirmed", "Events confirmed by the broker", ["event"])
        self.failed = prometheus.Counter(
            "broadcaster_publish_failed", "Events nacked by the broker or refused by a full buffer", ["reason"]
        )
        self.publish_latency = prometheus.Histogram(
            "broadcaster_publish_latency_seconds", "From send() to the broker's confirm", ["event"]
        )
        self.consumed = prometheus.Counter(
            "broadcaster_consumed", "Messages handled by the daemon", ["event", "outcome"]
        )
        self.dead_lettered = prometheus.Counter("broadcaster_dead_lettered", "Messages dead-lettered", ["reason"])
        self.handling = prometheus.Histogram(
            "broadcaster_handling_seconds", "Time to decode, validate and run the receivers", ["event"]
        )
        self.unrouted = prometheus.Counter(
            "broadcaster_unrouted", "Events returned by the broker because no queue was bound for them", ["event"]
        )
        self.buffer = prometheus.Gauge("broadcaster_publisher_buffer", "Events not yet confirmed by the broker")
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.outbox_backlog = prometheus.Gauge("broadcaster_outbox_backlog", "Outbox rows not yet published")
        self.paused = prometheus.Gauge(
            "broadcaster_paused", "1 while the daemon does not consume (kill switch or operator)"
        )
        self.pauses = prometheus.Counter("broadcaster_pauses", "Times the daemon stopped consuming", ["reason"])

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: labels() costs more than inc() itself."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


_metrics: _Metrics | None = None
_metrics_lock = threading.Lock()


def _get_metrics() -> _Metrics | None:
    global _metrics  # noqa: PLW0603 - registered once per process with prometheus_client
    if prometheus is None:
        return None
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


def published(events: list[str]) -> None:
    """The publisher sent these events to the broker for the first time (on its I/O thread)."""
    if events and (metrics := _get_metrics()):
        for event, count in Counter(events).items():
            metrics.child(metrics.published, event).inc(count)


def confirmed(envelopes: list[Envelope]) -> None:
    """The broker confirmed these events (called on the publisher thread)."""
    if not envelopes or (metrics := _get_metrics()) is None:
        return
    now = time.time()
    for envelope in envelopes:
        metrics.child(metrics.confirmed, envelope.type).inc()
        metrics.child(metrics.publish_latency, envelope.type).observe(max(0.0, now - envelope.time.timestamp()))


def publish_failed(reason: str, count: int = 1) -> None:
    """`count` events were nacked (reason ``nack``) or refused (``buffer-full``)."""
    if metrics := _get_metrics():
        metrics.failed.labels(reason).inc(count)


def unrouted(event: str) -> None:
    """The broker returned an event of type `event`: no queue (and no UNROUTED_QUEUE) took it."""
    if metrics := _get_metrics():
        metrics.child(metrics.unrouted, event).inc()


def watch_buffer(pending: Callable[[], int]) -> None:
    """Report the publisher's buffer size at every scrape."""
    if metrics := _get_metrics():
        metrics.buffer.set_function(pending)


def set_outbox_backlog(rows: int) -> None:
    """Report the number of unpublished outbox rows."""
    if metrics := _get_metrics():
        metrics.outbox_backlog.set(rows)


def set_paused(paused: bool, reason: str | None = None) -> None:
    """The daemon stopped consuming (`reason`: tripped or operator) or started again."""
    if metrics := _get_metrics():
        metrics.paused.set(1 if paused else 0)
        if paused and reason:
            metrics.child(metrics.pauses, reason).inc()


def handled(envelope: Envelope | None, event: str, outcome: str, reason: str, seconds: float) -> None:
    """Log and count one message the daemon finished with."""
    level = logging.INFO if outcome == "acked" else logging.WARNING
    if events_logger.isEnabledFor(level):
        fields = {
            "event": event,
            "id": envelope.id if envelope else None,
            "source": envelope.source if envelope else None,
            "attempt": envelope.attempt if envelope else None,
            "outcome": outcome,
            "reason": reason or None,
            "duration_ms": round(seconds * 1000, 3),
        }
        text = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        events_logger.log(level, "handled %s", text, extra={"broadcaster": fields})
    if metrics := _get_metrics():
        metrics.child(metrics.consumed, event, outcome).inc()
        metrics.child(metrics.handling, event).observe(seconds)
        if outcome == "dead-lettered":
            metrics.child(metrics.dead_lettered, reason).inc()


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to send as ``ce-traceparent``."""
    if trace is None or propagate is None or otel_context is None or not otel_context.get_current():
        return None  # nothing attached to the context: no span (a quarter of the full check's cost)
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def receiving(envelope: Envelope) -> AbstractContextManager[None]:
    """Run the receivers of a remote event in a span continuing its sender's trace."""
    if trace is None or propagate is None or otel_context is None or not _tracing_configured():
        return _NO_SPAN
    return _receive_span(envelope)


_NO_SPAN = nullcontext()  # reusable: what receiving() is without tracing, for every event


@contextmanager
def _receive_span(envelope: Envelope) -> Iterator[None]:
    assert trace is not None  # checked by receiving()
    assert propagate is not None
    assert otel_context is not None
    parent = propagate.extract({"traceparent": envelope.traceparent} if envelope.traceparent else {})
    token = otel_context.attach(parent)
    try:
        tracer = trace.get_tracer("broadcaster")
        with tracer.start_as_current_span(
            f"{envelope.type} receive",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": envelope.type,
                "messaging.message.id": envelope.id,
                "cloudevents.event_source": envelope.source,
            },
        ):
            yield
    finally:
        otel_context.detach(token)


def _tracing_configured() -> bool:
    # With the API alone (no SDK, or none set up) every span is a no-op, yet building one
    # cost more than the rest of handling an event: skip it.
    assert trace is not None  # checked by the caller
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
