"""The admin pages of the outbox and the inbox, as a superuser sees them."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from broadcaster.admin import REDELIVERY_NOTE
from broadcaster.models import InboxEntry, OutboxEvent
from tests.conftest import Broker

pytestmark = pytest.mark.django_db

OUTBOX = "/admin/broadcaster/outboxevent/"
INBOX = "/admin/broadcaster/inboxentry/"


def outbox_row(state: str) -> OutboxEvent:
    event_id = str(uuid.uuid4())
    row = OutboxEvent.objects.create(
        event_id=event_id,
        event_type=f"orders.{state}",
        headers={"ce-id": event_id, "ce-type": f"orders.{state}", "ce-source": "orders", "ce-specversion": "1.0"},
        body=b'{"order_id": 7}',
    )
    if state == "published":
        row.published_at, row.attempts = timezone.now(), 1
    elif state == "failed":
        row.attempts, row.last_error = 3, "broker unreachable: connection refused"
    row.save()
    return row


@pytest.fixture
def rows() -> dict[str, OutboxEvent]:
    return {state: outbox_row(state) for state in ("pending", "published", "failed")}


def test_outbox_list_shows_every_row_and_filters_by_state(admin_client: Client, rows: dict[str, OutboxEvent]) -> None:
    page = admin_client.get(OUTBOX)

    assert page.status_code == 200
    content = page.content.decode()
    assert all(row.event_id in content for row in rows.values())
    assert "broker unreachable" in content
    failed = admin_client.get(OUTBOX, {"state": "failed"}).content.decode()
    assert rows["failed"].event_id in failed
    assert rows["pending"].event_id not in failed
    assert rows["published"].event_id not in failed
    pending = admin_client.get(OUTBOX, {"state": "pending"}).content.decode()
    assert rows["pending"].event_id in pending
    assert rows["failed"].event_id not in pending


def test_publish_again_asks_first_and_keeps_the_evidence(admin_client: Client, rows: dict[str, OutboxEvent]) -> None:
    chosen = [rows["published"].pk, rows["failed"].pk]

    confirm = admin_client.post(OUTBOX, {"action": "publish_again", "_selected_action": chosen})

    assert confirm.status_code == 200
    content = confirm.content.decode()
    assert "Publish these events again?" in content
    assert "broker unreachable: connection refused" in content  # the evidence, shown before anything changes
    assert 'name="post" value="yes"' in content
    failed = OutboxEvent.objects.get(pk=rows["failed"].pk)
    assert failed.last_error == "broker unreachable: connection refused"
    assert OutboxEvent.objects.get(pk=rows["published"].pk).published_at is not None


def test_publish_again_publishes_now_and_reports_it(
    admin_client: Client, rows: dict[str, OutboxEvent], broker: Broker
) -> None:
    tap = broker.tap()
    chosen = [rows["published"].pk, rows["failed"].pk]

    response = admin_client.post(
        OUTBOX, {"action": "publish_again", "_selected_action": chosen, "post": "yes"}, follow=True
    )

    assert "2 event(s) published again; the broker confirmed them." in response.content.decode()
    assert sorted(m.headers["ce-id"] for m in broker.drain(tap)) == sorted(
        [rows["published"].event_id, rows["failed"].event_id]
    )
    failed = OutboxEvent.objects.get(pk=rows["failed"].pk)
    assert failed.published_at is not None
    assert failed.last_error == ""
    assert failed.attempts == 4


def test_publish_again_over_a_dead_broker_names_the_cause_and_keeps_published_at(
    admin_client: Client, rows: dict[str, OutboxEvent], settings: Any
) -> None:
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "BROKER_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
        "PUBLISH_TIMEOUT": 1,
    }
    published = rows["published"]

    response = admin_client.post(
        OUTBOX, {"action": "publish_again", "_selected_action": [published.pk], "post": "yes"}, follow=True
    )

    content = response.content.decode()
    assert "The broker did not take the 1 event(s)" in content
    row = OutboxEvent.objects.get(pk=published.pk)
    assert row.published_at == published.published_at  # the evidence stays
    assert row.attempts == 2
    assert "cannot connect to amqp://guest:***@127.0.0.1:1/" in row.last_error
    assert "still unconfirmed" in row.last_error  # after the cause, not instead of it
    assert row.last_error.index("cannot connect") < row.last_error.index("still unconfirmed")


def test_outbox_list_shows_state_age_seconds_and_zone(admin_client: Client, rows: dict[str, OutboxEvent]) -> None:
    old = rows["pending"]
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    content = admin_client.get(OUTBOX).content.decode()

    assert re.search(r"pending 5m \d\ds", content)
    assert ">failed<" in content
    assert ">published<" in content
    stamp = timezone.localtime(OutboxEvent.objects.get(pk=rows["published"].pk).published_at)
    assert stamp.strftime("%Y-%m-%d %H:%M:%S %Z") in content
    assert "a relay must run" in content  # a row has waited over a minute
    assert f"?created_at__year={stamp.year}" in content  # the date drill-down


def test_outbox_payload_is_searchable(admin_client: Client) -> None:
    rows = []
    # Fixed ids: Django splits '"order_id": 42' into two terms, and a random id holding "42"
    # would match the second one.
    for order, event_id in ((42, "00000000-0000-4000-8000-000000000001"), (7, "00000000-0000-4000-8000-000000000002")):
        rows.append(
            OutboxEvent.objects.create(
                event_id=event_id,
                event_type="orders.order_saved",
                headers={"ce-id": event_id, "ce-type": "orders.order_saved"},
                body=f'{{"order_id": {order}, "email": "buyer{order}@example.com"}}'.encode(),
            )
        )

    for term in ("buyer42", '"order_id": 42'):
        content = admin_client.get(OUTBOX, {"q": term}).content.decode()

        assert rows[0].event_id in content, term
        assert rows[1].event_id not in content, term


def test_outbox_rows_cannot_be_added_edited_or_deleted(admin_client: Client, rows: dict[str, OutboxEvent]) -> None:
    row = rows["pending"]
    change = f"{OUTBOX}{row.pk}/change/"

    page = admin_client.get(change)

    assert page.status_code == 200
    content = page.content.decode()
    assert "&quot;order_id&quot;: 7" in content  # the payload, shown (escaped)
    assert 'name="event_type"' not in content  # and no input to change anything
    assert 'name="_save"' not in content
    assert admin_client.post(change, {"event_type": "forged"}).status_code == 403
    assert OutboxEvent.objects.get(pk=row.pk).event_type == "orders.pending"
    assert admin_client.get(f"{OUTBOX}add/").status_code == 403
    assert admin_client.get(f"{OUTBOX}{row.pk}/delete/").status_code == 403


def inbox_entry(event_id: str) -> InboxEntry:
    return InboxEntry.objects.create(
        key=InboxEntry.key_for("orders", event_id), event_id=event_id, event_type="orders.order_placed", source="orders"
    )


def test_inbox_list_shows_entries_and_what_deleting_means(admin_client: Client) -> None:
    entry = inbox_entry("evt-1")

    page = admin_client.get(INBOX)

    assert page.status_code == 200
    content = page.content.decode()
    assert entry.event_id in content
    assert "orders.order_placed" in content
    assert REDELIVERY_NOTE in content
    title = re.search(r"<title>(.*?)</title>", content, re.S)
    assert title is not None
    assert "receivers" not in title.group(1)  # the note is not the page's subtitle
    assert f"<h2>{REDELIVERY_NOTE}</h2>" not in content
    assert admin_client.get(f"{INBOX}add/").status_code == 403
    change = f"{INBOX}{entry.pk}/change/"
    assert 'name="event_id"' not in admin_client.get(change).content.decode()
    assert admin_client.post(change, {"event_id": "other"}).status_code == 403


def test_bulk_delete_posts_what_the_confirmation_page_sends(admin_client: Client) -> None:
    old, kept = inbox_entry("evt-old"), inbox_entry("evt-kept")
    selection = {"action": "delete_selected", "_selected_action": [old.pk]}

    confirm = admin_client.post(INBOX, selection)

    assert confirm.status_code == 200
    content = confirm.content.decode()
    assert REDELIVERY_NOTE in content
    assert '<input type="hidden" name="action" value="delete_selected">' in content
    assert InboxEntry.objects.filter(pk=old.pk).exists()
    done = admin_client.post(INBOX, {**selection, "post": "yes"}, follow=True)
    assert "No action selected" not in done.content.decode()
    assert not InboxEntry.objects.filter(pk=old.pk).exists()
    assert InboxEntry.objects.filter(pk=kept.pk).exists()


def test_deleting_one_entry_returns_to_the_inbox_list(admin_client: Client) -> None:
    entry = inbox_entry("evt-one")
    delete = f"{INBOX}{entry.pk}/delete/"
    assert REDELIVERY_NOTE in admin_client.get(delete).content.decode()

    response = admin_client.post(delete, {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == INBOX
    assert not InboxEntry.objects.filter(pk=entry.pk).exists()
