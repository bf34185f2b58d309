"""The admin pages of the outbox and the inbox, as a superuser sees them."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.utils import timezone

from broadcaster.admin import REDELIVERY_NOTE
from broadcaster.models import InboxEntry, OutboxEvent

pytestmark = pytest.mark.django_db

OUTBOX = "/admin/broadcaster/outboxevent/"
INBOX = "/admin/broadcaster/inboxentry/"


def outbox_row(state: str) -> OutboxEvent:
    event_id = str(uuid.uuid4())
    row = OutboxEvent.objects.create(
        event_id=event_id,
        event_type=f"orders.{state}",
        headers={"ce-id": event_id, "ce-type": f"orders.{state}"},
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


def test_publish_again_resets_the_chosen_rows(admin_client: Client, rows: dict[str, OutboxEvent]) -> None:
    chosen = [rows["published"].pk, rows["failed"].pk]

    response = admin_client.post(OUTBOX, {"action": "publish_again", "_selected_action": chosen}, follow=True)

    assert response.status_code == 200
    assert "2 event(s) will be published again" in response.content.decode()
    for row in OutboxEvent.objects.filter(pk__in=chosen):
        assert row.published_at is None
        assert row.last_error == ""
    assert OutboxEvent.objects.get(pk=rows["failed"].pk).attempts == 3  # the history stays


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


def test_inbox_list_shows_entries_and_what_deleting_means(admin_client: Client) -> None:
    entry = InboxEntry.objects.create(key="evt-1", event_id="evt-1", event_type="orders.order_placed", source="orders")

    page = admin_client.get(INBOX)

    assert page.status_code == 200
    content = page.content.decode()
    assert entry.event_id in content
    assert "orders.order_placed" in content
    assert REDELIVERY_NOTE in content
    assert admin_client.get(f"{INBOX}add/").status_code == 403
    change = f"{INBOX}{entry.pk}/change/"
    assert 'name="event_id"' not in admin_client.get(change).content.decode()
    assert admin_client.post(change, {"event_id": "other"}).status_code == 403


def test_deleting_inbox_entries_warns_then_deletes(admin_client: Client) -> None:
    old = InboxEntry.objects.create(
        key="evt-old", event_id="evt-old", event_type="orders.order_placed", source="orders"
    )
    selection = {"action": "forget_entries", "_selected_action": [old.pk]}

    confirm = admin_client.post(INBOX, selection)

    assert confirm.status_code == 200
    assert REDELIVERY_NOTE in confirm.content.decode()
    assert InboxEntry.objects.filter(pk=old.pk).exists()
    admin_client.post(INBOX, {**selection, "post": "yes"})
    assert not InboxEntry.objects.filter(pk=old.pk).exists()
    other = InboxEntry.objects.create(
        key="evt-other", event_id="evt-other", event_type="orders.order_placed", source="orders"
    )
    assert REDELIVERY_NOTE in admin_client.get(f"{INBOX}{other.pk}/delete/").content.decode()
