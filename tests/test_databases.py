"""The outbox, the relay's ordering and the inbox on every supported database: PostgreSQL, SQLite, MariaDB."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connections, transaction

from broadcaster import inbox
from broadcaster.envelope import Envelope
from broadcaster.exceptions import ConfigurationError, PublishError
from broadcaster.models import InboxEntry, OutboxEvent
from broadcaster.outbox import Relay
from broadcaster.settings import get_settings
from tests.conftest import Broker
from tests.test_outbox import outbox_row, titles
from tests.testapp.models import Article

DATABASES = ["default", "sqlite", "mysql"]
pytestmark = pytest.mark.django_db(transaction=True, databases=DATABASES)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("using", DATABASES)
def test_outbox_rows_commit_with_the_change_and_leave_in_order(outbox_mode: Broker, using: str) -> None:
    tap = outbox_mode.tap()
    with pytest.raises(RuntimeError):
        _write_then_fail(using)
    for n in range(120):
        Article.objects.using(using).create(title=f"a{n}")
    relay = Relay(using=using)  # beside the web process's relay thread, woken by each commit
    try:
        deadline = time.monotonic() + 20
        while OutboxEvent.objects.using(using).filter(published_at__isnull=True).exists():
            assert time.monotonic() < deadline, "the rows were not published"
            relay.run_once()
            time.sleep(0.05)
    finally:
        relay.close()
    assert titles(outbox_mode, tap) == [f"a{n}" for n in range(120)]  # each once, in commit order


@pytest.mark.parametrize("using", DATABASES)
def test_concurrent_relays_publish_each_row_once_in_order(outbox_mode: Broker, using: str) -> None:
    tap = outbox_mode.tap()
    OutboxEvent.objects.using(using).bulk_create([outbox_row(n) for n in range(600)])
    relays = [Relay(get_settings().model_copy(update={"outbox_batch": 20}), using=using) for _ in range(3)]
    waits: list[int] = []
    threads = [threading.Thread(target=_drain_and_close, args=(relay, waits)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert titles(outbox_mode, tap) == [f"r{n}" for n in range(600)]  # each row once, in order
    assert sum(relay.published for relay in relays) == 600
    assert waits, "the relays never met: nothing was tested"


@pytest.mark.parametrize(("using", "isolation"), [("default", None), ("mysql", None), ("mysql", "REPEATABLE READ")])
def test_a_relay_waiting_on_the_broker_blocks_no_insert(outbox_mode: Broker, using: str, isolation: str | None) -> None:
    OutboxEvent.objects.using(using).bulk_create([outbox_row(n) for n in range(5)])
    down = get_settings().model_copy(
        update={"broker_url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F", "publish_timeout": 3.0}
    )
    relay = Relay(down, using=using)
    failed: list[BaseException] = []
    thread = threading.Thread(target=_run_once_expecting_failure, args=(relay, failed, isolation))
    thread.start()
    time.sleep(0.5)  # the relay holds its batch's rows and waits for confirms
    started = time.monotonic()
    Article.objects.using(using).create(title="written meanwhile")  # one more outbox row, and an article
    took = time.monotonic() - started
    thread.join(10)
    assert took < 1.0, f"an insert waited {took:.1f} s for the relay"
    assert [type(exc).__name__ for exc in failed] == ["FlushTimeout"]
    assert OutboxEvent.objects.using(using).filter(published_at__isnull=True).count() == 6


def test_a_mysql_relay_releases_its_session_lock_whatever_happens(outbox_mode: Broker) -> None:
    OutboxEvent.objects.using("mysql").bulk_create([outbox_row(0)])
    down = get_settings().model_copy(
        update={"broker_url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F", "publish_timeout": 0.2}
    )
    relay = Relay(down, using="mysql")
    with pytest.raises(PublishError):
        relay.run_once()
    relay.close()
    with connections["mysql"].cursor() as cursor:
        cursor.execute("SELECT IS_FREE_LOCK(%s)", [f"broadcaster.outbox.{connections['mysql'].settings_dict['NAME']}"])
        assert cursor.fetchone() == (1,)


def test_old_mariadb_is_a_check_error_and_the_relay_stops(
    settings: Any, outbox_mode: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    mysql = connections["mysql"]
    assert not [e for e in run_checks(databases=["mysql"]) if e.id == "broadcaster.E011"]
    monkeypatch.setitem(mysql.__dict__, "mysql_version", (10, 5, 27))  # before SKIP LOCKED
    [error] = [e for e in run_checks(databases=["default", "sqlite", "mysql"]) if e.id == "broadcaster.E011"]
    assert "'mysql'" in error.msg
    assert "MariaDB 10.5.27" in error.msg
    assert not [e for e in run_checks() if e.id == "broadcaster.E011"], "a plain check must not connect"
    with pytest.raises(ConfigurationError, match=r"broadcaster\.E011"):
        Relay(using="mysql").run_once()
    settings.BROADCASTER = {**settings.BROADCASTER, "PUBLISH_MODE": "on_commit"}
    assert not [e for e in run_checks(databases=["mysql"]) if e.id == "broadcaster.E011"]


@pytest.mark.parametrize("using", DATABASES)
def test_inbox_runs_the_work_once_and_rolls_back_with_it(using: str) -> None:
    envelope = Envelope.new(source="cms", type="cms.published")

    def work() -> None:
        Article.objects.using(using).create(title="once")

    def failing() -> None:
        work()
        raise RuntimeError("receiver failed")

    with pytest.raises(RuntimeError):
        inbox.run_once(envelope, failing, using=using)
    assert not InboxEntry.objects.using(using).exists()  # rolled back with the work
    assert inbox.run_once(envelope, work, using=using) is True
    assert inbox.run_once(envelope, work, using=using) is False
    assert Article.objects.using(using).filter(title="once").count() == 1


@pytest.mark.parametrize("using", ["default", "mysql"])
def test_inbox_lets_one_of_two_concurrent_deliveries_do_the_work(using: str) -> None:
    envelope = Envelope.new(source="cms", type="cms.published")
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def deliver() -> None:
        def work() -> None:
            Article.objects.using(using).create(title="raced")
            time.sleep(0.3)  # the other delivery's insert of the same id waits on ours

        barrier.wait()
        try:
            results.append(inbox.run_once(envelope, work, using=using))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [False, True]
    assert Article.objects.using(using).filter(title="raced").count() == 1


def _write_then_fail(using: str) -> None:
    with transaction.atomic(using=using):
        Article.objects.using(using).create(title="rolled back")
        raise RuntimeError


def _drain_and_close(relay: Relay, waits: list[int]) -> None:
    try:
        while OutboxEvent.objects.using(relay.using).filter(published_at__isnull=True).exists():
            relay.run_once()
            if relay.blocked:  # another relay had the turn
                waits.append(1)
                time.sleep(0.01)
    finally:
        relay.close()
        connections.close_all()


def _run_once_expecting_failure(relay: Relay, failed: list[BaseException], isolation: str | None = None) -> None:
    try:
        if isolation is not None:  # a project that set this level: InnoDB would lock the gap after the rows
            with connections[relay.using].cursor() as cursor:
                cursor.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")
        relay.run_once()
    except PublishError as exc:
        failed.append(exc)
    finally:
        relay.close()
        connections.close_all()
