"""What happens to a delivery once its receivers ran: the consumer's policy, without I/O.

`settle()` is a pure function of the dispatch outcome, the attempt and the topology; the
daemon (`broadcaster.consumer`) carries the answer out with pika, and the test kit can
apply the same policy without a broker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from broadcaster.dispatch import Action, Outcome
from broadcaster.topology import Topology

__all__ = ["Settlement", "Verdict", "settle"]


class Verdict(enum.StrEnum):
    """How a delivery ended; the values label the ``handled`` metric and the daemon's summary."""

    ACKED = "acked"
    """The receivers ran (or the inbox had already seen the event): acknowledged."""

    RETRIED = "retried"
    """A receiver raised: a copy went to the next delay queue, then the delivery was acknowledged."""

    DEAD_LETTERED = "dead-lettered"
    """It can never succeed, or its last attempt failed: a copy went to the dead-letter queue."""

    REQUEUED = "requeued"
    """The events its receivers fired were not confirmed in time: handed back to the queue."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """The verdict on one delivery and, for a retry or a dead letter, the queue its copy goes to."""

    verdict: Verdict
    queue: str | None = None


def settle(outcome: Outcome, attempt: int, topology: Topology, *, caused_confirmed: bool = True) -> Settlement:
    """Decide what to do with a delivery whose dispatch ended in `outcome`.

    `attempt` counts deliveries to this service (1 on the first); `caused_confirmed` says
    whether the events the receivers fired are safe at the broker, which must hold before
    the delivery that caused them is acknowledged.
    """
    if outcome.action is Action.ACK:
        return Settlement(Verdict.ACKED if caused_confirmed else Verdict.REQUEUED)
    if outcome.action is Action.RETRY and 1 <= attempt <= len(topology.retry_queues):
        return Settlement(Verdict.RETRIED, topology.retry_queues[attempt - 1])
    return Settlement(Verdict.DEAD_LETTERED, topology.dead_letter_queue)
