"""Signed events: HMAC-SHA256 over one canonical form of the body and every ce- attribute.

A producer with SIGNING_KEY_ID adds ``ce-signaturekeyid`` and ``ce-signature``. A
consumer with REQUIRE_SIGNATURES verifies them against SIGNING_KEYS[source]: a message
without a signature, with an unknown key, or whose body or any attribute was changed
after signing, is dead-lettered and never reaches a receiver. Several keys per source
are accepted while one signs, so keys rotate without downtime.

The signature reads ``<scheme>:<hex digest>``. Scheme ``v1`` signs the JSON array
``["v1", content type, [[name, value], ...]]`` (names lower-cased and sorted, values as
the consumer reads them), then a newline, then the body. JSON quotes every name and
value, so no rearrangement of attributes gives the same signed bytes; the array holds
no raw newline, so the body cannot be confused with it. Attribute names that differ
only in case, and control characters in names or values, are refused before any key is
tried. A later scheme gets a new name, and a consumer refuses a scheme it does not know.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

import pika

from broadcaster.envelope import attribute_text
from broadcaster.exceptions import RejectedMessage
from broadcaster.failures import Reason
from broadcaster.settings import BroadcasterSettings

__all__ = ["SCHEME", "canonical", "sign", "verify"]

SCHEME = "v1"
SIGNATURE = "ce-signature"
KEY_ID = "ce-signaturekeyid"
# C0, DEL, C1 and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def sign(headers: dict[str, str], content_type: str, body: bytes, key: tuple[str, bytes]) -> None:
    """Add the key id and the signature of `body` and `headers` to `headers`.

    `headers` are text, as `Envelope.headers()` makes them; only their ``ce-`` ones are signed.
    """
    key_id, secret = key
    headers[KEY_ID] = key_id
    # The envelope's own text headers, so no checks: not even for control characters (a
    # causation id comes from a remote event, and the publisher must not fail on it; a
    # consumer that verifies refuses it instead).
    attributes = {name.lower(): value for name, value in headers.items() if name[:3].lower() == "ce-"}
    signed = _canonical(attributes, content_type, body)
    headers[SIGNATURE] = f"{SCHEME}:{_digest(secret, signed)}"


def verify(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> str:
    """Return the source whose key signed the message; raise RejectedMessage unless one did.

    The caller must check that the event it decodes claims that same source.
    """
    headers = properties.headers or {}
    signed = canonical(headers, properties.content_type or "", body)  # refuses ambiguous attributes first
    attributes = _attributes(headers)
    signature, key_id, source = attributes.get(SIGNATURE), attributes.get(KEY_ID), attributes.get("ce-source")
    if signature is None or key_id is None or source is None:
        raise RejectedMessage(Reason.UNSIGNED, "REQUIRE_SIGNATURES is on and the message carries no signature")
    scheme, _, digest = signature.partition(":")
    if scheme != SCHEME:
        raise RejectedMessage(
            Reason.BAD_SIGNATURE, f"signature scheme {scheme[:20]!r} is not one this service verifies ({SCHEME})"
        )
    secret = settings.signing_keys.get(source, {}).get(key_id)
    if secret is None:
        raise RejectedMessage(Reason.UNKNOWN_KEY, f"no signing key {key_id[:40]!r} for source {source[:40]!r}")
    expected = _digest(secret.get_secret_value().encode(), signed)
    if not hmac.compare_digest(expected.encode(), digest.encode("utf-8", "surrogatepass")):
        raise RejectedMessage(
            Reason.BAD_SIGNATURE, "the body or an attribute changed after signing, or a wrong key signed"
        )
    return source


def canonical(headers: Mapping[Any, object], content_type: str, body: bytes) -> bytes:
    """The bytes scheme v1 signs: every ce- attribute but the signature, the content type, the body.

    Raises RejectedMessage (bad-attribute) for attributes that could be read two ways:
    names equal but for case, control characters, values that are not text.
    """
    return _canonical(_attributes(headers), content_type, body)


def _canonical(attributes: Mapping[str, str], content_type: str, body: bytes) -> bytes:
    signed = sorted([name, value] for name, value in attributes.items() if name != SIGNATURE)
    document = [SCHEME, content_type, signed]
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode() + b"\n" + body


def _attributes(headers: Mapping[Any, object]) -> dict[str, str]:
    """The ce- headers, names lower-cased, values as text, exactly as the envelope reads them."""
    attributes: dict[str, str] = {}
    for key, value in headers.items():
        name = str(key).lower()
        if not name.startswith("ce-"):
            continue
        if name in attributes:
            raise RejectedMessage(Reason.BAD_ATTRIBUTE, f"attribute {name[:40]!r} appears twice")
        text = attribute_text(name, value)
        if _CONTROL.search(name) or _CONTROL.search(text):
            raise RejectedMessage(Reason.BAD_ATTRIBUTE, f"attribute {name[:40]!r} holds a control character")
        attributes[name] = text
    return attributes


def _digest(secret: bytes, signed: bytes) -> str:
    return hmac.new(secret, signed, hashlib.sha256).hexdigest()
