"""Tables of the outbox (events waiting for the broker) and the inbox (events handled)."""

from __future__ import annotations

from django.db import models


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it describes.

    A relay publishes unpublished rows in id order and stamps `published_at` once the
    broker confirmed them; published rows are pruned after OUTBOX_RETENTION.
    """

    event_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=255)
    headers = models.JSONField(help_text="The CloudEvents ce- headers of the message.")
    body = models.BinaryField(help_text="The payload JSON.")
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ("id",)
        # Declared, so that JSONField's system check need not ask each database (Django
        # 6.1 runs model checks against every alias, and SQLite or MySQL would have to
        # connect to answer): `manage.py check` stays free of database access.
        required_db_features = ("supports_json_field",)
        indexes = (
            # The relay's query: unpublished rows in id order. A partial index keeps it
            # small however many published rows the retention keeps.
            models.Index(
                fields=["id"], condition=models.Q(published_at__isnull=True), name="broadcaster_outbox_pending"
            ),
            models.Index(fields=["published_at"], name="broadcaster_outbox_published"),
        )

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class InboxEntry(models.Model):
    """An event id whose receivers' work committed; a redelivery of it is skipped."""

    event_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=255)
    source = models.CharField(max_length=255)
    handled_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "inbox entries"

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
