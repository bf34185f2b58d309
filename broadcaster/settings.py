"""The BROADCASTER setting, read lazily and validated into a frozen model.

Nothing here runs at import: `get_settings()` reads django.conf.settings on first use
and caches the result until `setting_changed` fires for BROADCASTER, so
`override_settings` works in tests.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from django.conf import settings as django_settings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

# The helpers that read a BROKER_URL live in broadcaster.brokerurl; these names stay importable from here.
from broadcaster.brokerurl import broker_passwords, check_nodes_agree, redact_url, scrub, split_urls
from broadcaster.exceptions import ConfigurationError

__all__ = [
    "BroadcasterSettings",
    "broker_passwords",
    "get_settings",
    "raw_setting",
    "redact_url",
    "reset",
    "scrub",
    "split_urls",
]

BROKER_URL_ENV = "BROADCASTER_BROKER_URL"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class BroadcasterSettings(BaseModel):
    """Validated BROADCASTER settings; the keys are the upper-case aliases."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    service_name: str = Field(
        alias="SERVICE_NAME",
        description="Names this service's queue and the `source` of its events.",
    )
    broker_url: str = Field(
        "amqp://guest:guest@localhost:5672/%2F",
        alias="BROKER_URL",
        repr=False,  # it may carry a password; redacted_broker_url is the safe form
        description="AMQP URL of the broker, or of each node of a cluster (a list, or one string with the "
        f"URLs separated by ';'), tried in that order; the environment variable {BROKER_URL_ENV} wins.",
    )
    exchange: str = Field("signals", alias="EXCHANGE", description="Durable topic exchange events are published to.")
    queue: str | None = Field(None, alias="QUEUE", description="The service queue; defaults to SERVICE_NAME.")
    queue_type: Literal["classic", "quorum"] = Field(
        "classic", alias="QUEUE_TYPE", description="Type of the queues the consumer declares."
    )
    prefetch: int = Field(
        100,
        alias="PREFETCH",
        ge=1,
        le=65535,
        description="Unacknowledged messages a daemon holds at once.",
    )
    publish_timeout: float = Field(
        5.0,
        alias="PUBLISH_TIMEOUT",
        gt=0,
        description="Seconds send() may wait for room in a full publisher buffer before raising.",
    )
    max_buffer: int = Field(
        10_000,
        alias="MAX_BUFFER",
        ge=1,
        description="Messages the publisher holds unconfirmed before send() waits.",
    )
    shutdown_timeout: float = Field(
        10.0,
        alias="SHUTDOWN_TIMEOUT",
        ge=0,
        description="Seconds the process waits at exit for unconfirmed messages, and a daemon for the message in hand.",
    )
    retry_delays: tuple[float, ...] = Field(
        (1.0, 10.0, 60.0, 300.0),
        alias="RETRY_DELAYS",
        description="Seconds before each redelivery of a message whose receiver raised; one attempt more than delays.",
    )
    max_hops: int = Field(
        8,
        alias="MAX_HOPS",
        ge=1,
        description="Longest causation chain of events caused by remote events.",
    )
    max_message_bytes: int = Field(
        1_048_576,
        alias="MAX_MESSAGE_BYTES",
        ge=1024,
        description="Largest payload published or consumed.",
    )
    max_json_depth: int = Field(
        64,
        alias="MAX_JSON_DEPTH",
        ge=1,
        le=200,  # pydantic's JSON parser stops at 200 levels on its own, with a vaguer error
        description="Deepest nesting of arrays and objects in an incoming payload; deeper is dead-lettered unparsed.",
    )
    heartbeat: int = Field(30, alias="HEARTBEAT", ge=0, description="AMQP heartbeat in seconds (0 turns it off).")
    publish_mode: Literal["on_commit", "outbox"] = Field(
        "on_commit",
        alias="PUBLISH_MODE",
        description="on_commit: hand events to the publisher after commit; outbox: store them in the "
        "same transaction and let a relay publish them.",
    )
    outbox_batch: int = Field(
        500, alias="OUTBOX_BATCH", ge=1, description="Outbox rows a relay publishes per transaction."
    )
    outbox_poll_interval: float = Field(
        1.0, alias="OUTBOX_POLL_INTERVAL", gt=0, description="Seconds between outbox polls of an idle relay."
    )
    outbox_retention: float = Field(
        7 * 86400.0, alias="OUTBOX_RETENTION", ge=0, description="Seconds published outbox rows are kept."
    )
    inbox_retention: float = Field(
        7 * 86400.0, alias="INBOX_RETENTION", ge=0, description="Seconds inbox rows (handled event ids) are kept."
    )
    tls_ca_file: str | None = Field(
        None, alias="TLS_CA_FILE", description="CA bundle that verifies the broker (amqps://); system CAs if unset."
    )
    tls_cert_file: str | None = Field(None, alias="TLS_CERT_FILE", description="Client certificate (PEM) for amqps://.")
    tls_key_file: str | None = Field(None, alias="TLS_KEY_FILE", description="Private key (PEM) of TLS_CERT_FILE.")
    tls_server_name: str | None = Field(
        None, alias="TLS_SERVER_NAME", description="Name the broker's certificate must carry; the URL host if unset."
    )
    tls_verify: bool = Field(
        True, alias="TLS_VERIFY", description="Verify the broker's certificate and name (leave on outside tests)."
    )
    signing_keys: dict[str, dict[str, SecretStr]] = Field(
        default_factory=dict,
        alias="SIGNING_KEYS",
        repr=False,
        description="HMAC-SHA256 keys by source service, then by key id: {'orders': {'k2': '...', 'k1': '...'}}.",
    )
    signing_key_id: str | None = Field(
        None, alias="SIGNING_KEY_ID", description="Key id of SIGNING_KEYS[SERVICE_NAME] this service signs with."
    )
    require_signatures: bool = Field(
        False, alias="REQUIRE_SIGNATURES", description="Dead-letter incoming events without a valid signature."
    )
    require_user_id: bool = Field(
        False,
        alias="REQUIRE_USER_ID",
        description="Dead-letter incoming events whose broker-validated user_id is not their ce-source.",
    )
    seal_keys: tuple[SecretStr, ...] = Field(
        (),
        alias="SEAL_KEYS",
        repr=False,
        description="Secrets that seal the failure headers of retried, dead-lettered and replayed messages; "
        "the first seals, all verify. SECRET_KEY and SECRET_KEY_FALLBACKS if empty. Every instance of the "
        "service and its dead_letters tool must share them.",
    )
    instance_id: str | None = Field(
        None,
        alias="INSTANCE_ID",
        description="Stable name of this daemon for fanout='instance' queues (a pod name); host and pid if unset.",
    )
    instance_queue_expires: float = Field(
        300.0, alias="INSTANCE_QUEUE_EXPIRES", gt=0, description="Seconds an unused instance queue is kept."
    )
    partitions: int = Field(
        8,
        alias="PARTITIONS",
        ge=1,
        le=1000,
        description="Queues the events of ordered subscriptions are spread over by partition key; each is "
        "consumed by one daemon at a time. Changing it: drain the partition queues first (see the docs).",
    )
    concurrency: int = Field(
        1,
        alias="CONCURRENCY",
        ge=1,
        le=256,
        description="Receivers a daemon runs at once, each on a thread with its own database connection "
        "(consume_signals --concurrency wins).",
    )
    consumer_timeout: float = Field(
        1800.0,
        alias="CONSUMER_TIMEOUT",
        gt=0,
        description="The broker's consumer_timeout in seconds (RabbitMQ's default is 30 minutes): a daemon "
        "logs a receiver still running after this long, since the broker then closes its channel.",
    )
    kill_switch_ratio: float | None = Field(
        None,
        alias="KILL_SWITCH_RATIO",
        gt=0,
        le=1,
        description="Share of failing events (a receiver raised) over KILL_SWITCH_WINDOW that pauses a "
        "daemon for KILL_SWITCH_COOLDOWN, its messages left queued; None (the default) turns the kill switch off.",
    )
    kill_switch_window: float = Field(
        60.0, alias="KILL_SWITCH_WINDOW", gt=0, description="Seconds of recent events the kill switch looks at."
    )
    kill_switch_min_events: int = Field(
        20,
        alias="KILL_SWITCH_MIN_EVENTS",
        ge=1,
        description="Events the window must hold before the kill switch may pause the daemon.",
    )
    kill_switch_cooldown: float = Field(
        60.0,
        alias="KILL_SWITCH_COOLDOWN",
        gt=0,
        description="Seconds a daemon the kill switch paused waits before it consumes again.",
    )
    reconnect_max_delay: float = Field(
        30.0,
        alias="RECONNECT_MAX_DELAY",
        gt=0,
        description="Cap of the exponential back-off between reconnection attempts.",
    )

    unrouted_queue: str | None = Field(
        None,
        alias="UNROUTED_QUEUE",
        description="Queue that keeps events no queue takes (through an alternate exchange on EXCHANGE), "
        "to be replayed with `dead_letters --queue unrouted`; every service on EXCHANGE must agree on it.",
    )
    unrouted_log_interval: float = Field(
        60.0,
        alias="UNROUTED_LOG_INTERVAL",
        gt=0,
        description="Seconds between two warnings about unrouted events of one type (each is still counted).",
    )
    management_url: str | None = Field(
        None,
        alias="MANAGEMENT_URL",
        repr=False,  # it may carry a password
        description="RabbitMQ management HTTP API for `broadcaster_topology --check/--prune`; "
        "http://<first broker host>:15672 with the broker's credentials if unset.",
    )

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
