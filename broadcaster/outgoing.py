"""What a publisher holds: the buffer, the unconfirmed window and their order. No I/O.

`Outgoing` is the bookkeeping of `publisher.Publisher`, kept apart from pika so that a
unit test drives it without a broker. Callers `put()` messages; the I/O thread `take()`s
each batch, numbering its messages with the channel's delivery tags, and hands the
broker's acks and nacks to `confirm()`. A nacked message, and every unconfirmed one when
the connection is `lost()`, goes back to the front of the buffer in its original order,
ahead of newer messages. `flush()` waits until nothing is pending.

The I/O thread drains on a short tick while events keep coming and for `LINGER` seconds
after the last one; meanwhile `put()` does not ask for a wake-up, because waking a
sleeping thread costs the caller a system call and often the GIL.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from broadcaster import observability
from broadcaster.envelope import OutboundMessage
from broadcaster.exceptions import FlushTimeout, PublishBufferFull

__all__ = ["LINGER", "Batch", "Outgoing"]

LINGER = 0.25  # seconds the I/O thread keeps to its tick after the last event


@dataclass(frozen=True, slots=True)
class Batch:
    """What one drain writes to the channel."""

    messages: list[OutboundMessage]
    """Every message of the drain, in publishing order (now in the unconfirmed window)."""
    fresh: list[OutboundMessage]
    """The messages published for the first time (the others were nacked or lost before)."""
    tick: bool
    """Whether the I/O thread drains again on its tick, rather than when woken."""


class Outgoing:
    """Messages taken and not yet confirmed: a bounded buffer, then an unconfirmed window."""

    def __init__(self, max_buffer: int, publish_timeout: float, broker: str = "the broker") -> None:
        """`broker` names the broker (its URL, redacted) in the errors of a full buffer."""
        self.max_buffer = max_buffer
        self.publish_timeout = publish_timeout
        self._broker = broker
        self._lock = threading.Lock()  # put() takes it directly: cheaper than the condition's
        self._cond = threading.Condition(self._lock)
        self._buffer: deque[OutboundMessage] = deque()
        # delivery tag -> message, ascending; an OrderedDict finds its first key in O(1)
        # where a dict steps over the slots of every key popped from the front.
        self._unconfirmed: OrderedDict[int, OutboundMessage] = OrderedDict()
        self._republishing = 0  # messages at the front of the buffer that were sent before
        self._next_tag = 0
        self._ready = False  # a channel takes publishes: take() hands out batches
        self._ticking = False  # a drain is due: put() need not ask for a wake-up
        self._last_event = 0.0  # when a drain last found messages (monotonic seconds)

    # -- callers -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages taken and not yet confirmed by the broker."""
        return len(self._buffer) + len(self._unconfirmed)

    def put(self, message: OutboundMessage, *, wait: bool = True) -> bool:
        """Take `message`; return whether the I/O thread must be woken to drain it.

        With `wait`, a full buffer makes it wait at most `publish_timeout` for room, then
        raise PublishBufferFull; without, the message is taken over the bound.
        """
        with self._lock:
            if wait and len(self._buffer) + len(self._unconfirmed) >= self.max_buffer:
                self._wait_for_room()
            self._buffer.append(message)
            if self._ready and not self._ticking:
                self._ticking = True
                return True
            return False

    def ensure_room(self) -> None:
        """Wait at most `publish_timeout` for room for one more message, or raise PublishBufferFull."""
        with self._cond:
            if self.pending >= self.max_buffer:
                self._wait_for_room()

    def _wait_for_room(self) -> None:
        # Called with the lock held.
        limit = self.max_buffer
        if not self._cond.wait_for(lambda: self.pending < limit, self.publish_timeout):
            observability.publish_failed("buffer-full")
            raise PublishBufferFull(
                f"{self.pending} events are waiting for the broker at {self._broker} "
                f"(MAX_BUFFER={limit}) and none was confirmed within PUBLISH_TIMEOUT "
                f"({self.publish_timeout:g} s); is the broker down or blocking publishers?"
            )

    def flush(self, timeout: float | None = None) -> None:
        """Block until every message taken is confirmed, or raise FlushTimeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.pending == 0, timeout):
                raise FlushTimeout(self.pending, timeout or 0.0)

    def discard(self) -> int:
        """Forget every message taken and not yet confirmed; return how many.

        A confirm that arrives later for one of them finds no message and is ignored.
        """
        with self._cond:
            dropped = self.pending
            self._buffer.clear()
            self._unconfirmed.clear()
            self._republishing = 0
            self._cond.notify_all()
        return dropped

    # -- the I/O thread ------------------------------------------------------------

    def connected(self) -> None:
        """A fresh channel is ready: its delivery tags start again at 1."""
        with self._cond:
            self._ready, self._next_tag = True, 0

    def paused(self) -> None:
        """The channel is closing: hand out no batch until `connected()`."""
        with self._cond:
            self._ready = False

    def lost(self) -> None:
        """The connection is gone: every unconfirmed message goes back ahead of the buffer."""
        with self._cond:
            self._ready = False
            self._requeue(self._unconfirmed.values())
            self._unconfirmed.clear()

    def take(self, now: float, *, channel_open: bool = True) -> Batch | None:
        """The whole buffer as the next batch, now unconfirmed; None while no channel is ready.

        `now` is the monotonic clock: the I/O thread keeps to its tick for LINGER seconds
        after the last batch that had messages. `channel_open` False (a wake-up that found
        the channel closing) hands out nothing, as before `connected()`.
        """
        with self._lock:
            if not (self._ready and channel_open):
                self._ticking = False  # the next put() asks for a wake-up; connected() drains anyway
                return None
            messages = list(self._buffer)
            self._buffer.clear()
            fresh = messages[self._republishing :]
            self._republishing = 0
            if messages:
                self._last_event = now
            self._ticking = now - self._last_event < LINGER
            unconfirmed, tag = self._unconfirmed, self._next_tag
            for message in messages:
                tag += 1
                unconfirmed[tag] = message
            self._next_tag = tag
            return Batch(messages, fresh, self._ticking)

    def confirm(self, tag: int, multiple: bool, *, nacked: bool = False) -> list[OutboundMessage]:
        """The broker's ack (or nack) of `tag` (and, with `multiple`, every lower tag): the messages.

        Acked messages are forgotten; nacked ones go back to the front of the buffer, in
        their order. A tag of no message taken (one discarded) is ignored.
        """
        with self._cond:
            done = self._take_confirmed(tag, multiple)
            if nacked:
                self._requeue(done)
            self._cond.notify_all()
        return done

    def _take_confirmed(self, tag: int, multiple: bool) -> list[OutboundMessage]:
        if not multiple:
            message = self._unconfirmed.pop(tag, None)
            return [message] if message is not None else []
        done = []
        while self._unconfirmed:
            first, message = self._unconfirmed.popitem(last=False)
            if first > tag:
                self._unconfirmed[first] = message
                self._unconfirmed.move_to_end(first, last=False)
                break
            done.append(message)
        return done

    def _requeue(self, messages: Iterable[OutboundMessage]) -> None:
        # Called with the lock held; keeps the original order ahead of newer messages.
        messages = list(messages)
        self._buffer.extendleft(reversed(messages))
        self._republishing += len(messages)
