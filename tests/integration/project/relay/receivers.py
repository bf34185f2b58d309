"""Receivers of re-emitted events: each appends one JSON line per event to RECORD_FILE."""

import json
import os
import signal as signals
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal

from broadcaster import Envelope
from relay import events


def record(sender: object, envelope: Envelope | None = None, **fields: Any) -> None:
    if envelope is None:
        return  # fired locally, not re-emitted from the broker
    _misbehave(fields.get("n"))
    line = {
        "service": settings.BROADCASTER["SERVICE_NAME"],
        "type": envelope.type,
        "id": envelope.id,
        "source": envelope.source,
        "causation_id": envelope.causation_id,
        "hops": envelope.hops,
        "attempt": envelope.attempt,
        "pid": os.getpid(),
        "payload": {name: value for name, value in fields.items() if name != "signal"},
    }
    with open(settings.RECORD_FILE, "a", encoding="utf-8") as file:
        file.write(json.dumps(line, default=str) + "\n")


def remember(sender: object, envelope: Envelope, n: int, **fields: Any) -> None:
    """The receiver of an inbox subscription: its effect is a row in the database."""
    from relay.models import Effect

    Effect.objects.create(n=n, event_id=envelope.id)
    record(sender, envelope=envelope, n=n, **fields)


def _misbehave(n: object) -> None:
    if settings.RECEIVER_SLEEP:
        time.sleep(settings.RECEIVER_SLEEP)
    if settings.FAIL_WHILE and Path(settings.FAIL_WHILE).exists():
        raise RuntimeError(f"event {n} fails while {settings.FAIL_WHILE} exists")  # a dependency is down
    if n is None or n != settings.KILL_AT:
        return
    marker = Path(settings.KILL_MARKER)
    if marker.exists():
        return  # killed once already: the redelivery goes through
    marker.touch()
    if settings.KILL_WHEN == "after-commit":
        transaction.on_commit(_kill)  # after the receivers' work committed, before the ack
    else:
        _kill()


def _kill() -> None:
    os.kill(os.getpid(), signals.SIGKILL)


def record_keyed(sender: object, envelope: Envelope, key: str, seq: int, **fields: Any) -> None:
    """An ordered subscription's receiver: fails the first attempt of every FAIL_FIRST_EVERY-th event."""
    if settings.RECEIVER_SLEEP:
        time.sleep(settings.RECEIVER_SLEEP)
    every = settings.FAIL_FIRST_EVERY
    if every and seq % every == every - 1 and envelope.attempt == 1:
        raise RuntimeError(f"first attempt of {key}/{seq} fails")
    if settings.FAIL_WHILE and Path(settings.FAIL_WHILE).exists():
        raise RuntimeError(f"{key}/{seq} fails while {settings.FAIL_WHILE} exists")
    line = {"key": key, "seq": seq, "attempt": envelope.attempt, "pid": os.getpid(), "id": envelope.id}
    with open(settings.RECORD_FILE, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


def connect(*signals: Signal) -> None:
    for signal in signals:
        signal.connect(record, weak=False, dispatch_uid="relay.record")


def fail_at_first(sender: object, envelope: Envelope | None = None, **fields: Any) -> None:
    """Raise on the first FAIL_TIMES calls, whatever attempt the daemon believes it is on; then record."""
    if envelope is None:
        return
    calls = Path(f"{settings.RECORD_FILE}.calls")
    count = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(count))
    if count <= settings.FAIL_TIMES:
        raise RuntimeError(f"failing on purpose: call {count} of the first {settings.FAIL_TIMES}")
    record(sender, envelope=envelope, **fields)


def explode(sender: object, n: int, **kwargs: Any) -> None:
    record(sender, n=n, **kwargs)
    raise RuntimeError(f"boom {n}")


def answer_with_pong(sender: object, n: int, **kwargs: Any) -> None:
    events.pong.send(sender=None, n=n + 1)


def answer_with_ping(sender: object, n: int, **kwargs: Any) -> None:
    events.ping.send(sender=None, n=n + 1)
