"""No broker password and no signing key ever shows up where operators look.

A BROKER_URL with a distinctive password and signing keys with distinctive secrets go
through everything that reports: logs at DEBUG (pika's included), exceptions and their
reprs and causes for an unreachable broker (publisher, consumer, consume_signals,
relay_outbox), the settings' repr, system checks for invalid settings, and the startup
and stop lines of a real daemon run with a user of its own on the real broker.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.checks import check_settings
from broadcaster.consumer import Consumer
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import BrokerUnavailable, ConfigurationError, FlushTimeout
from broadcaster.models import OutboxEvent
from broadcaster.outbox import stop_web_relay
from broadcaster.publisher import Publisher
from broadcaster.settings import BroadcasterSettings, get_settings
from broadcaster.transport import reset_publisher
from tests.broker_admin import vhost_user
from tests.integration.tls_broker import free_port

PASSWORD = "Pw-7f3a9c-distinctive-broker-password"
# The other nodes of a cluster URL; the second has characters a URL must escape.
PASSWORD_2 = "Pw-2e81-second-node/password#x"
PASSWORD_3 = "Pw-5c0d-third-node-password"
KEY = "sk-current-4d1e-distinctive-signing-key"
OLD_KEY = "sk-previous-92b0-distinctive-signing-key"
SECRETS = (PASSWORD, quote(PASSWORD_2, safe=""), PASSWORD_2, PASSWORD_3, KEY, OLD_KEY)
ROOT = Path(__file__).resolve().parent.parent
SHAPES = ["one URL", "three URLs"]


def unreachable_url(shape: str = "one URL") -> str:
    """BROKER_URL pointing at ports nothing listens on: one URL, or three separated by ';'."""
    if shape == "one URL":
        return f"amqp://svc:{PASSWORD}@127.0.0.1:{free_port()}/%2F"
    # The nodes of one cluster: one user and password (a system check), here one that a URL must escape.
    node = f"amqp://svc:{quote(PASSWORD_2, safe='')}@127.0.0.1:{{}}/%2F"
    return ";".join(node.format(free_port()) for _ in range(3))


def raw_settings(url: str) -> dict[str, Any]:
    return {
        "SERVICE_NAME": "secrets",
        "BROKER_URL": url,
        "SIGNING_KEYS": {"secrets": {"k2": KEY, "k1": OLD_KEY}},
        "SIGNING_KEY_ID": "k2",
        "PUBLISH_TIMEOUT": 0.5,
        "SHUTDOWN_TIMEOUT": 0.5,
        "RECONNECT_MAX_DELAY": 0.2,
    }


def assert_clean(*texts: str) -> None:
    """None of the secrets, in any of `texts`."""
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into: {text[:500]}"


def everything(exc: BaseException) -> str:
    """The message, the repr and the whole traceback with its causes, as a user would see them."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.fixture(params=SHAPES)
def unreachable(
    request: pytest.FixtureRequest, settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """BROADCASTER points at ports nothing listens on (one URL or three); every log record at DEBUG is captured."""
    monkeypatch.delenv("BROADCASTER_BROKER_URL", raising=False)
    settings.BROADCASTER = raw_settings(unreachable_url(request.param))
    caplog.set_level(logging.DEBUG)
    yield
    reset_publisher(timeout=0)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    lines = [f"{record.name} {record.getMessage()} {record.exc_text or ''}" for record in caplog.records]
    return "\n".join([caplog.text, *lines])


@pytest.fixture
def restore_signal_handlers() -> Iterator[None]:
    # consume_signals and relay_outbox install SIGTERM/SIGINT handlers; the test run must get its own back.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_settings_repr_hides_the_password_and_the_keys(unreachable: None) -> None:
    config = get_settings()
    assert_clean(repr(config), str(config), repr(config.signing_keys), config.redacted_broker_url)
    assert config.redacted_broker_url.startswith("amqp://svc:***@127.0.0.1:")
    assert config.redacted_broker_url.count(":***@") == config.broker_url.count(";") + 1
    assert config.signing_key == ("k2", KEY.encode())  # the secret is there, only never shown


def test_an_unreachable_broker_is_reported_without_secrets_by_the_publisher(
    unreachable: None, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = Publisher(get_settings())
    publisher.publish(OutboundMessage(Envelope.new(source="secrets", type="secrets.ping"), b"{}"))
    with pytest.raises(FlushTimeout) as flushed:
        publisher.flush(1)
    with pytest.raises(FlushTimeout) as closed:
        publisher.close(0)
    text = logged(caplog)
    assert "publisher cannot connect to amqp://svc:***@127.0.0.1" in text
    assert any(record.name.startswith("pika") for record in caplog.records), "pika's DEBUG logs were not captured"
    assert_clean(text, everything(flushed.value), everything(closed.value))


def test_an_unreachable_broker_is_reported_without_secrets_by_the_consumer(
    unreachable: None, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BrokerUnavailable) as caught:
        Consumer(get_settings(), {}).run()
    assert "amqp://svc:***@127.0.0.1" in str(caught.value)
    assert_clean(everything(caught.value), logged(caplog))


@pytest.mark.usefixtures("restore_signal_handlers")
def test_consume_signals_reports_an_unreachable_broker_without_secrets(
    unreachable: None, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(CommandError) as caught:
        call_command("consume_signals")
    assert str(caught.value).startswith("consume_signals: cannot connect to the broker at amqp://svc:***@")
    assert_clean(everything(caught.value), logged(caplog))


class Note(BaseModel):
    text: str


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("restore_signal_handlers")
def test_relay_outbox_reports_an_unreachable_broker_without_secrets(
    unreachable: None, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "PUBLISH_MODE": "outbox"}
    noted = Signal()
    broadcaster.broadcast(noted, event="secrets.noted", schema=Note)
    with transaction.atomic():
        noted.send(sender=None, text="hello")
    stop_web_relay()  # the commit woke this process's relay: it may have tried once already
    tried = OutboxEvent.objects.get().attempts
    with pytest.raises(CommandError) as caught:
        call_command("relay_outbox", "--once")
    [row] = OutboxEvent.objects.all()
    assert row.published_at is None
    assert row.attempts == tried + 1
    assert_clean(everything(caught.value), logged(caplog), row.last_error, repr(row.headers))


INVALID_BUT_SAFE = {
    "bad scheme": {"BROKER_URL": f"http://svc:{PASSWORD}@h/%2F;amqp://svc3:{PASSWORD_3}@h/%2F"},
    "unknown key": {"BROKER_ULR": f"amqp://svc:{PASSWORD}@h/%2F;amqp://svc3:{PASSWORD_3}@h/%2F"},
    "bad number": {"PREFETCH": 0},
    "bad queue type": {"QUEUE_TYPE": PASSWORD[:3]},
}


def _problems(settings: Any, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], shape: str) -> str:
    monkeypatch.delenv("BROADCASTER_BROKER_URL", raising=False)
    settings.BROADCASTER = {**raw_settings(unreachable_url(shape)), **change}
    messages = check_settings()
    assert messages, "the invalid settings were not reported"
    with pytest.raises(ConfigurationError) as caught:
        get_settings()
    return "\n".join([*(f"{m.id} {m.msg} {m.hint}" for m in messages), everything(caught.value)])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("change", INVALID_BUT_SAFE.values(), ids=INVALID_BUT_SAFE.keys())
def test_system_checks_for_invalid_settings_show_no_secret(
    settings: Any, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], shape: str
) -> None:
    assert_clean(_problems(settings, monkeypatch, change, shape))


LEAKING = {
    # A check across keys (model validator) fails with the whole BROADCASTER dict as its input.
    "tls without amqps": {"TLS_CA_FILE": "/etc/ssl/ca.pem"},
    "signatures without keys": {"REQUIRE_SIGNATURES": True, "SIGNING_KEYS": {}, "SIGNING_KEY_ID": None},
    "unknown signing key id": {"SIGNING_KEY_ID": "k9"},
    # A key-id level forgotten: the secret itself is the invalid input.
    "keys without key ids": {"SIGNING_KEYS": {"secrets": KEY}, "SIGNING_KEY_ID": None},
    "key secret not a string": {"SIGNING_KEYS": {"secrets": {"k2": [KEY], "k1": OLD_KEY}}},
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("change", LEAKING.values(), ids=LEAKING.keys())
def test_system_checks_for_invalid_cross_key_settings_show_no_secret(
    settings: Any, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], shape: str
) -> None:
    assert_clean(_problems(settings, monkeypatch, change, shape))


def test_a_real_daemon_and_publisher_never_log_the_password(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with vhost_user("secrets", password=PASSWORD) as user:
        caplog.set_level(logging.DEBUG)
        config = BroadcasterSettings.model_validate(raw_settings(user.url()) | {"PUBLISH_TIMEOUT": 5})
        publisher = Publisher(config)
        publisher.publish(OutboundMessage(Envelope.new(source="secrets", type="secrets.ping"), b"{}"))
        try:
            publisher.flush(10)  # connected, signed and confirmed: the password was right
        finally:
            publisher.close(5)
        assert "publisher connected to amqp://" in caplog.text
        assert_clean(logged(caplog))

        log = _run_daemon(user.url(), tmp_path / "daemon.log")
    assert f"broker=amqp://{user.name}:***@127.0.0.1:5672/" in log
    assert "consume_signals: stopped" in log
    assert_clean(log)


def _run_daemon(url: str, log_path: Path) -> str:
    """consume_signals of the tests' settings, as its own process: started, then stopped by SIGTERM."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "BROADCASTER_BROKER_URL": url}
    with log_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "consume_signals"], cwd=ROOT, env=env, stdout=stderr, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 30
        while "consume_signals: started" not in log_path.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, f"consume_signals did not start:\n{log_path.read_text()}"
            time.sleep(0.05)
        assert proc.poll() is None, log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    return log_path.read_text()


@pytest.mark.parametrize("args", [("list",), ("replay",), ("purge", "--yes")])
def test_dead_letters_reports_an_unreachable_broker_without_secrets(
    unreachable: None, caplog: pytest.LogCaptureFixture, args: tuple[str, ...]
) -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("dead_letters", *args, stdout=out, stderr=err)
    assert "cannot connect to the broker at amqp://svc:***@127.0.0.1" in str(caught.value)
    assert_clean(everything(caught.value), logged(caplog), out.getvalue(), err.getvalue())


@pytest.mark.parametrize("args", [(), ("--permissions",)])
def test_broadcaster_topology_prints_no_secret(unreachable: None, args: tuple[str, ...]) -> None:
    out = io.StringIO()
    call_command("broadcaster_topology", *args, stdout=out)
    assert_clean(out.getvalue())
    if not args:
        assert out.getvalue().startswith("vhost /\n")  # the first URL's vhost, nothing after it
