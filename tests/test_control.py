"""The pika side of pausing: which consumers are started and cancelled, and who may command them."""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

import pika
import pika.exceptions
import pytest
from django.core.management import CommandError, call_command

from broadcaster import control
from broadcaster.control import Control
from broadcaster.killswitch import KillSwitch, Limits
from broadcaster.settings import BroadcasterSettings

SETTINGS = BroadcasterSettings.model_validate({"SERVICE_NAME": "orders", "INSTANCE_ID": "pod-1"})  # not in names


class Channel:
    """Records what the daemon asks of the broker."""

    def __init__(self, marker: bool = False) -> None:
        self.marker = marker
        self.calls: list[tuple[str, Any]] = []
        self.on_command: Any = None

    def exchange_declare(self, name: str, passive: bool = False, **kwargs: Any) -> None:
        if passive:
            self.calls.append(("read_marker", name))
            if not self.marker:
                raise pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND")
            return
        self.calls.append(("exchange_declare", name))

    def queue_declare(self, name: str, **kwargs: Any) -> None:
        self.calls.append(("queue_declare", (name, kwargs)))

    def queue_bind(self, queue: str, exchange: str) -> None:
        self.calls.append(("queue_bind", (queue, exchange)))

    def basic_consume(self, queue: str, callback: Any, auto_ack: bool = False) -> str:
        self.on_command = callback
        return "control-tag"

    def basic_cancel(self, tag: str) -> None:
        self.calls.append(("basic_cancel", tag))

    def close(self) -> None:
        pass


class Connection:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def channel(self) -> Channel:
        return self._channel


class Daemon:
    """The consumer's side: consumes one queue, hands back what it holds when paused."""

    def __init__(self) -> None:
        self.started = 0
        self.returned = 0

    def start(self, channel: Any) -> list[str]:
        self.started += 1
        return [f"tag-{self.started}"]

    def give_back(self) -> None:
        self.returned += 1


def attached(marker: bool = False) -> tuple[Control, Channel, Daemon]:
    daemon, channel = Daemon(), Channel(marker)
    gate = Control(SETTINGS, KillSwitch(Limits(ratio=0.5, min_events=2)), daemon.start, daemon.give_back)
    gate.attach(Connection(channel), channel)  # type: ignore[arg-type]
    return gate, channel, daemon


def command(gate_channel: Channel, body: dict[str, Any], user: str | None = "guest") -> None:
    props = pika.BasicProperties(user_id=user, app_id="ops-laptop")
    gate_channel.on_command(gate_channel, None, props, json.dumps(body).encode())


def test_attach_listens_on_an_exclusive_queue_of_its_own_and_consumes() -> None:
    gate, channel, daemon = attached()
    _, other_channel, _ = attached()  # a second consumer in the same process
    [queue] = [args[0] for call, args in channel.calls if call == "queue_declare"]
    [other_queue] = [args[0] for call, args in other_channel.calls if call == "queue_declare"]
    assert re.fullmatch(rf"orders\.control\.{re.escape(socket.gethostname())}-{os.getpid()}-[0-9a-f]{{6}}", queue)
    assert other_queue != queue
    assert ("queue_declare", (queue, {"exclusive": True, "auto_delete": True})) in channel.calls
    assert ("queue_bind", (queue, "orders.control")) in channel.calls
    assert gate.consuming
    assert daemon.started == 1


def test_a_starting_daemon_listens_before_it_reads_the_pause_marker() -> None:
    # --pause marks, then sends: a daemon bound before reading the marker misses neither.
    _, channel, _ = attached()
    names = [call for call, _ in channel.calls]
    assert names.index("queue_bind") < names.index("read_marker")
    assert ("read_marker", "orders.paused") in channel.calls


def test_a_recorded_pause_keeps_a_starting_daemon_from_consuming() -> None:
    gate, _, daemon = attached(marker=True)
    assert not gate.consuming
    assert daemon.started == 0
    assert gate.status()["pause_reason"] == "operator"


def test_tripping_cancels_the_consumers_and_gives_back_what_was_not_started() -> None:
    gate, channel, daemon = attached()
    gate.record(failed=True)
    gate.record(failed=True)
    gate.apply()
    assert ("basic_cancel", "tag-1") in channel.calls
    assert daemon.returned == 1
    assert not gate.consuming


@pytest.mark.parametrize(("body", "user"), [({"command": "pause"}, "intruder"), ({"command": "explode"}, "guest")])
def test_commands_from_another_user_or_unknown_ones_are_ignored(body: dict[str, Any], user: str) -> None:
    gate, channel, _ = attached()
    command(channel, body, user)
    gate.apply()
    assert gate.consuming


def test_pause_and_resume_commands_of_the_service_user() -> None:
    gate, channel, daemon = attached()
    command(channel, {"command": control.PAUSE})
    gate.apply()
    assert not gate.consuming
    command(channel, {"command": control.RESUME})
    gate.apply()
    assert gate.consuming
    assert daemon.started == 2


def test_a_resume_sent_while_the_daemon_was_away_is_seen_when_it_reconnects() -> None:
    gate, channel, _ = attached(marker=True)
    gate.detach()
    channel.marker = False  # --resume deleted the marker meanwhile
    gate.attach(Connection(channel), channel)  # type: ignore[arg-type]
    assert gate.consuming


def test_pause_without_a_broker_is_a_one_line_error(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": "amqp://svc:secret@127.0.0.1:1/%2F"}
    with pytest.raises(CommandError, match=r"^consume_signals: cannot reach the broker") as caught:
        call_command("consume_signals", "--pause")
    assert "secret" not in str(caught.value)
