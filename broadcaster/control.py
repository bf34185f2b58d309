"""Pausing and resuming a running daemon: the kill switch's decisions carried out with pika.

A paused daemon cancels its consumers (``basic.cancel``): its messages stay in their
queues for the other daemons, or for itself once it resumes; deliveries it holds but
has not started go back to the queue, and those whose receivers are running finish and
are settled as usual. Three things pause a daemon:

- the kill switch (`broadcaster.killswitch`), for KILL_SWITCH_COOLDOWN seconds;
- SIGUSR1, which toggles pause and resume in that process;
- ``consume_signals --pause`` / ``--resume`` from anywhere, through the broker: a fanout
  exchange ``<queue>.control`` reaches every running daemon of the service (each binds
  an exclusive queue to it), and a marker exchange ``<queue>.paused`` records the pause,
  so that a daemon that starts or reconnects while it exists stays paused too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from broadcaster import connection, observability
from broadcaster.exceptions import BrokerRefused, BrokerUnavailable
from broadcaster.killswitch import KillSwitch, Pause
from broadcaster.settings import BroadcasterSettings

__all__ = ["Control", "send_command"]

logger = logging.getLogger("broadcaster.consumer")

PAUSE, RESUME = "pause", "resume"


def control_exchange(settings: BroadcasterSettings) -> str:
    """The fanout exchange that carries operator commands to every daemon of the service."""
    return f"{settings.queue_name}.control"


def paused_marker(settings: BroadcasterSettings) -> str:
    """The exchange whose existence says an operator paused the service's daemons."""
    return f"{settings.queue_name}.paused"


class Control:
    """Starts and cancels a daemon's consumers as its kill switch and its operators decide.

    Every method runs on the connection's thread, except `request_toggle()`, which a
    signal handler may call at any moment: it only leaves a note for the next `apply()`.
    """

    def __init__(
        self,
        settings: BroadcasterSettings,
        switch: KillSwitch,
        start: Callable[[Any], list[str]],
        returned: Callable[[], None],
    ) -> None:
        self._settings = settings
        self.switch = switch
        self._start = start  # basic_consume on every queue of the daemon; returns the consumer tags
        self._returned = returned  # hand the deliveries not started back to the broker
        self._channel: Any = None
        self._tags: list[str] = []
        self._commands: list[str] = []
        self._toggle = False
        self._held_remotely = False
        self._was_paused: bool | None = None
        # Its exclusive queue's name: per daemon, whatever INSTANCE_ID says, and unique even
        # for two consumers in one process (tests do that); host and pid say whose it is.
        self._name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    @property
    def consuming(self) -> bool:
        """Whether the daemon's consumers are active now."""
        return bool(self._tags)

    def attach(self, conn: pika.BlockingConnection, channel: Any) -> None:
        """On a new connection: read the recorded pause, listen for commands, consume unless paused."""
        self._channel, self._tags = channel, []
        # Listen first, then read the marker: a --pause that marks after the read sends
        # its command after the binding too, so this daemon sees one or the other.
        queue = f"{control_exchange(self._settings)}.{self._name}"
        channel.exchange_declare(control_exchange(self._settings), exchange_type="fanout", durable=True)
        channel.queue_declare(queue, exclusive=True, auto_delete=True)
        channel.queue_bind(queue, control_exchange(self._settings))
        if _exists(conn, paused_marker(self._settings)):
            self._commands.append(PAUSE)
        elif self._held_remotely:
            self._commands.append(RESUME)  # resumed while this daemon was away
        channel.basic_consume(queue, self._on_command, auto_ack=True)
        self.apply()

    def detach(self) -> None:
        """The connection is gone, and its consumers with it."""
        self._channel, self._tags = None, []

    def cancel(self) -> None:
        """Stop consuming for good: the daemon is stopping."""
        for tag in self._tags:
            self._channel.basic_cancel(tag)
        self._tags = []

    def record(self, failed: bool) -> None:
        """One event finished (`failed`: a receiver raised); pause if that trips the switch."""
        if self.switch.record(failed):
            failures, events = self.switch.tripped_on
            limits = self.switch.limits
            logger.error(
                "consume_signals: kill switch tripped: %d of the last %d events failed within %g s "
                "(KILL_SWITCH_RATIO %g); pausing for %g s, messages stay queued",
                failures,
                events,
                limits.window,
                limits.ratio,
                limits.cooldown,
            )

    def request_toggle(self) -> None:
        """Pause or resume at the next turn of the loop (SIGUSR1; safe from a signal handler)."""
        self._toggle = True

    def apply(self) -> None:
        """Take in the commands received, end an expired cool-down, then consume or not accordingly."""
        self._take_commands()
        if self.switch.cooled_down():
            logger.warning("consume_signals: kill switch cool-down over; consuming again")
        paused = self.switch.paused
        if self._channel is None:
            return
        if paused and self._tags:
            for tag in self._tags:
                self._channel.basic_cancel(tag)  # pika hands back what arrived for it meanwhile
            self._tags = []
            self._returned()
        elif not paused and not self._tags:
            self._tags = self._start(self._channel)
        if paused != self._was_paused:
            self._was_paused = paused
            reason = self.switch.reason
            observability.set_paused(paused, reason.value if reason else None)
            if paused and reason is Pause.OPERATOR:
                logger.warning("consume_signals: paused by an operator; consuming again on --resume or SIGUSR1")
            elif not paused:
                logger.info("consume_signals: consuming")

    def status(self) -> dict[str, Any]:
        """The daemon's pause state and whether it consumes, for /healthz and /readyz."""
        return {**self.switch.status(), "consuming": self.consuming}

    def _take_commands(self) -> None:
        if self._toggle:
            self._toggle = False
            self._held_remotely = False
            self.switch.toggle()
            logger.warning("consume_signals: SIGUSR1 received: %s", "pausing" if self.switch.paused else "resuming")
        commands, self._commands = self._commands, []
        for command in commands:
            if command == PAUSE:
                self._held_remotely = True
                self.switch.hold()
            else:
                self._held_remotely = False
                self.switch.release()

    def _on_command(self, channel: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        # Only this service's broker user may command its daemons; the broker vouches for user_id.
        command = _command(body)
        if command is None or props.user_id != self._settings.broker_user:
            logger.warning("consume_signals: ignored a control message from user %r: %r", props.user_id, body[:100])
            return
        logger.warning("consume_signals: %s command received from %s", command, props.app_id or "an operator")
        self._commands.append(command)


def send_command(settings: BroadcasterSettings, command: str) -> bool:
    """Record `command` (pause or resume) for the service's daemons and send it to the running ones.

    Returns whether a running daemon was there to receive it. Raises BrokerUnavailable,
    or BrokerRefused when the broker refuses (a user without the service's permissions).
    """
    try:
        conn = connection.connect_blocking(connection.Nodes(settings, "control"))
    except (pika.exceptions.AMQPConnectionError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker: {connection.describe(exc)}") from exc
    try:
        channel: Any = conn.channel()  # the stubs want an ExchangeType where pika takes its name
        channel.confirm_delivery()
        if command == PAUSE:
            channel.exchange_declare(paused_marker(settings), exchange_type="fanout", durable=True)
        else:
            channel.exchange_delete(paused_marker(settings))
        channel.exchange_declare(control_exchange(settings), exchange_type="fanout", durable=True)
        body = json.dumps({"command": command, "at": time.time()}).encode()
        props = pika.BasicProperties(
            content_type="application/json", user_id=settings.broker_user, app_id=socket.gethostname()
        )
        try:
            channel.basic_publish(control_exchange(settings), "", body, props, mandatory=True)
        except pika.exceptions.UnroutableError:
            return False
        return True
    except pika.exceptions.AMQPError as exc:  # refused: permissions, or another user than the service's
        raise BrokerRefused(f"the broker refused the {command} command: {connection.describe(exc)}") from exc
    finally:
        connection.close_quietly(conn)


def _command(body: bytes) -> str | None:
    try:
        command = json.loads(body).get("command")
    except (ValueError, AttributeError):
        return None
    return command if command in (PAUSE, RESUME) else None


def _exists(conn: pika.BlockingConnection, exchange: str) -> bool:
    # A passive declare of a missing exchange closes its channel: use one of its own.
    channel = conn.channel()
    try:
        channel.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    channel.close()
    return True
