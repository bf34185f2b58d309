"""Connection parameters, node order and back-off shared by every client of the broker.

BROKER_URL may list the nodes of a cluster. Each client (publisher, daemon, relay,
dead-letter tools) keeps a `Nodes` of its own: it connects to the first node, and after
a failure to the next one in the list, wrapping around, starting after the node that
failed. Only once every node in turn has failed does it wait, with the capped, jittered
back-off. With one URL this is the plain back-off of a single broker.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
from dataclasses import dataclass

import pika
import pika.exceptions

from broadcaster import pikacompat
from broadcaster.settings import BroadcasterSettings, redact_url, scrub

__all__ = [
    "Node",
    "Nodes",
    "backoff",
    "close_quietly",
    "connect_blocking",
    "describe",
    "describe_redacted",
    "parameters",
]

logger = logging.getLogger(__name__)

_CONNECT_ERRORS = (pika.exceptions.AMQPConnectionError, OSError)


@dataclass(frozen=True)
class Node:
    """One broker node of BROKER_URL: what to connect with, and how to name it in logs."""

    index: int
    params: pika.URLParameters
    label: str  # the URL without its password


class Nodes:
    """The nodes one client connects to, in failover order, and which it used last.

    Not thread-safe: each client keeps its own and uses it from one thread.
    """

    def __init__(self, settings: BroadcasterSettings, role: str) -> None:
        self.role = role
        self._cap = settings.reconnect_max_delay
        self.all = [
            Node(index, _parameters(settings, url, role), redact_url(url))
            for index, url in enumerate(settings.broker_urls)
        ]
        self._next = 0
        self._failures = 0  # failed attempts (or lost connections) since the last success
        self.current: Node | None = None  # the node of the open connection, if any

    def next(self) -> Node:
        """The node to try now: the first, then each one after the node tried before."""
        node = self.all[self._next]
        self._next = (node.index + 1) % len(self.all)
        return node

    def connected(self, node: Node) -> None:
        """`node` took the connection: log it; a later failure starts from the node after it."""
        self.current, self._failures = node, 0
        self._next = (node.index + 1) % len(self.all)
        logger.info("%s connected to %s", self.role, node.label)

    def failed(self) -> float:
        """A connection attempt failed or an open connection was lost: seconds to wait now.

        Nothing while some node has not been tried since the last success; once every node
        failed in turn, the capped, jittered back-off (longer after each full round).
        """
        self.current = None
        self._failures += 1
        rounds, rest = divmod(self._failures, len(self.all))
        return 0.0 if rest else backoff(rounds, self._cap)


def connect_blocking(nodes: Nodes) -> pika.BlockingConnection:
    """A blocking connection to the first node of `nodes` that answers, each tried once.

    Raises the last node's error when none does.
    """
    error: BaseException | None = None
    for _ in nodes.all:
        node = nodes.next()
        try:
            conn = pikacompat.blocking_connection(node.params)
        except _CONNECT_ERRORS as exc:
            logger.warning("%s cannot connect to %s: %s", nodes.role, node.label, describe(exc))
            nodes.failed()
            error = exc
            continue
        nodes.connected(node)
        return conn
    assert error is not None  # there is at least one node
    raise error


def parameters(settings: BroadcasterSettings, role: str) -> pika.URLParameters:
    """pika parameters of the first node of BROKER_URL for `role`; clients connect through `Nodes`."""
    return _parameters(settings, settings.broker_urls[0], role)


def _parameters(settings: BroadcasterSettings, url: str, role: str) -> pika.URLParameters:
    """pika parameters for `role` ("publisher", "consumer"), named so operators see who is who."""
    params = pika.URLParameters(url)
    if url.startswith("amqps://"):
        params.ssl_options = pika.SSLOptions(_tls_context(settings), settings.tls_server_name or params.host)
    params.heartbeat = settings.heartbeat
    params.blocked_connection_timeout = max(settings.publish_timeout * 6, 60.0)
    params.connection_attempts = 1
    params.client_properties = {
        "connection_name": f"{settings.service_name} {role} {socket.gethostname()}:{os.getpid()}",
        "product": "django-signal-broadcaster",
    }
    return params


def _tls_context(settings: BroadcasterSettings) -> ssl.SSLContext:
    """Certificate verification stays on unless TLS_VERIFY is False."""
    context = ssl.create_default_context(cafile=settings.tls_ca_file)
    if settings.tls_cert_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# A generator of our own: a background thread drawing from the global one would change
# the random state of the application (and of a test that seeds it) under its feet.
_jitter = random.Random()


def backoff(failures: int, cap: float, base: float = 0.25) -> float:
    """Seconds to wait before attempt number `failures` (1-based) after failures in a row, with jitter.

    `base` doubled per failure, at most `cap`, then a random point in its upper half, so
    that clients that failed together do not all try again at once.
    """
    ceiling: float = min(cap, base * 2 ** min(failures, 16))
    return _jitter.uniform(ceiling / 2, ceiling)


def describe(error: BaseException | str) -> str:
    """One line naming a connection error; pika's are often empty or start with their name."""
    if isinstance(error, str):
        return error
    name = type(error).__name__
    text = str(error).strip() or repr(error)  # pika's AMQPConnectionError keeps its detail in repr()
    return text if text.startswith(name) else f"{name}: {text}"


def describe_redacted(error: BaseException | str, settings: BroadcasterSettings) -> str:
    """`describe(error)` with every password of BROKER_URL replaced by ``***``.

    For text that is kept or shown (an outbox row's last error, the admin, a command's
    output): pika's messages do not normally carry the URL, but never risk echoing it.
    """
    return scrub(describe(error), settings.broker_url)


def close_quietly(conn: pika.BlockingConnection) -> None:
    """Close `conn` if it is open; a connection already gone is not an error here."""
    try:
        if conn.is_open:
            conn.close()
    except (pika.exceptions.AMQPError, OSError):
        pass
