"""Receivers of re-emitted events: each appends one JSON line per event to RECORD_FILE."""

import json
from typing import Any

from django.conf import settings
from django.dispatch import Signal

from broadcaster import Envelope
from relay import events


def record(sender: object, envelope: Envelope | None = None, **fields: Any) -> None:
    if envelope is None:
        return  # fired locally, not re-emitted from the broker
    line = {
        "service": settings.BROADCASTER["SERVICE_NAME"],
        "type": envelope.type,
        "id": envelope.id,
        "source": envelope.source,
        "causation_id": envelope.causation_id,
        "hops": envelope.hops,
        "attempt": envelope.attempt,
        "payload": {name: value for name, value in fields.items() if name != "signal"},
    }
    with open(settings.RECORD_FILE, "a", encoding="utf-8") as file:
        file.write(json.dumps(line, default=str) + "\n")


def connect(*signals: Signal) -> None:
    for signal in signals:
        signal.connect(record, weak=False, dispatch_uid="relay.record")


def explode(sender: object, n: int, **kwargs: Any) -> None:
    record(sender, n=n, **kwargs)
    raise RuntimeError(f"boom {n}")


def answer_with_pong(sender: object, n: int, **kwargs: Any) -> None:
    events.pong.send(sender=None, n=n + 1)


def answer_with_ping(sender: object, n: int, **kwargs: Any) -> None:
    events.ping.send(sender=None, n=n + 1)
