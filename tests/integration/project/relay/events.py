"""The signals of this project and the schemas of the events they are broadcast as."""

from decimal import Decimal
from typing import ClassVar

from django.dispatch import Signal
from pydantic import BaseModel

ping = Signal()  # kwargs: n, note
pong = Signal()  # kwargs: n
priced = Signal()  # kwargs: sku, amount
boom = Signal()  # kwargs: n; its receiver always raises
keyed = Signal()  # kwargs: key, seq; broadcast with key="key", subscribed ordered


class Ping(BaseModel):
    schema_version: ClassVar[str] = "1.3"

    n: int
    note: str = ""


class Pong(BaseModel):
    n: int


class Priced(BaseModel):
    sku: str
    amount: Decimal


class Boom(BaseModel):
    n: int


class Keyed(BaseModel):
    key: str
    seq: int


SIGNALS = {"ping": ping, "pong": pong, "priced": priced, "boom": boom, "keyed": keyed}
