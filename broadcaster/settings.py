"""The BROADCASTER setting, read lazily and validated into a frozen model.

Nothing here runs at import: `get_settings()` reads django.conf.settings on first use
and caches the result until `setting_changed` fires for BROADCASTER, so
`override_settings` works in tests.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings as django_settings
from pydantic import ConfigDict, field_validator, model_validator
from pydantic_core import PydanticCustomError

# The helpers that read a BROKER_URL live in broadcaster.brokerurl; these names stay importable from here.
from broadcaster.brokerurl import broker_passwords, check_nodes_agree, redact_url, scrub, split_urls
from broadcaster.exceptions import ConfigurationError
from broadcaster.settingkeys import BROKER_URL_ENV, Areas

__all__ = [
    "BROKER_URL_ENV",
    "BroadcasterSettings",
    "broker_passwords",
    "get_settings",
    "raw_setting",
    "redact_url",
    "reset",
    "scrub",
    "split_urls",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class BroadcasterSettings(Areas):
    """Validated BROADCASTER settings; the keys are the upper-case aliases."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("service_name", "exchange", "queue", "instance_id", "unrouted_queue")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("use 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit")
        return value

    @field_validator("broker_url", mode="before")
    @classmethod
    def _join_urls(cls, value: Any) -> Any:
        # A list in settings is the same as the ';'-separated string the environment carries.
        if isinstance(value, list | tuple) and all(isinstance(url, str) for url in value):
            return ";".join(value)
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        urls = split_urls(value)
        if not urls:
            raise ValueError("must be an amqp:// or amqps:// URL with a host")
        for number, url in enumerate(urls, 1):
            parts = urlsplit(url)
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                entry = f"entry {number} ({redact_url(url)}) " if len(urls) > 1 else ""
                raise ValueError(f"{entry}must be an amqp:// or amqps:// URL with a host")
        check_nodes_agree(urls)
        return value

    @field_validator("management_url")
    @classmethod
    def _check_management_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("retry_delays")
    @classmethod
    def _check_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every delay must be a positive number of seconds")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> BroadcasterSettings:
        # Each error type is a rule of its own, with its own system check id (broadcaster.checks).
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_server_name)
        if any(tls) and not self.broker_url.startswith("amqps://"):
            raise PydanticCustomError("tls_needs_amqps", "TLS_* settings need an amqps:// BROKER_URL")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise PydanticCustomError("tls_cert_and_key", "TLS_CERT_FILE and TLS_KEY_FILE go together")
        own = self.signing_keys.get(self.service_name, {})
        if self.signing_key_id is not None and self.signing_key_id not in own:
            raise PydanticCustomError(
                "signing_key_id_unknown",
                "SIGNING_KEY_ID {key_id} is not a key of SIGNING_KEYS[{service}]",
                {"key_id": repr(self.signing_key_id), "service": repr(self.service_name)},
            )
        if self.require_signatures and not self.signing_keys:
            raise PydanticCustomError(
                "signatures_without_keys", "REQUIRE_SIGNATURES needs SIGNING_KEYS for the services this one trusts"
            )
        return self

    @property
    def signing_key(self) -> tuple[str, bytes] | None:
        """(key id, secret) this service signs with, if it signs."""
        if self.signing_key_id is None:
            return None
        secret = self.signing_keys[self.service_name][self.signing_key_id].get_secret_value()
        return self.signing_key_id, secret.encode()

    @property
    def queue_name(self) -> str:
        """The durable queue every instance of this service consumes from."""
        return self.queue or self.service_name

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """The URL of each broker node, in the order clients try them."""
        return tuple(split_urls(self.broker_url))

    @property
    def broker_user(self) -> str:
        """The user this process authenticates as (what the broker puts in user_id)."""
        return unquote(urlsplit(self.broker_urls[0]).username or "guest")

    @property
    def instance_name(self) -> str:
        """INSTANCE_ID, or this host and process."""
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def max_attempts(self) -> int:
        """Deliveries of one message before it is dead-lettered (first try plus retries)."""
        return len(self.retry_delays) + 1

    @property
    def unrouted_exchange(self) -> str | None:
        """The alternate exchange of EXCHANGE when UNROUTED_QUEUE is set (fanout, to that queue)."""
        return None if self.unrouted_queue is None else f"{self.exchange}.unrouted"

    @property
    def exchange_arguments(self) -> dict[str, str]:
        """Arguments EXCHANGE is declared with; everyone declaring it must pass the same ones."""
        exchange = self.unrouted_exchange
        return {} if exchange is None else {"alternate-exchange": exchange}

    @property
    def management(self) -> tuple[str, str, str]:
        """(base URL, user, password) of the management HTTP API; keep the password out of any output."""
        if self.management_url is not None:
            parts = urlsplit(self.management_url)
            base = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") + parts.path
            return base.rstrip("/"), unquote(parts.username or ""), unquote(parts.password or "")
        first = urlsplit(self.broker_url.split(";")[0])
        return f"http://{first.hostname}:15672", unquote(first.username or "guest"), unquote(first.password or "guest")

    @property
    def redacted_broker_url(self) -> str:
        """The broker URL with its password replaced, safe for logs and errors."""
        return redact_url(self.broker_url)


_cached: BroadcasterSettings | None = None


def raw_setting() -> dict[str, Any] | None:
    """BROADCASTER as written, with the environment's broker URL in place; None unless a dict."""
    raw = getattr(django_settings, "BROADCASTER", None)
    if not isinstance(raw, dict):
        return None
    merged = dict(raw)
    if env_url := os.environ.get(BROKER_URL_ENV):
        merged["BROKER_URL"] = env_url
    return merged


def get_settings() -> BroadcasterSettings:
    """Return the validated settings, reading them on first use."""
    global _cached  # noqa: PLW0603 - the one lazily filled cache of this module
    if _cached is None:
        from broadcaster.checks import validate  # noqa: PLC0415 - checks reads this module's model

        settings, problems = validate()
        if settings is None:
            raise ConfigurationError("; ".join(f"{p.message} [{p.check_id}]" for p in problems))
        _cached = settings
    return _cached


def reset(**kwargs: Any) -> None:
    """Forget the cached settings (connected to Django's `setting_changed`)."""
    global _cached  # noqa: PLW0603
    if kwargs.get("setting") in (None, "BROADCASTER"):
        _cached = None
