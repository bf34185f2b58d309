"""BROADCASTER is validated lazily, reported by system checks with ids, and never leaks a password."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from broadcaster.checks import check_settings
from broadcaster.exceptions import ConfigurationError
from broadcaster.settings import get_settings, redact_url


def check_ids() -> list[str]:
    return [message.id for message in check_settings() if message.id]


def test_valid_settings_pass_the_checks_and_fill_defaults() -> None:
    assert check_ids() == []
    settings = get_settings()
    assert settings.service_name == "tests"
    assert settings.exchange == "signals"
    assert settings.queue_name == "tests"
    assert settings.max_attempts == len(settings.retry_delays) + 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ["broadcaster.E001"]),
        ("orders", ["broadcaster.E001"]),
        ({}, ["broadcaster.E002"]),
        ({"SERVICE_NAME": "has space"}, ["broadcaster.E002"]),
        ({"SERVICE_NAME": "orders", "BROKER_URL": "http://localhost"}, ["broadcaster.E003"]),
        ({"SERVICE_NAME": "orders", "EXCHNAGE": "typo"}, ["broadcaster.E004"]),
        ({"SERVICE_NAME": "orders", "PREFETCH": 0}, ["broadcaster.E005"]),
        ({"SERVICE_NAME": "orders", "RETRY_DELAYS": [1, -2]}, ["broadcaster.E005"]),
        ({"SERVICE_NAME": "orders", "QUEUE_TYPE": "stream"}, ["broadcaster.E005"]),
    ],
)
def test_misconfiguration_is_reported_by_check_id(settings: Any, value: Any, expected: list[str]) -> None:
    if value is None:
        del settings.BROADCASTER
    else:
        settings.BROADCASTER = value
    assert check_ids() == expected


def test_check_message_names_the_key_at_fault(settings: Any) -> None:
    settings.BROADCASTER = {"SERVICE_NAME": "orders", "PREFETCH": -1}
    [message] = check_settings()
    assert "BROADCASTER['PREFETCH']" in message.msg


# Django 6.1's own field checks ask a MariaDB server for its version (native UUID columns),
# so `check` reaches the mysql alias of the test settings.
@pytest.mark.django_db(databases=["default", "mysql"])
def test_manage_py_check_fails_on_misconfiguration(settings: Any) -> None:
    settings.BROADCASTER = {"BROKER_URL": "amqp://localhost"}
    with pytest.raises(SystemCheckError, match=r"broadcaster\.E002"):
        call_command("check")


def test_first_use_raises_a_clear_error_naming_the_setting(settings: Any) -> None:
    settings.BROADCASTER = {"SERVICE_NAME": "orders", "MAX_HOPS": "many"}
    with pytest.raises(ConfigurationError, match=r"BROADCASTER\['MAX_HOPS'\].*broadcaster\.E005"):
        get_settings()


def test_environment_broker_url_wins(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROADCASTER_BROKER_URL", "amqp://svc:pw@rabbit.internal:5672/prod")
    settings.BROADCASTER = {"SERVICE_NAME": "orders", "BROKER_URL": "amqp://localhost"}
    assert get_settings().broker_url == "amqp://svc:pw@rabbit.internal:5672/prod"


def test_override_settings_is_seen_without_restart(settings: Any) -> None:
    assert get_settings().service_name == "tests"
    settings.BROADCASTER = {"SERVICE_NAME": "billing"}
    assert get_settings().service_name == "billing"


def test_password_never_appears_in_redacted_url_or_check_messages(settings: Any) -> None:
    assert redact_url("amqp://user:s3cret@host:5672/vh") == "amqp://user:***@host:5672/vh"
    assert redact_url("amqp://host/vh") == "amqp://host/vh"
    settings.BROADCASTER = {"SERVICE_NAME": "x", "BROKER_URL": "ftp://user:s3cret@host"}
    messages = check_settings()
    assert messages
    assert all("s3cret" not in f"{m.msg} {m.hint}" for m in messages)
    settings.BROADCASTER = {"SERVICE_NAME": "x", "BROKER_URL": "amqp://user:s3cret@host"}
    assert "s3cret" not in get_settings().redacted_broker_url
