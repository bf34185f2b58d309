"""System checks: misconfiguration is reported by `manage.py check`, with ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.db import models
from django.db.models.signals import post_delete, pre_delete
from django.utils.module_loading import import_string

from broadcaster.registry import broadcasts
from broadcaster.relaylock import skip_locked_problem
from broadcaster.settings import validate

__all__ = [
    "ERROR_REPORTS_ID",
    "check_database_deletes",
    "check_error_reports",
    "check_outbox_database",
    "check_schemas",
    "check_settings",
]

ERROR_REPORTS_ID = "broadcaster.W001"


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.E001-E005, E020-E021: the BROADCASTER setting is missing or invalid; W020: see below."""
    settings, problems = validate()
    if settings is not None and len(settings.broker_urls) > 1 and settings.queue_type == "classic":
        return [_CLASSIC_ON_CLUSTER]
    return [
        Error(
            problem.message,
            hint=_HINTS.get(problem.check_id),
            obj="settings.BROADCASTER",
            id=problem.check_id,
        )
        for problem in problems
    ]


def check_schemas(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.E010: a registered schema sends a form its own validation rejects."""
    from broadcaster import payload, registry  # noqa: PLC0415 - the registry is filled once apps are ready
    from broadcaster.exceptions import ContractError  # noqa: PLC0415

    schemas = {item.schema for item in registry.broadcasts()} | {s.schema for s in registry.subscriptions().values()}
    errors: list[CheckMessage] = []
    for schema in sorted(schemas, key=lambda cls: cls.__qualname__):
        try:
            problems = payload.serialization_problems(schema)
        except ContractError:
            continue  # no JSON Schema to compare: `broadcaster_contract` reports that
        errors += [
            Error(
                f"{schema.__qualname__} sends what its own validation rejects (read -> sent): {problem}",
                hint=(
                    "Make the serializer's declared return type one the field accepts when the message is read "
                    "(PlainSerializer(..., return_type=...)); a Json[...] field needs round_trip serialization. "
                    "If the comparison is wrong for this schema, add broadcaster.E010 to SILENCED_SYSTEM_CHECKS."
                ),
                obj=schema,
                id="broadcaster.E010",
            )
            for problem in problems
        ]
    return errors


def check_error_reports(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.W001: Django's error reports would show the broker password (or a key).

    Quiet once DEFAULT_EXCEPTION_REPORTER_FILTER is broadcaster.reporting's filter or a
    subclass of it, or when BROADCASTER holds no password and no key.
    """
    # Imported here: Django's error reporting is not needed to load the app.
    from broadcaster import reporting  # noqa: PLC0415

    path = settings.DEFAULT_EXCEPTION_REPORTER_FILTER
    try:
        configured = import_string(path)
    except ImportError:
        configured = None  # Django reports its own setting when it uses it
    safe = isinstance(configured, type) and issubclass(configured, reporting.SafeExceptionReporterFilter)
    if safe or not reporting.secrets():
        return []
    return [
        Warning(
            "the DEBUG page and the error mails to ADMINS would show the broker password: Django hides "
            "settings by name only, and BROADCASTER['BROKER_URL'] carries its password in the value",
            hint=_HINTS[ERROR_REPORTS_ID],
            obj="settings.DEFAULT_EXCEPTION_REPORTER_FILTER",
            id=ERROR_REPORTS_ID,
        )
    ]


def check_outbox_database(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """broadcaster.E011: in outbox mode, a database cannot run the relay's SKIP LOCKED query.

    Registered with the database tag: it connects, so it runs only for the databases
    Django names (``migrate``, ``check --database``), never in a plain ``manage.py check``.
    """
    settings, _ = validate()
    if not databases or settings is None or settings.publish_mode != "outbox":
        return []
    return [
        Error(problem, hint=_HINTS["broadcaster.E011"], obj=f"settings.DATABASES[{alias!r}]", id="broadcaster.E011")
        for alias in databases
        if (problem := skip_locked_problem(alias)) is not None
    ]


# A classic queue lives on one node: while that node is down its service consumes nothing.
_CLASSIC_ON_CLUSTER = Warning(
    'BROADCASTER["BROKER_URL"] lists several nodes but QUEUE_TYPE is "classic": a classic queue lives on '
    "one node, and its messages are out of reach while that node is down",
    hint='Set QUEUE_TYPE = "quorum" on a cluster (see docs/cluster.md for moving an existing queue).',
    obj="settings.BROADCASTER",
    id="broadcaster.W020",
)

_HINTS = {
    "broadcaster.E001": 'Add BROADCASTER = {"SERVICE_NAME": "orders"} to your settings.',
    "broadcaster.E002": "SERVICE_NAME names this service's queue and the source of its events.",
    "broadcaster.E003": "Use amqp://user:password@host:5672/vhost (or amqps://), or set BROADCASTER_BROKER_URL.",
    "broadcaster.E004": "See the settings reference in the README for the keys BROADCASTER accepts.",
    ERROR_REPORTS_ID: 'Set DEFAULT_EXCEPTION_REPORTER_FILTER = "broadcaster.reporting.SafeExceptionReporterFilter" '
    "(or a subclass of it).",
    "broadcaster.E011": "Upgrade the database server, or use PUBLISH_MODE='on_commit' with it.",
    "broadcaster.E020": "A client fails over from node to node with one TLS configuration: use amqp:// "
    "or amqps:// for all of them.",
    "broadcaster.E021": "A client fails over from node to node with one user: give every URL the same "
    "user, password and vhost.",
    "broadcaster.W002": "Use on_delete=models.CASCADE on that foreign key (Django then deletes, and signals, row by "
    "row), or broadcast the deletion from the parent model's signal.",
}


def check_database_deletes(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.W002: a broadcast delete signal's sender can be deleted by the database alone.

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
        hint=_HINTS["broadcaster.W002"],
        obj=field,
        id="broadcaster.W002",
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
