"""The keys of the BROADCASTER setting by area: each with its default, its bounds and what it does.

`broadcaster.settings.BroadcasterSettings` adds the checks of their values and across
keys, and the values derived from them; the settings reference is generated from the
descriptions here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

BROKER_URL_ENV = "BROADCASTER_BROKER_URL"

__all__ = ["BROKER_URL_ENV", "Areas"]


class _Service(BaseModel):
    """Who this service is."""

    service_name: str = Field(
        alias="SERVICE_NAME",
        description="Names this service's queue and the `source` of its events.",
    )


class _Broker(BaseModel):
    """Reaching the broker: its URL (or a cluster's), TLS, heartbeats, reconnection, the management API."""

    broker_url: str = Field(
        "amqp://guest:guest@localhost:5672/%2F",
        alias="BROKER_URL",
        repr=False,  # it may carry a password; redacted_broker_url is the safe form
        description="AMQP URL of the broker, or of each node of a cluster (a list, or one string with the "
        f"URLs separated by ';'), tried in that order; the environment variable {BROKER_URL_ENV} wins.",
    )
    heartbeat: int = Field(30, alias="HEARTBEAT", ge=0, description="AMQP heartbeat in seconds (0 turns it off).")
    reconnect_max_delay: float = Field(
        30.0,
        alias="RECONNECT_MAX_DELAY",
        gt=0,
        description="Cap of the exponential back-off between reconnection attempts.",
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
    management_url: str | None = Field(
        None,
        alias="MANAGEMENT_URL",
        repr=False,  # it may carry a password
        description="RabbitMQ management HTTP API for `broadcaster_topology --check/--prune`; "
        "http://<first broker host>:15672 with the broker's credentials if unset.",
    )


class _Names(BaseModel):
    """The exchange and queues: their names and types, instance queues, partitions, unrouted events."""

    exchange: str = Field("signals", alias="EXCHANGE", description="Durable topic exchange events are published to.")
    queue: str | None = Field(None, alias="QUEUE", description="The service queue; defaults to SERVICE_NAME.")
    queue_type: Literal["classic", "quorum"] = Field(
        "classic", alias="QUEUE_TYPE", description="Type of the queues the consumer declares."
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


class _Publishing(BaseModel):
    """The producer side: the publisher's buffer and timeouts, the outbox."""

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


class _Consuming(BaseModel):
    """The daemon: prefetch, retries, limits on incoming messages, concurrency, the inbox, the kill switch."""

    prefetch: int = Field(
        100,
        alias="PREFETCH",
        ge=1,
        le=65535,
        description="Unacknowledged messages a daemon holds at once.",
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
    inbox_retention: float = Field(
        7 * 86400.0, alias="INBOX_RETENTION", ge=0, description="Seconds inbox rows (handled event ids) are kept."
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


class _Security(BaseModel):
    """Signatures, the broker-validated user id, and the seal of the failure headers."""

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


# The last base's keys come first, in the settings reference and in error reports.
class Areas(_Security, _Consuming, _Publishing, _Names, _Broker, _Service):
    """Every key, area by area."""
