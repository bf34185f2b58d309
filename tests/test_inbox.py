"""With inbox=True a redelivered event runs its receivers' database work once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError
from django.utils import timezone
from pydantic import BaseModel

import broadcaster
from broadcaster import inbox
from broadcaster.dispatch import Action, dispatch
from broadcaster.envelope import Envelope, properties_for
from broadcaster.models import InboxEntry
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True)


class Published(BaseModel):
    title: str


def deliver(envelope: Envelope, attempt: int = 1) -> Action:
    body = b'{"title": "Inbox"}'
    outcome = dispatch(
        properties_for(envelope), body, settings=get_settings(), subscriptions=subscriptions(), attempt=attempt
    )
    return outcome.action


@pytest.fixture
def envelope() -> Envelope:
    local = broadcaster.subscribe("cms.published", schema=Published, inbox=True)
    local.connect(lambda title, **_: Article.objects.create(title=title), weak=False)
    return Envelope.new(source="cms", type="cms.published")


def test_redelivery_does_not_repeat_the_work(envelope: Envelope) -> None:
    assert deliver(envelope) is Action.ACK
    assert deliver(envelope, attempt=2) is Action.ACK
    assert Article.objects.filter(title="Inbox").count() == 1
    assert InboxEntry.objects.get().event_id == envelope.id


def test_failed_receivers_roll_back_the_inbox_row_so_the_retry_runs(envelope: Envelope) -> None:
    failures = [RuntimeError("first try fails")]

    def flaky(**_: object) -> None:
        if failures:
            raise failures.pop()

    subscriptions()["cms.published"].signal.connect(flaky, weak=False)
    assert deliver(envelope) is Action.RETRY
    assert not Article.objects.exists()  # the first receiver's row rolled back with it
    assert not InboxEntry.objects.exists()
    assert deliver(envelope, attempt=2) is Action.ACK
    assert Article.objects.count() == 1


def test_other_events_are_not_affected(envelope: Envelope) -> None:
    deliver(envelope)
    deliver(Envelope.new(source="cms", type="cms.published"))
    assert Article.objects.count() == 2


def test_old_rows_are_pruned(settings: Any, envelope: Envelope) -> None:
    deliver(envelope)
    InboxEntry.objects.update(handled_at=timezone.now() - timedelta(days=8))
    deliver(Envelope.new(source="cms", type="cms.published"))
    assert inbox.prune(get_settings().inbox_retention) == 1
    assert InboxEntry.objects.count() == 1


@pytest.mark.parametrize("length", [65, 255, 100_000])
def test_an_id_of_any_length_is_recorded_once(length: int) -> None:
    local = broadcaster.subscribe("cms.published", schema=Published, inbox=True)
    local.connect(lambda title, **_: Article.objects.create(title=title), weak=False)
    long = Envelope(id="i" * length, source="cms", type="cms.published", time=timezone.now(), schema_version="1.0")
    assert deliver(long) is Action.ACK  # not a database error retried as if the receiver failed
    assert deliver(long, attempt=2) is Action.ACK
    assert Article.objects.count() == 1
    assert InboxEntry.objects.get().event_id == "i" * length


def test_the_same_id_from_another_source_is_another_event() -> None:
    local = broadcaster.subscribe("cms.published", schema=Published, inbox=True)
    local.connect(lambda title, **_: Article.objects.create(title=title), weak=False)
    now = timezone.now()
    deliver(Envelope(id="same", source="cms", type="cms.published", time=now, schema_version="1.0"))
    deliver(Envelope(id="same", source="intruder", type="cms.published", time=now, schema_version="1.0"))
    assert Article.objects.count() == 2  # an injected event cannot pre-empt the genuine one


def test_a_database_error_at_prune_time_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    from broadcaster.workers import Housekeeping

    broadcaster.subscribe("cms.published", schema=Published, inbox=True)
    housekeeping = Housekeeping(get_settings(), subscriptions())
    original = inbox.prune

    def broken(retention: float, using: str = "default") -> int:
        raise DatabaseError("server closed the connection unexpectedly")

    inbox.prune = broken  # type: ignore[assignment]
    try:
        housekeeping.before_delivery()  # must not raise
    finally:
        inbox.prune = original  # type: ignore[assignment]
    assert "inbox prune failed" in caplog.text
    assert "server closed the connection unexpectedly" in caplog.text
    InboxEntry.objects.create(key="k", event_id="old", event_type="cms.published", source="cms")
    InboxEntry.objects.update(handled_at=timezone.now() - timedelta(days=30))
    housekeeping._next_prune = 0.0  # the retry comes round (after a minute in a real daemon)
    housekeeping.before_delivery()
    assert not InboxEntry.objects.exists()
