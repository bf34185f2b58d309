"""The per-process publisher: one pika connection on its own I/O thread.

`publish()` only appends to a bounded buffer and wakes the I/O thread, so a request
never waits on the broker. The I/O thread publishes with confirms pipelined, forgets a
message once the broker acks it, and publishes it again after a nack or a lost
connection: nothing handed to the publisher is dropped while the process lives. The
process flushes at exit; a forked child (a gunicorn worker) gets a fresh publisher.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from broadcaster import connection, observability, pikacompat, signing
from broadcaster.envelope import JSON, OutboundMessage, properties_for
from broadcaster.exceptions import FlushTimeout, PublishBufferFull
from broadcaster.settings import BroadcasterSettings, get_settings, scrub

__all__ = [
    "Publisher",
    "Transport",
    "flush",
    "get_publisher",
    "is_overridden",
    "reset_publisher",
    "use_transport",
]

logger = logging.getLogger(__name__)

_DRAIN_TICK = 0.001  # seconds between drains while events keep coming
_LINGER = 0.25  # seconds the I/O thread keeps to its tick after the last event


class Transport(Protocol):
    """What the library needs from a publisher; `PikaPublisher` is the real one."""

    def publish(self, message: OutboundMessage, *, wait: bool = True) -> None:
        """Take `message`; it reaches the broker later, or is kept and retried.

        With `wait`, a full buffer makes it wait for room (PublishBufferFull after
        PUBLISH_TIMEOUT); without, the message is taken over the bound.
        """

    def ensure_room(self) -> None:
        """Wait at most PUBLISH_TIMEOUT for room for one more message, or raise PublishBufferFull."""

    def flush(self, timeout: float | None = None) -> None:
        """Block until every message taken is confirmed, or raise FlushTimeout."""

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release the connection."""

    @property
    def pending(self) -> int:
        """Messages taken and not yet confirmed by the broker."""


class Publisher:
    """Publishes OutboundMessages on a background thread with publisher confirms."""

    def __init__(self, settings: BroadcasterSettings, *, role: str = "publisher") -> None:
        """`role` names the connection for operators; only the process's "publisher" reports its buffer."""
        self._settings = settings
        self._role = role
        self._params = connection.parameters(settings, role)
        self._nodes = connection.Nodes(settings, role)
        self._node = self._nodes.all[0]  # the node of the connection being made or open
        self._signing_key = settings.signing_key
        self._user_id: str | None = getattr(self._params.credentials, "username", None)
        self._lock = threading.Lock()  # send() takes it directly: cheaper than the condition's
        self._cond = threading.Condition(self._lock)
        self._buffer: deque[OutboundMessage] = deque()
        # delivery tag -> message, ascending; an OrderedDict finds its first key in O(1)
        # where a dict steps over the slots of every key popped from the front.
        self._unconfirmed: OrderedDict[int, OutboundMessage] = OrderedDict()
        self._ioloop: IOLoop | None = None
        self._thread: threading.Thread | None = None
        self._connection: pikacompat.BatchingConnection | None = None
        self._channel: Any = None
        self._ready = False
        self._closing = False
        self._wakeup_pending = False  # a drain is due: send() need not wake the I/O thread
        self._last_event = 0.0  # when a drain last found events (monotonic)
        self._tick: Any = None  # the I/O loop's timer of the next drain
        self._next_tag = 0
        self._republishing = 0  # messages at the front of the buffer that were sent before
        self.problem: str | None = None
        """Why the broker is not taking messages, as last seen (None once a channel opened)."""
        self._unrouted_logged: dict[str, float] = {}  # event type -> when its last warning was logged
        self.unrouted = 0  # events the broker returned since this publisher started (all types)
        self.pid = os.getpid()

    # -- caller's side -------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages taken and not yet confirmed by the broker."""
        return len(self._buffer) + len(self._unconfirmed)

    def ensure_room(self) -> None:
        """Wait at most PUBLISH_TIMEOUT for room for one more message, or raise PublishBufferFull."""
        with self._cond:
            if self.pending >= self._settings.max_buffer:
                self._wait_for_room()

    def publish(self, message: OutboundMessage, *, wait: bool = True) -> None:
        """Buffer `message` for the I/O thread; with `wait`, wait at most PUBLISH_TIMEOUT for room.

        After a commit the library publishes with ``wait=False``: room was checked in
        send(), inside the transaction, and an event of a committed change is never refused.
        """
        with self._lock:
            if wait and self.pending >= self._settings.max_buffer:
                self._wait_for_room()
            self._buffer.append(message)
            wake = self._ready and not self._wakeup_pending
            self._wakeup_pending = self._wakeup_pending or wake
            ioloop = self._start()
        if wake:
            ioloop.add_callback_threadsafe(self._drain)

    def _wait_for_room(self) -> None:
        limit = self._settings.max_buffer
        if not self._cond.wait_for(lambda: self.pending < limit, self._settings.publish_timeout):
            observability.publish_failed("buffer-full")
            raise PublishBufferFull(
                f"{self.pending} events are waiting for the broker at {self._settings.redacted_broker_url} "
                f"(MAX_BUFFER={limit}) and none was confirmed within PUBLISH_TIMEOUT "
                f"({self._settings.publish_timeout:g} s); is the broker down or blocking publishers?"
            )

    def flush(self, timeout: float | None = None) -> None:
        """Block until every message taken is confirmed, or raise FlushTimeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.pending == 0, timeout):
                raise FlushTimeout(self.pending, timeout or 0.0)

    def discard_pending(self) -> int:
        """Forget every message taken and not yet confirmed; return how many. The connection stays.

        For a caller that keeps its own copy of what it published, and publishes it again
        (the outbox relay, whose rows are the source of truth): after a failed flush it
        drops the batch here rather than closing the publisher. A message already written
        may still reach the broker, and its confirm, arriving later, finds no message and
        is ignored: the caller's next attempt publishes it again (at least once).
        """
        with self._cond:
            dropped = len(self._buffer) + len(self._unconfirmed)
            self._buffer.clear()
            self._unconfirmed.clear()
            self._republishing = 0
            self._cond.notify_all()
        return dropped

    def close(self, timeout: float | None = None) -> None:
        """Flush for at most `timeout` seconds, then close the connection and the thread."""
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closing = True
                ioloop, thread = self._ioloop, self._thread
            # A closed publisher need not flush at exit; unregistered, it can be freed.
            atexit.unregister(self._close_at_exit)
            if ioloop is not None and thread is not None and thread.is_alive():
                ioloop.add_callback_threadsafe(self._shutdown)
                thread.join(timeout=5)

    def _close_at_exit(self) -> None:
        if self.pid != os.getpid() or self._closing:
            return
        try:
            self.close(self._settings.shutdown_timeout)
        except FlushTimeout as exc:
            logger.error("exiting with %d event(s) the broker never confirmed: they are lost", exc.pending)

    def _start(self) -> IOLoop:
        # Called with the lock held. The thread is a daemon so that a hung broker can never
        # keep the process alive; the atexit hook flushes before the interpreter stops it.
        if self._ioloop is None:
            self._ioloop = IOLoop()
            self._thread = threading.Thread(target=self._run, name="broadcaster-publisher", daemon=True)
            self._thread.start()
            atexit.register(self._close_at_exit)
            if self._role == "publisher":  # the relay's own batch is not the process's buffer
                observability.watch_buffer(lambda: self.pending)
        return self._ioloop

    # -- I/O thread ----------------------------------------------------------------

    def _run(self) -> None:
        assert self._ioloop is not None
        self._connect()
        try:
            self._ioloop.start()
        finally:
            self._ioloop.close()  # its poller and wake-up sockets: a closed publisher holds no descriptor

    def _connect(self) -> None:
        self._node = self._nodes.next()
        self._connection = pikacompat.BatchingConnection(
            self._node.params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_open(self, conn: Any) -> None:
        if self._closing:  # close() came while the connection was opening
            conn.close()
            return
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self.problem = None
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm)
        channel.add_on_return_callback(self._on_return)
        channel.exchange_declare(
            exchange=self._settings.exchange,
            exchange_type="topic",
            durable=True,
            arguments=self._settings.exchange_arguments or None,
            callback=self._on_declared,
        )

    def _on_declared(self, _frame: object) -> None:
        with self._cond:
            self._ready, self._next_tag = True, 0
        self._nodes.connected(self._node)  # logs "publisher connected to <node>"
        self._drain()

    def _on_tick(self) -> None:
        self._tick = None  # fired: there is nothing left to cancel
        self._drain()

    def _drain(self) -> None:
        if self._tick is not None and self._ioloop is not None:
            self._ioloop.remove_timeout(self._tick)  # one chain of ticks, however the drain came
            self._tick = None
        with self._cond:
            # A wake-up queued before the channel began closing must leave the buffer alone.
            if not self._ready or self._channel is None or not self._channel.is_open:
                self._wakeup_pending = False
                return
            batch = list(self._buffer)
            self._buffer.clear()
            fresh = batch[self._republishing :]
            self._republishing = 0
            # While events keep coming, and for a while after, this thread drains on a short
            # tick and send() does not wake it: waking a sleeping thread costs the caller a
            # system call and often the GIL, 10-30 us on this machine.
            now = time.monotonic()
            self._last_event = now if batch else self._last_event
            self._wakeup_pending = now - self._last_event < _LINGER
            for message in batch:
                self._next_tag += 1
                self._unconfirmed[self._next_tag] = message
        observability.published([message.type for message in fresh])
        assert self._connection is not None  # a channel is open on it
        with self._connection.batched():
            published = self._publish_all(batch)
        if not published:
            self._close_connection()  # the batch is in _unconfirmed already: closing hands it back
            return
        if self._wakeup_pending and self._ioloop is not None:
            self._tick = self._ioloop.call_later(_DRAIN_TICK, self._on_tick)

    def _publish_all(self, batch: list[OutboundMessage]) -> bool:
        exchange = self._settings.exchange
        for message in batch:
            headers = message.envelope.headers()
            if self._signing_key is not None:
                signing.sign(headers, JSON, message.body, self._signing_key)
            properties = properties_for(message.envelope, user_id=self._user_id, headers=headers)
            try:
                # mandatory: an event no queue takes comes back (_on_return) instead of vanishing.
                self._channel.basic_publish(exchange, message.routing_key, message.body, properties, True)
            except pika.exceptions.AMQPError as exc:
                self.problem = f"could not publish: {self._scrubbed(exc)}"
                logger.warning("publisher could not publish (%s); reconnecting", connection.describe(exc))
                return False
        return True

    def _on_return(self, _channel: object, method: Any, properties: Any, _body: bytes) -> None:
        """Count and report an event no queue took; the broker still acks it afterwards.

        The message is not published again: nothing would take it now either. It is kept
        only when UNROUTED_QUEUE is set, in which case the broker never returns it.
        """
        event = str(getattr(properties, "type", None) or method.routing_key)
        self.unrouted += 1
        observability.unrouted(event)
        now = time.monotonic()
        last = self._unrouted_logged.get(event)
        if last is None or now - last >= self._settings.unrouted_log_interval:
            self._unrouted_logged[event] = now
            logger.warning(
                "event %s (routing key %r) reached no queue on exchange %r and is lost: no service subscribes "
                "to it yet (run broadcaster_topology --apply at deploy, or set UNROUTED_QUEUE to keep such "
                "events); counted in broadcaster_unrouted_total, logged once per %g s per event type",
                event,
                method.routing_key,
                self._settings.exchange,
                self._settings.unrouted_log_interval,
            )

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, Basic.Nack)
        with self._cond:
            done = self._take_confirmed(method.delivery_tag, method.multiple)
            if nacked:
                logger.warning("broker nacked %d event(s); publishing them again", len(done))
                self._requeue(done)
            self._cond.notify_all()
        if nacked:
            observability.publish_failed("nack", len(done))
        else:
            observability.confirmed([message.envelope for message in done])
        if nacked:
            # Publish again on a fresh connection, not on this channel: a channel whose queue
            # lost its leader in a cluster can go on nacking everything it is given (seen on
            # RabbitMQ 3.10 with quorum queues), while a new channel is served at once.
            self._close_connection()

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

    def _on_channel_closed(self, _channel: object, reason: Exception) -> None:
        if not self._closing:
            self.problem = f"the broker closed the channel: {self._scrubbed(reason)}"
            logger.warning("publisher channel closed: %s", reason)
        self._close_connection()

    def _close_connection(self) -> None:
        with self._cond:
            self._ready = False
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _scrubbed(self, error: BaseException | str) -> str:
        # Kept on the outbox row and shown in the admin: never with the broker password.
        return scrub(connection.describe(error), self._settings.broker_url)

    def _on_open_error(self, _conn: object, error: str | Exception) -> None:
        self.problem = f"cannot connect to {self._node.label}: {self._scrubbed(error)}"
        logger.warning("publisher cannot connect to %s: %s", self._node.label, connection.describe(error))
        self._schedule_reconnect()

    def _on_closed(self, _conn: object, reason: BaseException) -> None:
        with self._cond:
            self._ready = False
            self._requeue(self._unconfirmed.values())
            self._unconfirmed.clear()
            closing = self._closing
        if closing:
            assert self._ioloop is not None
            self._ioloop.stop()
            return
        logger.warning("publisher lost its connection (%s); %d event(s) kept for later", reason, self.pending)
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        assert self._ioloop is not None
        if self._closing:
            self._ioloop.stop()
            return
        # The next node at once; the back-off only once every node failed in turn.
        self._ioloop.call_later(self._nodes.failed(), self._connect)

    def _shutdown(self) -> None:
        assert self._ioloop is not None
        conn = self._connection
        if conn is None or conn.is_closed:
            self._ioloop.stop()
        elif conn.is_open:
            conn.close()  # _on_closed stops the loop
        # Still opening: pika cannot abort that cleanly (its workflow callback then fails an
        # assertion on the I/O thread); _on_open or _on_open_error ends it instead.


_lock = threading.Lock()
_publisher: Publisher | None = None
_override: Transport | None = None  # set by use_transport(): the test kit's in-memory transport


def get_publisher() -> Transport:
    """The publisher of this process, made on first use and again after fork()."""
    if _override is not None:
        return _override
    return _pika_publisher()


def _pika_publisher() -> Publisher:
    global _publisher  # noqa: PLW0603 - the process-wide publisher
    publisher = _publisher
    if publisher is None:  # also in a fork()ed child: _forget_after_fork cleared it
        with _lock:
            if _publisher is None:
                _publisher = Publisher(get_settings())
            publisher = _publisher
    return publisher


def flush(timeout: float | None = None) -> None:
    """Block until every event handed to this process's publisher is confirmed, or raise."""
    if _override is not None:
        _override.flush(timeout)
    elif _publisher is not None and _publisher.pid == os.getpid():
        _publisher.flush(timeout)


def is_overridden() -> bool:
    """Whether events go to a transport installed by use_transport() (tests)."""
    return _override is not None


@contextmanager
def use_transport(transport: Transport) -> Iterator[Transport]:
    """Send this process's events to `transport` instead of the broker within the block."""
    global _override  # noqa: PLW0603
    previous, _override = _override, transport
    try:
        yield transport
    finally:
        _override = previous


def reset_publisher(timeout: float | None = None, **_: object) -> None:
    """Close this process's publisher (flushing for `timeout`); the next event makes a new one."""
    global _publisher
    with _lock:
        publisher, _publisher = _publisher, None
    if publisher is not None and publisher.pid == os.getpid():
        publisher.close(timeout)


def _forget_after_fork() -> None:
    # The child must not touch the parent's socket or republish the parent's buffer.
    global _publisher, _lock  # noqa: PLW0603
    _publisher = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
