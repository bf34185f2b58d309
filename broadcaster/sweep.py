"""Replay and purge: one sweep over a dead-letter (or unrouted) queue that acts on each match.

A sweep walks the queue as `broadcaster.deadletters` reads it (``basic_get``, no ack, at
most the messages it held when the walk began). Each message that matches is sent on (a
replay: to the service queue, or to EXCHANGE for an unrouted event) or not (a purge),
then acked, which removes it; every other message goes back at the end. A copy is
acked only once the broker confirmed it: a crash in between leaves a duplicate, never a
loss. The first copy the broker refuses stops the sweep with that message and the rest
still in the queue.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from broadcaster.deadletters import (
    EVERYTHING,
    Held,
    Match,
    count,
    describe_safely,
    event_type,
    release,
    wait_for_requeued,
    walk,
)
from broadcaster.exceptions import PublishError, Unroutable
from broadcaster.failures import replay_properties
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Partitions

__all__ = ["PROGRESS_EVERY", "Progress", "Sweep", "Tally", "partition_exchanges", "replay_properties"]

PROGRESS_EVERY = 1000


@dataclass(frozen=True, slots=True)
class Tally:
    """What a replay or purge did, or has done so far (progress)."""

    queue: str
    scanned: int
    """Dead letters looked at."""
    done: int
    """Dead letters replayed or purged: matching ones, up to the limit."""
    left: int | None = None
    """Messages in the dead-letter queue afterwards (None while still running)."""


Progress = Callable[[Tally], None]
_Send = Callable[[pika.BasicProperties, bytes], None]


@dataclass(frozen=True, slots=True)
class Sweep:
    """The dead letters of `queue` that `match`, up to `limit`, for a replay or a purge.

    `channel` comes from `broadcaster.deadletters.connect()` (confirm mode), connected as
    the service's broker user with the service's `settings`; `progress` is called every
    PROGRESS_EVERY messages looked at. Each action raises Unroutable if no queue takes a
    copy and PublishError if the broker nacks one, after handing back every dead letter
    not yet acted on.
    """

    channel: Any
    queue: str
    settings: BroadcasterSettings
    match: Match = EVERYTHING
    limit: int | None = None
    progress: Progress | None = None

    def replay(self, target: str, *, exchange: str = "", ordered: Mapping[str, str] | None = None) -> Tally:
        """Move the matching dead letters back to the service queue `target`, from attempt 1.

        Each copy keeps the body, the properties and the ``ce-`` headers (so the envelope
        id is unchanged) and loses the failure headers. Copies go through `exchange` (the
        service's requeue exchange; the default exchange if empty) with `target` as
        routing key, carrying the service's broker user as user_id and sealed
        (`broadcaster.failures.replay_properties`), so the daemon believes the original
        publisher they carry and REQUIRE_USER_ID still holds. `ordered` maps the events of
        ordered subscriptions to their partition exchange (`partition_exchanges`): such a
        copy goes back to the partition of its key, not to the service queue.
        """
        count(self.channel, target)  # fail before touching anything if the service queue is missing
        partitioned = ordered or {}

        def send(properties: pika.BasicProperties, body: bytes) -> None:
            sealed = replay_properties(properties, body, self.settings)
            event = event_type(properties)
            if isinstance(event, str) and event in partitioned:
                self.channel.basic_publish(partitioned[event], event, body, sealed, mandatory=True)
            else:
                self.channel.basic_publish(exchange, target, body, sealed, mandatory=True)

        return self._run(send, f"replay to queue {target!r}")

    def replay_unrouted(self, exchange: str) -> Tally:
        """Publish the matching events parked in UNROUTED_QUEUE again to `exchange`, by event type.

        Each copy is the event as first published (body, properties, headers), with the
        event type (``ce-type``) as routing key, so it reaches every queue bound for it
        now. Its ``user_id`` is kept when it is this service's broker user, else replaced
        by it (the broker refuses any other): a consumer with REQUIRE_USER_ID then refuses
        such a copy, so replay the events of another service with that service's settings.
        An event still bound nowhere goes back to the queue through the alternate
        exchange (the walk stops before reaching it again).
        """
        user = self.settings.broker_user

        def send(properties: pika.BasicProperties, body: bytes) -> None:
            event = event_type(properties)
            if not isinstance(event, str) or not event:
                raise Unroutable(f"a message in {self.queue!r} has no event type (ce-type) to route it by; it stays")
            if properties.user_id not in (None, user):
                properties = copy.copy(properties)
                properties.user_id = user
            self.channel.basic_publish(exchange, event, body, properties, mandatory=True)

        return self._run(send, f"replay to exchange {exchange!r}")

    def purge(self, *, upto: int | None = None) -> Tally:
        """Delete the matching dead letters, looking at no more than `upto` messages.

        Pass as `upto` the count the operator confirmed, so that dead letters arriving
        after the confirmation are not deleted with the others.
        """
        return self._run(None, "purge", upto)

    def _run(self, send: _Send | None, what: str, upto: int | None = None) -> Tally:
        total = count(self.channel, self.queue)
        budget = total if upto is None else min(upto, total)
        scanned = done = 0
        try:
            for held in walk(self.channel, self.queue, budget):
                scanned += 1
                letter = describe_safely(held, self.settings, None)
                if self.match(letter):
                    stopped = f"{what} stopped after {done} dead letter(s), at {letter.id}; it and the rest stay"
                    _act(self.channel, held, send, f"{stopped} in {self.queue!r}")
                    done += 1
                if self.progress is not None and scanned % PROGRESS_EVERY == 0:
                    self.progress(Tally(self.queue, scanned, done))
                if self.limit is not None and done >= self.limit:
                    break
        finally:
            release(self.channel)
        return Tally(self.queue, scanned, done, wait_for_requeued(self.channel, self.queue, total - done))


def partition_exchanges(settings: BroadcasterSettings) -> dict[str, str]:
    """The partition exchange of each ordered subscription: a replayed event returns to its partition."""
    exchange = Partitions.for_settings(settings).exchange
    return {event: exchange for event, sub in subscriptions().items() if sub.ordered}


def _act(channel: Any, held: Held, send: _Send | None, stopped: str) -> None:
    if send is not None:
        try:
            send(held.properties, held.body)  # returns once the broker confirmed the copy
        except pika.exceptions.UnroutableError as exc:
            raise Unroutable(f"{stopped}: no queue took the copy (UnroutableError)") from exc
        except pika.exceptions.NackError as exc:
            raise PublishError(f"{stopped}: the broker refused the copy (NackError)") from exc
    channel.basic_ack(held.tag)
