"""Tables of the outbox (events waiting for the broker) and the inbox (events handled)."""

from __future__ import annotations

import hashlib

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
    """An event whose receivers' work committed; a redelivery of it is skipped.

    CloudEvents ids are unique per source and may be any non-empty string, so the row is
    keyed on a digest of both (`key_for()`): an id of any length fits, and an event
    injected under another source cannot pre-empt a genuine one.
    """

    key = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the source and the id.")
    event_id = models.TextField()
    event_type = models.CharField(max_length=255)
    source = models.TextField()
    handled_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "inbox entries"

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id[:100]}"

    @staticmethod
    def key_for(source: str, event_id: str) -> str:
        """The unique key of an event: a digest of its source and id, unambiguous by length prefix."""
        text = f"{len(source)}:{source}{event_id}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(text).hexdigest()


class AppliedVersion(models.Model):
    """The newest version of one entity an ordered subscription applied (its stale-event guard).

    Written in the receivers' transaction, like the inbox: an event whose version is not
    newer than the one recorded for its partition key is skipped.
    """

    key = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the scope and the partition key.")
    scope = models.CharField(max_length=255, help_text="The event type the version belongs to.")
    partition_key = models.TextField()
    version = models.CharField(max_length=64, help_text="The version, encoded so that text order is version order.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.scope} {self.partition_key[:100]} @ {self.version}"


class DeadLetter(models.Model):
    """No table: the dead letters live in the broker. This model carries the admin page and its permission.

    `manage_dead_letters` lets a staff user see, replay and purge this service's dead
    letters in the admin (superusers have it); the usual add/change/delete/view
    permissions do not exist for it.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = (("manage_dead_letters", "Can see, replay and purge dead letters"),)
