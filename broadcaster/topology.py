"""Names and declarations of the exchange and the queues of one service.

| object            | name                        | purpose                                   |
| ----------------- | --------------------------- | ----------------------------------------- |
| exchange          | EXCHANGE                    | durable topic; routing key = event type   |
| service queue     | QUEUE (default SERVICE_NAME) | one binding per subscribed event          |
| retry queues      | <queue>.retry.<ms>ms        | TTL, then dead-lettered back to the queue |
| dead-letter queue | <queue>.dead-letter         | what can never succeed, with the reason   |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broadcaster.settings import BroadcasterSettings

__all__ = ["Topology"]

# The broker dead-letters a message to the default exchange with this routing key;
# a per-queue target lets one declaration serve both retry and dead-letter routing.
_DEFAULT_EXCHANGE = ""
_QUORUM_DELIVERY_LIMIT = 50


@dataclass(frozen=True)
class Topology:
    """The broker objects one service uses."""

    exchange: str
    queue: str
    queue_type: str
    retry_delays: tuple[float, ...]

    @classmethod
    def for_settings(cls, settings: BroadcasterSettings) -> Topology:
        """The topology BROADCASTER describes."""
        return cls(settings.exchange, settings.queue_name, settings.queue_type, settings.retry_delays)

    @property
    def dead_letter_queue(self) -> str:
        """Where messages that can never succeed are kept, with the reason in headers."""
        return f"{self.queue}.dead-letter"

    @property
    def retry_queues(self) -> list[str]:
        """One delay queue per RETRY_DELAYS entry, in order."""
        return [f"{self.queue}.retry.{round(delay * 1000)}ms" for delay in self.retry_delays]

    def declare(self, channel: Any, events: Iterable[str]) -> None:
        """Declare everything (idempotently) on a blocking channel and bind `events`."""
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True, arguments=self._arguments())
        backstop: dict[str, Any] = {
            "x-dead-letter-exchange": _DEFAULT_EXCHANGE,
            "x-dead-letter-routing-key": self.dead_letter_queue,
        }
        if self.queue_type == "quorum":
            # A receiver that crashes the process on every delivery never reaches our
            # retry logic; the broker's delivery limit then dead-letters it.
            backstop["x-delivery-limit"] = _QUORUM_DELIVERY_LIMIT
        channel.queue_declare(self.queue, durable=True, arguments=self._arguments(backstop))
        for event in sorted(set(events)):
            channel.queue_bind(self.queue, self.exchange, routing_key=event)
        for delay, name in zip(self.retry_delays, self.retry_queues, strict=True):
            back = {
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": _DEFAULT_EXCHANGE,
                "x-dead-letter-routing-key": self.queue,
            }
            channel.queue_declare(name, durable=True, arguments=self._arguments(back))

    def _arguments(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type, **(extra or {})}
