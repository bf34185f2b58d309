"""Signed events: HMAC-SHA256 over the body and every ce- attribute, with key ids.

A producer with SIGNING_KEY_ID adds ``ce-signaturekeyid`` and ``ce-signature`` (hex).
A consumer with REQUIRE_SIGNATURES verifies them against SIGNING_KEYS[ce-source]: a
message without a signature, with an unknown key, or whose body or any attribute was
changed after signing, is dead-lettered and never reaches a receiver. Several keys per
source are accepted while one signs, so keys rotate without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

import pika

from broadcaster.exceptions import RejectedMessage
from broadcaster.settings import BroadcasterSettings

__all__ = ["sign", "verify"]

SIGNATURE = "ce-signature"
KEY_ID = "ce-signaturekeyid"


def sign(headers: dict[str, str], content_type: str, body: bytes, key: tuple[str, bytes]) -> None:
    """Add the key id and the signature of `body` and `headers` to `headers`."""
    key_id, secret = key
    headers[KEY_ID] = key_id
    headers[SIGNATURE] = _digest(secret, headers, content_type, body)


def verify(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> None:
    """Raise RejectedMessage unless the message carries a valid signature of its source."""
    headers = {str(k).lower(): v for k, v in (properties.headers or {}).items()}
    signature, key_id, source = headers.get(SIGNATURE), headers.get(KEY_ID), headers.get("ce-source")
    if not isinstance(signature, str) or not isinstance(key_id, str) or not isinstance(source, str):
        raise RejectedMessage("unsigned", "REQUIRE_SIGNATURES is on and the message carries no signature")
    secret = settings.signing_keys.get(source, {}).get(key_id)
    if secret is None:
        raise RejectedMessage("unknown-key", f"no signing key {key_id[:40]!r} for source {source[:40]!r}")
    expected = _digest(secret.get_secret_value().encode(), headers, properties.content_type or "", body)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise RejectedMessage("bad-signature", "the body or an attribute changed after signing, or a wrong key signed")


def _digest(secret: bytes, headers: Mapping[str, object], content_type: str, body: bytes) -> str:
    # Every ce- attribute but the signature itself, in a fixed order, then the content
    # type and the body: changing any of them breaks the signature.
    attributes = sorted(
        (name, str(value)) for name, value in headers.items() if name.startswith("ce-") and name != SIGNATURE
    )
    canonical = "\n".join(f"{name}:{value}" for name, value in attributes)
    # surrogatepass: a hostile header with a lone surrogate must fail the check, not raise.
    message = f"{canonical}\ncontent-type:{content_type}\n\n".encode("utf-8", "surrogatepass") + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
