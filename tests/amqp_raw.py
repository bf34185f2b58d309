"""Raw AMQP content-header bytes, for sending what pika itself would refuse to encode.

A hostile publisher is not bound to pika: it can put any field type and any value in a
header table. `RawProperties` carries hand-made property bytes through pika's publish
path, and the strategies below draw field values of every AMQP type (and some that are
not AMQP types at all), so tests can throw at the daemon what a real attacker would.
"""

from __future__ import annotations

import struct
from typing import Any

import pika
from hypothesis import strategies as st

CONTENT_TYPE, HEADERS, DELIVERY_MODE = 0x8000, 0x2000, 0x1000
MESSAGE_ID, TYPE = 0x0080, 0x0020


def shortstr(value: bytes) -> bytes:
    return struct.pack(">B", len(value)) + value


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An AMQP field table of (name, encoded field value) pairs."""
    return longstr(b"".join(shortstr(name) + value for name, value in entries))


def properties(
    headers: bytes | None,
    *,
    content_type: bytes | None = b"application/json",
    message_id: bytes | None = None,
    type: bytes | None = None,
) -> bytes:
    """Encoded basic properties: flags, then the fields in protocol order."""
    flags, fields = 0, b""
    if content_type is not None:
        flags, fields = flags | CONTENT_TYPE, fields + shortstr(content_type)
    if headers is not None:
        flags, fields = flags | HEADERS, fields + headers
    flags, fields = flags | DELIVERY_MODE, fields + b"\x02"
    if message_id is not None:
        flags, fields = flags | MESSAGE_ID, fields + shortstr(message_id)
    if type is not None:
        flags, fields = flags | TYPE, fields + shortstr(type)
    return struct.pack(">H", flags) + fields


class RawProperties(pika.BasicProperties):  # type: ignore[misc]
    """Properties whose encoding is given bytes, whatever they say."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def encode(self) -> list[bytes]:
        return [self.raw]


def ce_headers(event: str, **extra: bytes) -> list[tuple[bytes, bytes]]:
    """Well-formed ce- attributes of a binary-mode event, as table entries."""
    attributes = {
        b"ce-specversion": b"1.0",
        b"ce-id": f"raw-{id(extra)}-{event}".encode(),
        b"ce-source": b"integration-test",
        b"ce-type": event.encode(),
    }
    return [(name, b"S" + longstr(value)) for name, value in attributes.items()] + list(extra.items())


# -- field values of every type ------------------------------------------------------


def _fixed(kind: bytes, size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size).map(lambda payload: kind + payload)


def _edges(kind: bytes, fmt: str, values: list[int]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(values).map(lambda value: kind + struct.pack(fmt, value))


scalar_field = st.one_of(
    _fixed(b"t", 1),
    _fixed(b"b", 1),
    _fixed(b"B", 1),
    _fixed(b"U", 2),
    _fixed(b"u", 2),
    _fixed(b"I", 4),
    _fixed(b"i", 4),
    _fixed(b"l", 8),
    _fixed(b"L", 8),
    _edges(b"L", ">Q", [2**63 - 1, 2**63, 2**64 - 1]),  # unsigned 64: pika decodes, cannot encode back
    _edges(b"l", ">q", [-(2**63), 2**63 - 1]),
    _fixed(b"f", 4),  # includes NaN and infinities
    _fixed(b"d", 8),
    _fixed(b"D", 5),  # a scale of up to 255 decimal places
    _edges(b"T", ">Q", [0, 253402300799, 253402300800, 2**63, 2**64 - 1]),  # up to and past year 9999
    _fixed(b"T", 8),
    st.binary(max_size=40).map(lambda value: b"s" + shortstr(value)),  # pika: short string; RabbitMQ: short int
    st.binary(max_size=60).map(lambda value: b"S" + longstr(value)),  # often not UTF-8
    st.binary(max_size=60).map(lambda value: b"x" + longstr(value)),
    st.just(b"V"),
    st.sampled_from(b"cejkmnoprvwyzCEGHJKMNOPQRWXYZ?\x00\xff").map(lambda kind: bytes([kind]) + b"\x00" * 8),
)


def _nested(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    names = st.binary(min_size=1, max_size=12)
    entries = st.lists(st.tuples(names, inner), max_size=3)
    return st.one_of(
        entries.map(lambda items: b"F" + table(items)),
        st.lists(inner, max_size=3).map(lambda values: b"A" + longstr(b"".join(values))),
    )


field_value = st.recursive(scalar_field, _nested, max_leaves=6)
deeply_nested = st.integers(min_value=1500, max_value=5000).map(lambda depth: b"F" + _deep(depth))


def _deep(depth: int) -> bytes:
    # depth tables, each holding the next under the name "n"
    inner = longstr(b"")
    for _ in range(depth):
        inner = longstr(shortstr(b"n") + b"F" + inner)
    return inner


header_name = st.one_of(
    st.sampled_from(
        [b"ce-id", b"ce-type", b"ce-hops", b"ce-schemaversion", b"ce-time", b"x-broadcaster-attempt", b"x-death"]
    ),
    st.binary(min_size=1, max_size=40),
)


def encode_any(value: Any) -> bytes:
    """A value pika can encode, as table-entry bytes (for well-formed neighbours)."""
    pieces: list[bytes] = []
    pika.data.encode_value(pieces, value)
    return b"".join(pieces)
