"""Connection parameters and back-off shared by the publisher and the consumer."""

from __future__ import annotations

import os
import random
import socket
import ssl

import pika
import pika.exceptions

from broadcaster.settings import BroadcasterSettings

__all__ = ["backoff", "close_quietly", "describe", "parameters"]


def parameters(settings: BroadcasterSettings, role: str) -> pika.URLParameters:
    """pika parameters for `role` ("publisher", "consumer"), named so operators see who is who."""
    params = pika.URLParameters(settings.broker_url)
    if settings.broker_url.startswith("amqps://"):
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


def backoff(failures: int, cap: float) -> float:
    """Seconds to wait before reconnection attempt number `failures` (1-based), with jitter."""
    ceiling: float = min(cap, 0.25 * 2 ** min(failures, 16))
    return _jitter.uniform(ceiling / 2, ceiling)


def describe(error: BaseException | str) -> str:
    """One line naming a connection error; pika's are often empty or start with their name."""
    if isinstance(error, str):
        return error
    name = type(error).__name__
    text = str(error).strip() or repr(error)  # pika's AMQPConnectionError keeps its detail in repr()
    return text if text.startswith(name) else f"{name}: {text}"


def close_quietly(conn: pika.BlockingConnection) -> None:
    """Close `conn` if it is open; a connection already gone is not an error here."""
    try:
        if conn.is_open:
            conn.close()
    except (pika.exceptions.AMQPError, OSError):
        pass
