"""System checks: misconfiguration is reported by `manage.py check`, with ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error

from broadcaster.settings import validate

__all__ = ["check_schemas", "check_settings"]


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


_HINTS = {
    "broadcaster.E001": 'Add BROADCASTER = {"SERVICE_NAME": "orders"} to your settings.',
    "broadcaster.E002": "SERVICE_NAME names this service's queue and the source of its events.",
    "broadcaster.E003": "Use amqp://user:password@host:5672/vhost (or amqps://), or set BROADCASTER_BROKER_URL.",
    "broadcaster.E004": "See the settings reference in the README for the keys BROADCASTER accepts.",
}
