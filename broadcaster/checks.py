"""System checks: misconfiguration is reported by `manage.py check`, with ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core.checks import CheckMessage, Error, Warning
from django.db import models
from django.db.models.signals import post_delete, pre_delete

from broadcaster.registry import broadcasts
from broadcaster.settings import validate

__all__ = ["check_database_deletes", "check_settings"]


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.E001-E005: the BROADCASTER setting is missing or invalid."""
    _, problems = validate()
    return [
        Error(
            problem.message,
            hint=_HINTS.get(problem.check_id),
            obj="settings.BROADCASTER",
            id=problem.check_id,
        )
        for problem in problems
    ]


_HINTS = {
    "broadcaster.E001": 'Add BROADCASTER = {"SERVICE_NAME": "orders"} to your settings.',
    "broadcaster.E002": "SERVICE_NAME names this service's queue and the source of its events.",
    "broadcaster.E003": "Use amqp://user:password@host:5672/vhost (or amqps://), or set BROADCASTER_BROKER_URL.",
    "broadcaster.E004": "See the settings reference in the README for the keys BROADCASTER accepts.",
    "broadcaster.W001": "Use on_delete=models.CASCADE on that foreign key (Django then deletes, and signals, row by "
    "row), or broadcast the deletion from the parent model's signal.",
}


def check_database_deletes(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.W001: a broadcast delete signal's sender can be deleted by the database alone.

    A foreign key with ``on_delete=DB_CASCADE`` (Django 6.1) deletes rows inside the
    database, and Django sends no pre_delete or post_delete for them: those deletions
    would never be published. Reads model metadata only; never opens a connection.
    """
    return [
        _unsignalled_delete(signal_name, event, model, field)
        for signal_name, event, model in _broadcast_deletes()
        for field in model._meta.fields
        if isinstance(field, models.ForeignKey) and _deleted_by_database(field)
    ]


def _unsignalled_delete(
    signal_name: str, event: str, model: type[models.Model], field: models.ForeignKey[Any, Any]
) -> Warning:
    parent = field.remote_field.model
    parent_label = parent if isinstance(parent, str) else parent._meta.label
    return Warning(
        f"{model._meta.label} is broadcast on {signal_name} as {event!r}, but deleting a {parent_label} "
        f"deletes it in the database ({field.name}: on_delete={field.remote_field.on_delete}), which sends "
        "no signal: those deletions are not published.",
        hint=_HINTS["broadcaster.W001"],
        obj=field,
        id="broadcaster.W001",
    )


def _broadcast_deletes() -> list[tuple[str, str, type[models.Model]]]:
    """(signal name, event, model) for each model whose deletions a broadcast publishes."""
    names = {id(pre_delete): "pre_delete", id(post_delete): "post_delete"}
    found = []
    for receiver in broadcasts():
        name = names.get(id(receiver.signal))
        if name is None:
            continue
        found += [(name, receiver.event, model) for model in _models_of(receiver.sender)]
    return found


def _models_of(sender: object) -> list[type[models.Model]]:
    if sender is None:  # every model's deletions
        return list(apps.get_models())
    if isinstance(sender, str):
        try:
            return [apps.get_model(sender)]
        except (LookupError, ValueError):
            return []
    return [sender] if isinstance(sender, type) and issubclass(sender, models.Model) else []


def _deleted_by_database(field: models.Field[Any, Any]) -> bool:
    """Whether `field` is a foreign key whose target's deletion deletes this row in the database."""
    db_cascade = getattr(models, "DB_CASCADE", None)  # Django 6.1 and later
    return (
        db_cascade is not None and isinstance(field, models.ForeignKey) and field.remote_field.on_delete is db_cascade
    )
