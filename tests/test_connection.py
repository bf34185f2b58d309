"""Connection parameters: heartbeat, names operators can read, TLS, and one-line errors."""

from __future__ import annotations

import ssl
from typing import Any

import pika
import pika.exceptions

from broadcaster.connection import backoff, describe, describe_redacted, parameters
from broadcaster.settings import get_settings


def test_parameters_carry_the_settings(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "HEARTBEAT": 7}
    params = parameters(get_settings(), "consumer")
    assert params.heartbeat == 7
    assert params.client_properties["connection_name"].startswith("tests consumer ")
    assert params.ssl_options is None


def test_amqps_verifies_the_broker_by_default(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": "amqps://u:p@rabbit.internal:5671/%2F"}
    params = parameters(get_settings(), "publisher")
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert params.ssl_options.server_hostname == "rabbit.internal"
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "TLS_SERVER_NAME": "rabbit.example",
        "TLS_VERIFY": False,
    }
    params = parameters(get_settings(), "publisher")
    assert params.ssl_options.server_hostname == "rabbit.example"
    assert params.ssl_options.context.verify_mode == ssl.CERT_NONE


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    first = [backoff(1, 30) for _ in range(200)]
    later = [backoff(8, 30) for _ in range(200)]
    assert all(0.25 <= delay <= 0.5 for delay in first)
    assert all(15 <= delay <= 30 for delay in later)
    assert len(set(later)) > 1  # jittered, so instances do not reconnect in lockstep


def test_the_relay_backs_off_from_its_poll_interval_with_the_same_formula(settings: Any) -> None:
    from broadcaster.outbox import _retry_in

    settings.BROADCASTER = {**settings.BROADCASTER, "OUTBOX_POLL_INTERVAL": 2.0}
    assert all(2.0 <= _retry_in(1) <= 4.0 for _ in range(50))
    assert all(30.0 <= _retry_in(10) <= 60.0 for _ in range(50))  # capped at 30 poll intervals


def test_a_described_error_never_carries_the_broker_password(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": "amqp://guest:s3cr%2Fet@127.0.0.1:1/%2F"}
    error = ConnectionError("login as guest:s3cr/et refused; guest:s3cr%2Fet")
    assert describe_redacted(error, get_settings()) == "ConnectionError: login as guest:*** refused; guest:***"


def test_errors_are_described_on_one_line_with_their_detail() -> None:
    try:
        pika.BlockingConnection(pika.URLParameters("amqp://g:g@127.0.0.1:1/%2F"))
    except pika.exceptions.AMQPConnectionError as exc:
        text = describe(exc)
    assert text.startswith("AMQPConnectionError")
    assert "Connection refused" in text
    assert text.count("AMQPConnectionError") == 1
    assert describe(ValueError("bad")) == "ValueError: bad"
