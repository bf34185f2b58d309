"""AMQP properties the daemon cannot trust to be well-formed: reading them, and copying them.

A hostile or merely unusual publisher can send header values that pika decodes but
cannot encode back the same way (an unsigned 64-bit integer, a lone surrogate), that it
cannot decode at all (a timestamp past year 9999, an unknown field type, tables nested
beyond the recursion limit), or headers just under the frame size that the failure
headers of a retry or dead-letter copy push over it. Each of these used to stop the
daemon or make the broker close its connection, with the message coming back first
after every restart. Here:

- `install_tolerant_decoder()` makes pika hand such a message over with empty properties
  and the reason attached (`undecodable()`), instead of dropping the connection;
- `encodable()` turns the properties of a copy into ones pika can encode within the
  frame size, saying in headers what it had to change.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pika
import pika.data
from pika import spec

__all__ = ["COPY_NOTE", "encodable", "encodable_source", "install_tolerant_decoder", "raw_properties", "undecodable"]

COPY_NOTE = "x-broadcaster-copy-note"
"""Header of a copy whose headers had to change to be encoded: what changed."""
_UNENCODABLE = "x-broadcaster-unencodable-headers"
_DROPPED = "x-broadcaster-dropped-headers"
_OURS = "x-broadcaster-"
_SHORTSTR = 255  # an AMQP table key or short string holds at most this many bytes
_VALUE_TEXT_LIMIT = 1000
_NAMES_LIMIT = 2000
# Bytes of a content header frame that are not the properties: frame header and end,
# class id, weight and body size.
_HEADER_FRAME_OVERHEAD = 7 + 1 + 12


class _TolerantProperties(spec.BasicProperties):
    """BasicProperties that decode to empty ones, with the reason, where pika would raise."""

    broadcaster_undecodable: str | None = None
    broadcaster_raw: bytes = b""

    def decode(self, encoded: bytes, offset: int = 0) -> _TolerantProperties:
        try:
            super().decode(encoded, offset)
        except Exception as exc:  # whatever pika's decoder raises, the message is reported
            self.__init__()  # type: ignore[misc]  # back to "no properties": a half-decoded set would mislead
            self.broadcaster_undecodable = f"{type(exc).__name__}: {exc}"[:_VALUE_TEXT_LIMIT]
            self.broadcaster_raw = bytes(encoded[offset:])
        return self


_install_lock = threading.Lock()


def install_tolerant_decoder() -> None:
    """Make this process decode every message's properties without raising (idempotent).

    pika looks the properties class of a content header up in ``pika.spec.props``; a
    message whose properties it cannot decode then arrives with empty properties, which
    `undecodable()` recognises, rather than closing the connection (and looping forever
    on redelivery). Called by the consumer daemon before it connects.
    """
    table: dict[int, type] = spec.props  # type: ignore[assignment]  # a plain dict, typed as a Mapping
    with _install_lock:
        table[spec.BasicProperties.INDEX] = _TolerantProperties


def undecodable(properties: pika.BasicProperties) -> str | None:
    """Why pika could not decode these properties (None when it could)."""
    reason: str | None = getattr(properties, "broadcaster_undecodable", None)
    return reason


def raw_properties(properties: pika.BasicProperties) -> bytes:
    """The encoded properties pika could not decode (empty when it could)."""
    raw: bytes = getattr(properties, "broadcaster_raw", b"")
    return raw


def encodable_source(
    properties: pika.BasicProperties, frame_max: int, *, reserve: int = 0
) -> tuple[pika.BasicProperties, dict[str, str]]:
    """`properties` made fit to copy: pika can encode them in `frame_max` bytes less `reserve`.

    Header values pika cannot encode are replaced by text; if the headers are too large,
    the largest ones that are not the library's own are left out. Returns the properties
    (the same object when nothing had to change) and the notes that say what changed
    (x-broadcaster-copy-note, -unencodable-headers, -dropped-headers), for the caller to
    add to the copy with its own failure headers. Never raises for anything pika decoded.
    """
    limit = frame_max - _HEADER_FRAME_OVERHEAD - reserve
    if _size(properties) <= limit:
        return properties, {}
    headers: dict[str, Any] = {}
    replaced: list[str] = []
    for key, value in (properties.headers or {}).items():
        name = _key(key)
        fits = _size_of({name: value}) is not None
        headers[name] = value if fits else _as_text(value)
        if not fits:
            replaced.append(name)
    dropped = _shrink(headers, lambda h: _size(_with_headers(properties, h)) <= limit)
    notes: dict[str, str] = {}
    said = []
    if replaced:
        notes[_UNENCODABLE] = _names(replaced)
        said.append(f"{len(replaced)} header value(s) could not be encoded and are kept as text")
    if dropped:
        notes[_DROPPED] = _names(dropped)
        said.append(f"{len(dropped)} header(s) left out to fit the frame size of {frame_max} bytes")
    notes[COPY_NOTE] = "; ".join(said) or "headers normalised to be encodable"
    return _with_headers(properties, headers), notes


def encodable(properties: pika.BasicProperties, frame_max: int) -> pika.BasicProperties:
    """`properties`, or a copy pika can encode in one content header frame of `frame_max` bytes.

    The last resort before a publish: what `encodable_source()` changes is noted in the
    headers themselves, and if even the library's own headers do not fit, only the note stays.
    """
    copy, notes = encodable_source(properties, frame_max)
    if not notes:
        return properties
    copy.headers = {**(copy.headers or {}), **notes}
    if _size(copy) > frame_max - _HEADER_FRAME_OVERHEAD:
        copy = _with_headers(properties, {COPY_NOTE: "headers left out: too large to copy"})
    return copy


def _shrink(headers: dict[str, Any], fits: Any) -> list[str]:
    """Drop the largest headers that are not ours until `fits(headers)`; return their names."""
    dropped: list[str] = []
    while not fits(headers):
        candidates = [name for name in headers if not name.startswith(_OURS)]
        if not candidates:
            break
        largest = max(candidates, key=lambda name: _size_of({name: headers[name]}) or 0)
        del headers[largest]
        dropped.append(largest)
    return dropped


def _with_headers(properties: pika.BasicProperties, headers: dict[str, Any]) -> pika.BasicProperties:
    fields = {name: getattr(properties, name, None) for name in _PROPERTY_NAMES}
    copy = pika.BasicProperties(**fields)
    copy.headers = headers
    return _clean_fields(copy)


_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)
_SHORT_FIELDS = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "type",
    "app_id",
    "cluster_id",
)


def _clean_fields(properties: pika.BasicProperties) -> pika.BasicProperties:
    # Properties other than headers came off the wire, so they fit; what a copy adds to them
    # (text of any length) is cut to a short string.
    for name in _SHORT_FIELDS:
        value = getattr(properties, name)
        if value is not None and len(_bytes(value)) > _SHORTSTR:
            setattr(properties, name, _bytes(value)[:_SHORTSTR].decode("utf-8", "ignore"))
    return properties


def _size(properties: pika.BasicProperties) -> int:
    try:
        return sum(len(piece) for piece in properties.encode())
    except Exception:  # any failure to encode means "does not fit"
        return 1 << 62


def _size_of(headers: dict[str, Any]) -> int | None:
    try:
        size: int = pika.data.encode_table([], headers)
        return size
    except Exception:  # pika raises several types for values it cannot encode
        return None


def _key(key: object) -> str:
    text = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _bytes(text)[:_SHORTSTR].decode("utf-8", "ignore")


def _as_text(value: object) -> str:
    try:
        text = json.dumps(_plain(value), ensure_ascii=True)
    except RecursionError:
        text = "(a value too deeply nested to show)"
    return text[:_VALUE_TEXT_LIMIT]


def _plain(value: object) -> object:
    """`value` as JSON can show it: text keys, bytes as text, anything unusual as its repr."""
    if isinstance(value, dict):
        return {_key(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(value)


def _names(names: list[str]) -> str:
    return json.dumps(names, ensure_ascii=True)[:_NAMES_LIMIT]


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "backslashreplace")
