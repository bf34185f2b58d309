"""What the broker holds of a service's topology, read from the RabbitMQ management HTTP API.

AMQP can declare and bind but cannot list bindings, so ``broadcaster_topology --check``
and ``--prune`` read them over HTTP (``rabbitmq_management``, MANAGEMENT_URL). Only the
standard library's urllib is used; the password travels in the Authorization header and
never appears in an error.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from broadcaster.exceptions import BrokerUnavailable, ConfigurationError
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Binding, Plan

__all__ = ["Difference", "ManagementApi", "compare"]

_TIMEOUT = 10.0
_NOT_FOUND = 404
_UNAUTHORIZED = (401, 403)
# Arguments the broker may add or report on its own: not part of what the code asks for.
_IGNORED_ARGUMENTS = frozenset({"x-queue-leader-locator"})


class ManagementApi:
    """A small client of the management HTTP API for one vhost."""

    def __init__(self, settings: BroadcasterSettings, vhost: str) -> None:
        self.base, user, password = settings.management
        self._settings = settings
        self._vhost = quote(vhost, safe="")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._password = password
        self._user = user

    def queue(self, name: str) -> dict[str, Any] | None:
        """The queue `name` as the API describes it, or None if it does not exist."""
        found = self._get(f"queues/{self._vhost}/{quote(name, safe='')}")
        return found if isinstance(found, dict) else None

    def exchange(self, name: str) -> dict[str, Any] | None:
        """The exchange `name` as the API describes it, or None if it does not exist."""
        found = self._get(f"exchanges/{self._vhost}/{quote(name, safe='')}")
        return found if isinstance(found, dict) else None

    def bindings_to(self, name: str, destination_type: str) -> list[Binding]:
        """Every binding whose destination is the queue or exchange `name` (the default exchange's left out)."""
        kind = "queues" if destination_type == "queue" else "exchanges"
        path = f"{kind}/{self._vhost}/{quote(name, safe='')}/bindings"
        found = self._get(path if kind == "queues" else f"{path}/destination")
        return [
            Binding(item["source"], item["destination"], item["destination_type"], item["routing_key"])
            for item in found or []
            if item.get("source")  # the default exchange binds every queue to its own name
        ]

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.base}/api/{path}", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response and its socket
            if exc.code == _NOT_FOUND:
                return None
            if exc.code in _UNAUTHORIZED:
                raise ConfigurationError(
                    f"the management API at {self.base} refused user {self._user!r} ({exc.code}): set "
                    "BROADCASTER['MANAGEMENT_URL'] to http://USER:PASSWORD@HOST:15672 for a user with the "
                    "'monitoring' (or 'management') tag and access to the vhost"
                ) from exc
            raise BrokerUnavailable(f"the management API at {self.base} answered {exc.code} for /api/{path}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
            reason = reason.replace(self._password, "***") if self._password else reason
            raise BrokerUnavailable(
                f"cannot reach the management API at {self.base} ({reason}); is rabbitmq_management enabled "
                "(rabbitmq-plugins enable rabbitmq_management) and MANAGEMENT_URL right?"
            ) from exc


@dataclass(frozen=True, order=True)
class Difference:
    """One way the broker differs from the code; `kind` is missing, extra or changed."""

    kind: str
    what: str
    detail: str
    binding: Binding | None = None  # an extra binding: what --prune removes

    def __str__(self) -> str:
        return f"{self.kind:8} {self.what}: {self.detail}"


def compare(expected: Plan, api: ManagementApi) -> list[Difference]:
    """The differences between what the code declares and what the broker holds, sorted."""
    differences: list[Difference] = []
    for name, (kind, arguments) in sorted(expected.exchanges.items()):
        differences += _exchange_differences(name, kind, arguments, api.exchange(name))
    for name, arguments in sorted(expected.queues.items()):
        differences += _queue_differences(name, arguments, api.queue(name))
    destinations = {(b.destination, b.destination_type) for b in expected.bindings}
    destinations |= {(name, "queue") for name in expected.queues}
    actual: set[Binding] = set()
    for name, destination_type in sorted(destinations):
        actual.update(api.bindings_to(name, destination_type))
    differences += [Difference("missing", "binding", str(b)) for b in sorted(expected.bindings - actual)]
    differences += [Difference("extra", "binding", str(b), b) for b in sorted(actual - expected.bindings)]
    return differences


def _exchange_differences(
    name: str, kind: str, arguments: dict[str, Any], found: dict[str, Any] | None
) -> list[Difference]:
    if found is None:
        return [Difference("missing", f"exchange {name}", f"{kind}, not declared on the broker")]
    differences = []
    if found.get("type") != kind:
        differences.append(Difference("changed", f"exchange {name}", f"type {found.get('type')} (code: {kind})"))
    if (held := dict(found.get("arguments") or {})) != arguments:
        differences.append(Difference("changed", f"exchange {name}", f"arguments {held} (code: {arguments})"))
    return differences


def _queue_differences(name: str, arguments: dict[str, Any], found: dict[str, Any] | None) -> list[Difference]:
    if found is None:
        return [Difference("missing", f"queue {name}", "not declared on the broker")]
    held = {k: v for k, v in (found.get("arguments") or {}).items() if k not in _IGNORED_ARGUMENTS}
    wanted = dict(arguments)
    # A classic queue declared without x-queue-type reports none: it is still classic.
    if "x-queue-type" not in held:
        held["x-queue-type"] = found.get("type", "classic")
    if held == wanted:
        return []
    changed = sorted(key for key in held.keys() | wanted.keys() if held.get(key) != wanted.get(key))
    detail = ", ".join(f"{key}={held.get(key)!r} (code: {wanted.get(key)!r})" for key in changed)
    return [Difference("changed", f"queue {name}", f"arguments {detail}")]
