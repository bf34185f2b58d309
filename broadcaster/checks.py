"""System checks: misconfiguration is reported by `manage.py check`, with ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning

from broadcaster.settings import validate

__all__ = ["check_settings"]


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


# A classic queue lives on one node: while that node is down its service consumes nothing.
_CLASSIC_ON_CLUSTER = CheckWarning(
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
    "broadcaster.E020": "A client fails over from node to node with one TLS configuration: use amqp:// "
    "or amqps:// for all of them.",
    "broadcaster.E021": "A client fails over from node to node with one user: give every URL the same "
    "user, password and vhost.",
}
