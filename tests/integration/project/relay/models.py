"""What an inbox receiver does to the database: one Effect row per run (no unique key on purpose)."""

from django.db import models


class Effect(models.Model):
    n = models.IntegerField()
    event_id = models.CharField(max_length=64)
