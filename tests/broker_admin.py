"""rabbitmqctl for tests that make broker users and vhosts of their own, and always remove them."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import quote

import pytest

RABBITMQCTL_TIMEOUT = 60.0


def rabbitmqctl(*args: str, node: str | None = None, timeout: float = RABBITMQCTL_TIMEOUT) -> str:
    """Run rabbitmqctl against the local node (or `node`); fail the test with its stderr if it fails."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed on this machine")
    command = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}): {result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class BrokerUser:
    """A user made for one test, with a password nobody else knows."""

    name: str
    password: str
    vhost: str

    def url(self, host: str = "127.0.0.1", port: int = 5672) -> str:
        credentials = f"{quote(self.name, safe='')}:{quote(self.password, safe='')}"
        return f"amqp://{credentials}@{host}:{port}/{quote(self.vhost, safe='')}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def strong_password() -> str:
    return "pw-" + secrets.token_urlsafe(18)


@contextmanager
def vhost_user(prefix: str, *, password: str | None = None) -> Iterator[BrokerUser]:
    """A vhost and a user with every permission on it; both deleted afterwards (with all in the vhost)."""
    user = BrokerUser(unique(prefix), password or strong_password(), unique(prefix))
    rabbitmqctl("add_vhost", user.vhost)
    try:
        rabbitmqctl("add_user", user.name, user.password)
        try:
            rabbitmqctl("set_permissions", "-p", user.vhost, user.name, ".*", ".*", ".*")
            yield user
        finally:
            delete_user(user.name)
    finally:
        rabbitmqctl("delete_vhost", user.vhost)


def delete_user(name: str) -> None:
    """Delete `name`, whether or not a failed test got as far as creating it."""
    with suppress(AssertionError):
        rabbitmqctl("delete_user", name)
