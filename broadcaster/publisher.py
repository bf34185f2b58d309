"""The publisher: one pika connection on its own I/O thread, with publisher confirms.

`publish()` only hands a message to the `outgoing.Outgoing` bookkeeping and, when the
I/O thread rests, wakes it, so a request never waits on the broker. The I/O thread runs
the connection's state machine here: connect (node after node), open a channel with
confirms, declare the exchange, then write each batch `Outgoing` hands out in one socket
write, and report acks, nacks and lost connections back to it, which decides what is
published again and in which order. Nothing handed to the publisher is dropped while
the process lives; the process's publisher, and forks, are `transport.py`'s.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from broadcaster import connection, observability, pikacompat, signing
from broadcaster.envelope import JSON, OutboundMessage, properties_for
from broadcaster.exceptions import FlushTimeout
from broadcaster.outgoing import Outgoing
from broadcaster.settings import BroadcasterSettings

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

_DRAIN_TICK = 0.001  # seconds between drains while events keep coming


class Publisher:
    """Publishes OutboundMessages on a background thread with publisher confirms."""

    def __init__(self, settings: BroadcasterSettings, *, role: str = "publisher") -> None:
        """`role` names the connection for operators; only the process's "publisher" reports its buffer."""
        self._settings = settings
        self._role = role
        self._signing_key = settings.signing_key
        params = connection.parameters(settings, role)
        self._user_id: str | None = getattr(params.credentials, "username", None)
        self._outgoing = Outgoing(settings.max_buffer, settings.publish_timeout, settings.redacted_broker_url)
        self._start_lock = threading.Lock()
        self._ioloop: IOLoop | None = None
        self._link: _Link | None = None  # made with the I/O loop, at the first publish()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._tick: Any = None  # the I/O loop's timer of the next drain
        self._unrouted = _UnroutedLog(settings)
        self.pid = os.getpid()

    # -- caller's side -------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages taken and not yet confirmed by the broker."""
        return self._outgoing.pending

    @property
    def problem(self) -> str | None:
        """Why the broker is not taking messages, as last seen (None once a channel opened)."""
        return self._link.problem if self._link is not None else None

    @property
    def unrouted(self) -> int:
        """Events the broker returned since this publisher started (all types)."""
        return self._unrouted.count

    def ensure_room(self) -> None:
        """Wait at most PUBLISH_TIMEOUT for room for one more message, or raise PublishBufferFull."""
        self._outgoing.ensure_room()

    def publish(self, message: OutboundMessage, *, wait: bool = True) -> None:
        """Buffer `message` for the I/O thread; with `wait`, wait at most PUBLISH_TIMEOUT for room.

        After a commit the library publishes with ``wait=False``: room was checked in
        send(), inside the transaction, and an event of a committed change is never refused.
        """
        if self._outgoing.put(message, wait=wait):
            # Ready implies started: the I/O loop exists.
            self._ioloop.add_callback_threadsafe(self._drain)  # type: ignore[union-attr]
        elif self._ioloop is None:
            self._start()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every message taken is confirmed, or raise FlushTimeout."""
        self._outgoing.flush(timeout)

    def discard_pending(self) -> int:
        """Forget every message taken and not yet confirmed; return how many. The connection stays.

        For a caller that keeps its own copy of what it published, and publishes it again
        (the outbox relay, whose rows are the source of truth): after a failed flush it
        drops the batch here rather than closing the publisher. A message already written
        may still reach the broker, and its confirm, arriving later, finds no message and
        is ignored: the caller's next attempt publishes it again (at least once).
        """
        return self._outgoing.discard()

    def close(self, timeout: float | None = None) -> None:
        """Flush for at most `timeout` seconds, then close the connection and the thread."""
        try:
            self.flush(timeout)
        finally:
            with self._start_lock:
                self._closing = True
                link, thread = self._link, self._thread
            # A closed publisher need not flush at exit; unregistered, it can be freed.
            atexit.unregister(self._close_at_exit)
            if link is not None and thread is not None and thread.is_alive():
                link.shut_down()
                thread.join(timeout=5)

    def _close_at_exit(self) -> None:
        if self.pid != os.getpid() or self._closing:  # a fork()ed child leaves the parent's alone
            return
        try:
            self.close(self._settings.shutdown_timeout)
        except FlushTimeout as exc:
            logger.error("exiting with %d event(s) the broker never confirmed: they are lost", exc.pending)

    def _start(self) -> None:
        # The thread is a daemon so that a hung broker can never keep the process alive;
        # the atexit hook flushes before the interpreter stops it.
        with self._start_lock:
            if self._ioloop is not None or self._closing:
                return
            self._ioloop = IOLoop()
            self._link = _Link(self._settings, self._role, self._ioloop, self._outgoing, self)
            self._thread = threading.Thread(target=self._run, name="broadcaster-publisher", daemon=True)
            self._thread.start()
        atexit.register(self._close_at_exit)
        if self._role == "publisher":  # the relay's own batch is not the process's buffer
            observability.watch_buffer(lambda: self.pending)

    # -- I/O thread ----------------------------------------------------------------

    def _run(self) -> None:
        assert self._ioloop is not None
        assert self._link is not None
        self._link.connect()
        try:
            self._ioloop.start()
        finally:
            self._ioloop.close()  # its poller and wake-up sockets: a closed publisher holds no descriptor

    def _on_tick(self) -> None:
        self._tick = None  # fired: there is nothing left to cancel
        self._drain()

    def _drain(self) -> None:
        link, ioloop = self._link, self._ioloop
        assert link is not None
        assert ioloop is not None
        if self._tick is not None:
            ioloop.remove_timeout(self._tick)  # one chain of ticks, however the drain came
            self._tick = None
        # A wake-up queued before the channel began closing must leave the buffer alone.
        channel_open = link.channel is not None and link.channel.is_open
        batch = self._outgoing.take(time.monotonic(), channel_open=channel_open)
        if batch is None:
            return
        observability.published([message.type for message in batch.fresh])
        assert link.connection is not None  # a channel is open on it
        with link.connection.batched():
            published = self._publish_all(link, batch.messages)
        if not published:
            link.drop()  # the batch is unconfirmed already: the lost connection hands it back
            return
        if batch.tick:
            self._tick = ioloop.call_later(_DRAIN_TICK, self._on_tick)

    def _publish_all(self, link: _Link, batch: list[OutboundMessage]) -> bool:
        exchange, channel = self._settings.exchange, link.channel
        for message in batch:
            headers = message.envelope.headers()
            if self._signing_key is not None:
                signing.sign(headers, JSON, message.body, self._signing_key)
            properties = properties_for(message.envelope, user_id=self._user_id, headers=headers)
            try:
                # mandatory: an event no queue takes comes back (on_return) instead of vanishing.
                channel.basic_publish(exchange, message.routing_key, message.body, properties, True)
            except pika.exceptions.AMQPError as exc:
                link.problem = f"could not publish: {connection.describe_redacted(exc, self._settings)}"
                logger.warning("publisher could not publish (%s); reconnecting", connection.describe(exc))
                return False
        return True

    def on_ready(self) -> None:
        """A channel is ready (called by the link): publish what waits."""
        self._drain()

    def on_confirm(self, frame: Any) -> None:
        """The broker's ack or nack of one or more messages (called by the link)."""
        method = frame.method
        nacked = isinstance(method, Basic.Nack)
        done = self._outgoing.confirm(method.delivery_tag, method.multiple, nacked=nacked)
        if not nacked:
            observability.confirmed([message.envelope for message in done])
            return
        logger.warning("broker nacked %d event(s); publishing them again", len(done))
        observability.publish_failed("nack", len(done))
        # Publish again on a fresh connection, not on this channel: a channel whose queue
        # lost its leader in a cluster can go on nacking everything it is given (seen on
        # RabbitMQ 3.10 with quorum queues), while a new channel is served at once.
        assert self._link is not None
        self._link.drop()

    def on_return(self, _channel: object, method: Any, properties: Any, _body: bytes) -> None:
        """An event no queue took; the broker still acks it afterwards (see _UnroutedLog)."""
        self._unrouted.returned(str(getattr(properties, "type", None) or method.routing_key), method.routing_key)


class _Link:
    """The connection's state machine, on the I/O thread: one connection and channel, made again when lost.

    Connect (the next node at once, the back-off once every node failed in turn), open a
    channel in confirm mode, declare the exchange: then `outgoing` is connected and the
    publisher drains it. A closing channel pauses `outgoing`; a lost connection hands its
    unconfirmed messages back (`Outgoing.lost`) and the next node is tried, until
    `shut_down()`.
    """

    def __init__(
        self, settings: BroadcasterSettings, role: str, ioloop: IOLoop, outgoing: Outgoing, publisher: Publisher
    ) -> None:
        self._settings = settings
        self._nodes = connection.Nodes(settings, role)
        self._node = self._nodes.all[0]  # the node of the connection being made or open
        self._ioloop = ioloop
        self._outgoing = outgoing
        self._publisher = publisher
        self.connection: pikacompat.BatchingConnection | None = None
        self.channel: Any = None
        self.closing = False
        self.problem: str | None = None

    def connect(self) -> None:
        self._node = self._nodes.next()
        self.connection = pikacompat.BatchingConnection(
            self._node.params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=pikacompat.IOServices(self._ioloop),
        )

    def drop(self) -> None:
        """Close the connection; its unconfirmed messages are published again on the next one."""
        self._outgoing.paused()
        if self.connection is not None and self.connection.is_open:
            self.connection.close()

    def shut_down(self) -> None:
        """From any thread: close the connection for good and stop the I/O loop."""
        self.closing = True
        self._ioloop.add_callback_threadsafe(self._shutdown)

    def _on_open(self, conn: Any) -> None:
        if self.closing:  # close() came while the connection was opening
            conn.close()
            return
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self.problem = None
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._publisher.on_confirm)
        channel.add_on_return_callback(self._publisher.on_return)
        channel.exchange_declare(
            exchange=self._settings.exchange,
            exchange_type="topic",
            durable=True,
            arguments=self._settings.exchange_arguments or None,
            callback=self._on_declared,
        )

    def _on_declared(self, _frame: object) -> None:
        self._outgoing.connected()
        self._nodes.connected(self._node)  # logs "publisher connected to <node>"
        self._publisher.on_ready()

    def _on_channel_closed(self, _channel: object, reason: Exception) -> None:
        if not self.closing:
            self.problem = f"the broker closed the channel: {connection.describe_redacted(reason, self._settings)}"
            logger.warning("publisher channel closed: %s", reason)
        self.drop()

    def _on_open_error(self, _conn: object, error: str | Exception) -> None:
        self.problem = f"cannot connect to {self._node.label}: {connection.describe_redacted(error, self._settings)}"
        logger.warning("publisher cannot connect to %s: %s", self._node.label, connection.describe(error))
        self._reconnect()

    def _on_closed(self, _conn: object, reason: BaseException) -> None:
        self._outgoing.lost()
        if self.closing:
            self._ioloop.stop()
            return
        logger.warning("publisher lost its connection (%s); %d event(s) kept for later", reason, self._outgoing.pending)
        self._reconnect()

    def _reconnect(self) -> None:
        if self.closing:
            self._ioloop.stop()
            return
        # The next node at once; the back-off only once every node failed in turn.
        self._ioloop.call_later(self._nodes.failed(), self.connect)

    def _shutdown(self) -> None:
        conn = self.connection
        if conn is None or conn.is_closed:
            self._ioloop.stop()
        elif conn.is_open:
            conn.close()  # _on_closed stops the loop
        # Still opening: pika cannot abort that cleanly (its workflow callback then fails an
        # assertion on the I/O thread); _on_open or _on_open_error ends it instead.


class _UnroutedLog:
    """Counts and reports the events no queue took, one warning per event type and interval.

    Such a message is not published again: nothing would take it now either. It is kept
    only when UNROUTED_QUEUE is set, in which case the broker never returns it.
    """

    def __init__(self, settings: BroadcasterSettings) -> None:
        self._exchange = settings.exchange
        self._interval = settings.unrouted_log_interval
        self._logged: dict[str, float] = {}  # event type -> when its last warning was logged
        self.count = 0

    def returned(self, event: str, routing_key: str) -> None:
        self.count += 1
        observability.unrouted(event)
        now = time.monotonic()
        last = self._logged.get(event)
        if last is not None and now - last < self._interval:
            return
        self._logged[event] = now
        logger.warning(
            "event %s (routing key %r) reached no queue on exchange %r and is lost: no service subscribes "
            "to it yet (run broadcaster_topology --apply at deploy, or set UNROUTED_QUEUE to keep such "
            "events); counted in broadcaster_unrouted_total, logged once per %g s per event type",
            event,
            routing_key,
            self._exchange,
            self._interval,
        )
