"""The BROADCASTER setting, read lazily and validated into a frozen model.

Nothing here runs at import: `get_settings()` reads django.conf.settings on first use
and caches the result until `setting_changed` fires for BROADCASTER, so
`override_settings` works in tests.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from django.conf import settings as django_settings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from broadcaster.exceptions import ConfigurationError

__all__ = [
    "BroadcasterSettings",
    "SettingProblem",
    "broker_passwords",
    "get_settings",
    "redact_url",
    "reset",
    "scrub",
    "split_urls",
    "validate",
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
        _check_nodes_agree(urls)
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
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_server_name)
        if any(tls) and not self.broker_url.startswith("amqps://"):
            raise ValueError("TLS_* settings need an amqps:// BROKER_URL")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE go together")
        own = self.signing_keys.get(self.service_name, {})
        if self.signing_key_id is not None and self.signing_key_id not in own:
            raise ValueError(
                f"SIGNING_KEY_ID {self.signing_key_id!r} is not a key of SIGNING_KEYS[{self.service_name!r}]"
            )
        if self.require_signatures and not self.signing_keys:
            raise ValueError("REQUIRE_SIGNATURES needs SIGNING_KEYS for the services this one trusts")
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


def split_urls(value: str) -> list[str]:
    """The URLs of a BROKER_URL that may list several, separated by ';'."""
    return [url.strip() for url in value.split(";") if url.strip()]


def _check_nodes_agree(urls: list[str]) -> None:
    """Every node of a cluster is reached the same way: one scheme, one user, one vhost."""
    first = _identity(urls[0])
    for number, url in enumerate(urls[1:], 2):
        entry = f"entry {number} ({redact_url(url)})"
        identity = _identity(url)
        if identity[0] != first[0]:
            raise PydanticCustomError(
                "broker_url_schemes",
                "{entry} is {scheme}:// but entry 1 is {first}://: use one scheme for every node",
                {"entry": entry, "scheme": identity[0], "first": first[0]},
            )
        if identity[1:] != first[1:]:
            raise PydanticCustomError(
                "broker_url_credentials",
                "{entry} has other credentials or another vhost than entry 1: every node must be "
                "reached as the same user on the same vhost",
                {"entry": entry},
            )


def _identity(url: str) -> tuple[str, str, str, str]:
    # pika's defaults for what a URL leaves out: guest, guest, vhost "/".
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return parts.scheme, unquote(parts.username or "guest"), unquote(parts.password or "guest"), vhost


def redact_url(url: str) -> str:
    """Return `url` with the password of every URL in it replaced by ``***``.

    `url` may hold several URLs separated by ``;`` (a cluster); each is redacted. The
    user part is taken up to the last ``@`` of each URL, so a password with an unescaped
    ``/``, ``#`` or ``@`` is hidden whole rather than cut where a URL parser would cut it.
    """
    return ";".join(_redact_one(part) for part in url.split(";"))


def broker_passwords(url: str) -> tuple[str, ...]:
    """Every password in `url` (one URL or several separated by ``;``), as written and unquoted."""
    found: list[str] = []
    for part in url.split(";"):
        _, password, _ = _userinfo(part)
        if password:
            found += [password, unquote(password)]
    # Longest first, so that a password containing another is replaced whole.
    return tuple(sorted(set(found), key=len, reverse=True))


def scrub(text: str, url: str) -> str:
    """`text` with every password of `url` replaced by ``***`` (for messages that may echo one)."""
    for password in broker_passwords(url):
        text = text.replace(password, "***")
    return text


def _userinfo(url: str) -> tuple[str, str | None, str]:
    """(what comes before the password, the password or None, what comes after it)."""
    scheme, separator, rest = url.partition("://")
    at = rest.rfind("@")
    if not separator or at < 0:
        return url, None, ""
    user, colon, password = rest[:at].partition(":")
    if not colon:
        return url, None, ""
    return f"{scheme}://{user}:", password, rest[at:]


def _redact_one(url: str) -> str:
    before, password, after = _userinfo(url)
    return url if password is None else f"{before}***{after}"


@dataclass(frozen=True)
class SettingProblem:
    """One thing wrong with BROADCASTER, as a system check reports it."""

    check_id: str
    key: str
    message: str


# Each key gets its own system check id, so users and tests can silence or match one.
_CHECK_IDS = {"SERVICE_NAME": "broadcaster.E002", "BROKER_URL": "broadcaster.E003"}
# Nodes of a BROKER_URL list that disagree, by pydantic error type.
_TYPE_IDS = {"broker_url_schemes": "broadcaster.E020", "broker_url_credentials": "broadcaster.E021"}
# The kill switch's keys: one rule (a number in range), one id.
_CHECK_IDS.update(
    dict.fromkeys(
        ("KILL_SWITCH_RATIO", "KILL_SWITCH_WINDOW", "KILL_SWITCH_MIN_EVENTS", "KILL_SWITCH_COOLDOWN"),
        "broadcaster.E030",
    )
)
_UNKNOWN_KEY_ID = "broadcaster.E004"
_INVALID_VALUE_ID = "broadcaster.E005"
_NOT_A_DICT_ID = "broadcaster.E001"
_SECRET_KEYS = frozenset({"BROKER_URL", "SIGNING_KEYS", "SEAL_KEYS", "MANAGEMENT_URL"})

_cached: BroadcasterSettings | None = None


def _raw() -> dict[str, Any] | None:
    raw = getattr(django_settings, "BROADCASTER", None)
    if not isinstance(raw, dict):
        return None
    merged = dict(raw)
    if env_url := os.environ.get(BROKER_URL_ENV):
        merged["BROKER_URL"] = env_url
    return merged


def validate() -> tuple[BroadcasterSettings | None, list[SettingProblem]]:
    """Read and validate BROADCASTER now; return the settings or what is wrong."""
    raw = _raw()
    if raw is None:
        problem = SettingProblem(
            _NOT_A_DICT_ID,
            "BROADCASTER",
            "settings.BROADCASTER must be a dict with at least SERVICE_NAME",
        )
        return None, [problem]
    try:
        return BroadcasterSettings.model_validate(raw), []
    except ValidationError as exc:
        return None, [_problem(error) for error in exc.errors(include_url=False)]


def _problem(error: Any) -> SettingProblem:
    key = str(error["loc"][0]) if error["loc"] else "BROADCASTER"
    if error["type"] == "extra_forbidden":
        return SettingProblem(_UNKNOWN_KEY_ID, key, f"BROADCASTER[{key!r}] is not a known setting")
    check_id = _TYPE_IDS.get(error["type"]) or _CHECK_IDS.get(key, _INVALID_VALUE_ID)
    # Never echo a secret back: the broker URL may carry a password, SIGNING_KEYS are keys,
    # and an error about several keys at once has the whole dict as its input.
    secret = key in _SECRET_KEYS or not error["loc"]
    shown = "" if secret else f" (got {error.get('input')!r})"
    return SettingProblem(check_id, key, f"BROADCASTER[{key!r}]: {error['msg']}{shown}")


def get_settings() -> BroadcasterSettings:
    """Return the validated settings, reading them on first use."""
    global _cached  # noqa: PLW0603 - the one lazily filled cache of this module
    if _cached is None:
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
