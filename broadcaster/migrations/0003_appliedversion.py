"""The stale-event guard of ordered subscriptions (subscribe(..., version_field=...))."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("broadcaster", "0002_inbox_key")]

    operations = [
        migrations.CreateModel(
            name="AppliedVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "key",
                    models.CharField(
                        help_text="SHA-256 of the scope and the partition key.", max_length=64, unique=True
                    ),
                ),
                ("scope", models.CharField(help_text="The event type the version belongs to.", max_length=255)),
                ("partition_key", models.TextField()),
                (
                    "version",
                    models.CharField(
                        help_text="The version, encoded so that text order is version order.", max_length=64
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
    ]
