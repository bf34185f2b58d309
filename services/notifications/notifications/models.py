"""Notifications, one per event received."""

from django.db import models


class Notification(models.Model):
    event_type = models.CharField(max_length=100)
    # The event's id: a redelivered event finds its notification already there.
    envelope_id = models.CharField(max_length=64, unique=True)
    # The id of the event that caused this one, when a receiver elsewhere sent it.
    causation_id = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=100)
    recipient = models.CharField(max_length=254)
    message = models.TextField()
    # Which consumer process stored it: several may share the service's queue.
    handled_by = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.recipient}: {self.message}"
