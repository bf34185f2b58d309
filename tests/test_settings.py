"""BROADCASTER is validated lazily, reported by system checks (ids: test_checks.py), and never leaks a password."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from broadcaster.brokerurl import redact_url
from broadcaster.checks import check_settings
from broadcaster.exceptions import ConfigurationError
from broadcaster.settings import get_settings


def check_ids() -> list[str]:
    return [message.id for message in check_settings() if message.id]


def test_valid_settings_pass_the_checks_and_fill_defaults() -> None:
    assert check_ids() == []
    settings = get_settings()
    assert settings.service_name == "tests"
    assert settings.exchange == "signals"
    assert settings.queue_name == "tests"
    assert settings.max_attempts == len(settings.retry_delays) + 1


def test_check_message_names_the_key_at_fault(settings: Any) -> None:
    settings.BROADCASTER = {"SERVICE_NAME": "orders", "PREFETCH": -1}
    [message] = check_settings()
    assert "BROADCASTER['PREFETCH']" in message.msg


@pytest.mark.usefixtures("without_mysql")
def test_manage_py_check_fails_on_misconfiguration(settings: Any) -> None:
    settings.BROADCASTER = {"BROKER_URL": "amqp://localhost"}
    with pytest.raises(SystemCheckError, match=r"broadcaster\.E002"):
        call_command("check")


def test_first_use_raises_a_clear_error_naming_the_setting(settings: Any) -> None:
    settings.BROADCASTER = {"SERVICE_NAME": "orders", "MAX_HOPS": "many"}
    with pytest.raises(ConfigurationError, match=r"BROADCASTER\['MAX_HOPS'\].*broadcaster\.E109"):
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
