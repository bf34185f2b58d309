"""The pika side of settling: carries out on the channel what `broadcaster.settlement` decided.

`settle()` is pure: it says ack, requeue, or copy to which queue. This module does it on
the consumer's channel, on the connection's thread: the retry and dead-letter copies
(sealed, and cut to what the broker takes), the nacks, and the acks, batched by
`broadcaster.scheduler.AckWindow` into one frame per round where it can.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from broadcaster import failures, properties
from broadcaster.dispatch import Outcome
from broadcaster.scheduler import AckWindow
from broadcaster.settings import BroadcasterSettings
from broadcaster.settlement import Settlement, Verdict, settle
from broadcaster.workers import Delivery, Finished, describe_delivery

__all__ = ["Executor"]

logger = logging.getLogger("broadcaster.consumer")

_FAILURE_RESERVE = 4096  # bytes of failure headers a copy adds (the error text is at most 1,000 characters)


class Executor:
    """Acks, requeues and copies the deliveries of one channel at a time."""

    def __init__(self, settings: BroadcasterSettings, frame_max: int) -> None:
        self.settings = settings
        self._frame_max = frame_max
        self.channel: Any = None
        self._acks = AckWindow()

    def attach(self, channel: Any) -> None:
        """A new channel: delivery tags start again, and so does the window of acks."""
        self.channel, self._acks = channel, AckWindow()

    def delivered(self, tag: int) -> None:
        self._acks.delivered(tag)

    def owns(self, delivery: Delivery) -> bool:
        """False for a delivery of a channel that is gone: the broker delivers it again."""
        return delivery.channel is self.channel and bool(delivery.channel.is_open)

    def settle(self, batch: Iterable[Finished]) -> list[tuple[Finished, Verdict]]:
        """Settle each finished delivery as `settle()` decides, then ack them; return the verdicts.

        A delivery of a channel that is gone, or abandoned by a stopping daemon, is left
        alone: the broker delivers it again.
        """
        settled: list[int] = []
        requeued: set[int] = set()
        verdicts: list[tuple[Finished, Verdict]] = []
        for finished in batch:
            delivery = finished.delivery
            if finished.abandoned or not self.owns(delivery):
                continue
            settlement = settle(
                finished.outcome, finished.attempt, delivery.topology, caused_confirmed=finished.confirmed
            )
            self.carry_out(finished, settlement)
            settled.append(delivery.tag)
            if settlement.verdict is Verdict.REQUEUED:
                requeued.add(delivery.tag)
            verdicts.append((finished, settlement.verdict))
        if settled:
            self.ack(settled, frozenset(requeued))
        return verdicts

    def carry_out(self, finished: Finished, settlement: Settlement) -> None:
        delivery = finished.delivery
        if settlement.verdict is Verdict.REQUEUED:
            delivery.channel.basic_nack(delivery.tag, requeue=True)
        elif settlement.queue is not None:
            self._copy(delivery, finished, settlement.queue)
            if settlement.verdict is Verdict.DEAD_LETTERED:
                _log_dead_letter(finished.outcome, delivery, finished.attempt)

    def ack(self, settled: list[int], already: frozenset[int]) -> None:
        """Ack `settled` (but those in `already`, nacked or requeued): one frame where the window allows."""
        acks = self._acks.settle(settled, already=already)
        if acks.up_to is not None:  # usually one frame for every message of the round
            self.channel.basic_ack(acks.up_to, multiple=True)
        for tag in acks.single:  # finished ahead of a slower one: its prefetch slot frees now
            self.channel.basic_ack(tag)

    def _copy(self, delivery: Delivery, finished: Finished, queue: str) -> None:
        # A sealed copy under our own broker user: the next delivery believes its attempt
        # count and its original publisher (broadcaster.failures), and nothing else does.
        outcome = finished.outcome
        # Headers pika cannot encode again, or that the failure headers would push past the
        # frame size, would make the broker close the connection and the message come back
        # first: the copy carries what fits, and says (sealed) what it left out.
        source, notes = properties.encodable_source(delivery.properties, self._frame_max, reserve=_FAILURE_RESERVE)
        props = failures.failure_properties(
            source,
            delivery.body,
            self.settings,
            attempt=finished.attempt,
            reason=outcome.reason,
            error=outcome.detail,
            exception=outcome.exception,
            queue=delivery.topology.queue,
            routing_key=delivery.routing_key,
            notes=notes,
        )
        props = properties.encodable(props, self._frame_max)  # the last resort; never needed so far
        delivery.channel.basic_publish(delivery.topology.requeue_exchange, queue, delivery.body, props, mandatory=True)


def _log_dead_letter(outcome: Outcome, delivery: Delivery, attempt: int) -> None:
    name, detail = describe_delivery(outcome, delivery), outcome.detail[:200]
    logger.error("dead-lettered %s after %d attempt(s): %s: %s", name, attempt, outcome.reason, detail)
