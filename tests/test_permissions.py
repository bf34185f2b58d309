"""The least-privilege commands cover exactly this service's exchange, queues and events."""

from __future__ import annotations

import re
import shlex
from typing import Any

from broadcaster.permissions import permission_commands
from broadcaster.settings import get_settings


def regexes(settings: Any, instance: bool = False) -> dict[str, list[str]]:
    commands = permission_commands(
        get_settings(), ["tests.done"], ["orders.placed"], None, ["orders.placed"] if instance else []
    )
    parsed = {}
    for line in commands:
        if line.startswith("rabbitmqctl"):
            words = shlex.split(line)
            parsed[words[1]] = words
    return parsed


def test_own_queues_and_events_only(settings: Any) -> None:
    words = regexes(settings)
    configure, write, read = words["set_permissions"][-3:]
    assert words["add_user"][2:] == ["tests", "CHANGE_ME"]
    assert re.match(configure, "tests.delay.1000ms")
    assert re.match(configure, "tests.dead-letter")
    assert not re.match(configure, "billing")
    assert not re.match(configure, "testsX")
    assert re.match(write, "tests.requeue")  # retries, dead letters and replays go through it
    assert not re.match(write, "amq.default")  # which could reach any queue of the vhost
    assert not re.match(write, "billing.requeue")
    assert not re.match(read, "billing.dead-letter")
    exchange, topic_write, topic_read = words["set_topic_permissions"][-3:]
    assert exchange == "signals"
    assert re.match(topic_write, "tests.done")
    assert not re.match(topic_write, "orders.placed")
    assert re.match(topic_read, "orders.placed")


def test_instance_queues_are_covered_when_used(settings: Any) -> None:
    assert not re.match(regexes(settings)["set_permissions"][-3], "tests.instance.pod-1")
    configure = regexes(settings, instance=True)["set_permissions"][-3]
    assert re.match(configure, "tests.instance.pod-1")
    assert not re.match(configure, "billing.instance.pod-1")
