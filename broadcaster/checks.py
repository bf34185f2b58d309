"""System checks: misconfiguration is reported by `manage.py check`, with ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error

from broadcaster.settings import validate

__all__ = ["check_outbox_database", "check_settings"]


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


def check_outbox_database(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """broadcaster.E010: in outbox mode, a database cannot run the relay's SKIP LOCKED query.

    Registered with the database tag: it connects, so it runs only for the databases
    Django names (``migrate``, ``check --database``), never in a plain ``manage.py check``.
    """
    settings, _ = validate()
    if not databases or settings is None or settings.publish_mode != "outbox":
        return []
    from broadcaster.outbox import skip_locked_problem  # noqa: PLC0415 - needs the app's models

    return [
        Error(problem, hint=_HINTS["broadcaster.E010"], obj=f"settings.DATABASES[{alias!r}]", id="broadcaster.E010")
        for alias in databases
        if (problem := skip_locked_problem(alias)) is not None
    ]


_HINTS = {
    "broadcaster.E001": 'Add BROADCASTER = {"SERVICE_NAME": "orders"} to your settings.',
    "broadcaster.E002": "SERVICE_NAME names this service's queue and the source of its events.",
    "broadcaster.E003": "Use amqp://user:password@host:5672/vhost (or amqps://), or set BROADCASTER_BROKER_URL.",
    "broadcaster.E004": "See the settings reference in the README for the keys BROADCASTER accepts.",
    "broadcaster.E010": "Upgrade the database server, or use PUBLISH_MODE='on_commit' with it.",
}
