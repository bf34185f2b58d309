"""Helpers shared by the unit and the integration tests (fixtures live in the conftest files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass
class Received:
    """One raw message as a queue held it."""

    routing_key: str
    properties: pika.BasicProperties
    body: bytes

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


class CreatesFile:
    """Unpickling this creates a file: proof that a body was loaded with pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))
