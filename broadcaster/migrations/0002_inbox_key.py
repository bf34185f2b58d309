"""Inbox rows keyed on a digest of (source, id): a CloudEvents id may be longer than 64 characters."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import migrations, models


def _fill_keys(apps: Any, schema_editor: Any) -> None:
    entries = apps.get_model("broadcaster", "InboxEntry")
    for entry in entries.objects.using(schema_editor.connection.alias).only("id", "event_id", "source").iterator():
        text = f"{len(entry.source)}:{entry.source}{entry.event_id}".encode("utf-8", "surrogatepass")
        entry.key = hashlib.sha256(text).hexdigest()
        entry.save(update_fields=["key"])


class Migration(migrations.Migration):
    dependencies = [("broadcaster", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="inboxentry",
            name="key",
            field=models.CharField(max_length=64, null=True, help_text="SHA-256 of the source and the id."),
        ),
        migrations.RunPython(_fill_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="inboxentry",
            name="key",
            field=models.CharField(max_length=64, unique=True, help_text="SHA-256 of the source and the id."),
        ),
        migrations.AlterField(model_name="inboxentry", name="event_id", field=models.TextField()),
        migrations.AlterField(model_name="inboxentry", name="source", field=models.TextField()),
    ]
