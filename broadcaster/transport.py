"""The process's way to the broker: its publisher, made on first use and again after fork().

`get_publisher()` returns this process's `publisher.Publisher`, or the transport a test
installed with `use_transport()`. A forked child (a gunicorn worker) never touches the
parent's socket or publishes the parent's buffer: it makes a publisher of its own. The
publisher flushes at exit (see `Publisher.close`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from broadcaster.envelope import OutboundMessage
from broadcaster.publisher import Publisher
from broadcaster.settings import get_settings

__all__ = [
    "Transport",
    "flush",
    "get_publisher",
    "is_overridden",
    "reset_publisher",
    "use_transport",
]


class Transport(Protocol):
    """What the library needs from a publisher; `publisher.Publisher` is the real one."""

    def publish(self, message: OutboundMessage, *, wait: bool = True) -> None:
        """Take `message`; it reaches the broker later, or is kept and retried.

        With `wait`, a full buffer makes it wait for room (PublishBufferFull after
        PUBLISH_TIMEOUT); without, the message is taken over the bound.
        """

    def ensure_room(self) -> None:
        """Wait at most PUBLISH_TIMEOUT for room for one more message, or raise PublishBufferFull."""

    def flush(self, timeout: float | None = None) -> None:
        """Block until every message taken is confirmed, or raise FlushTimeout."""

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release the connection."""

    @property
    def pending(self) -> int:
        """Messages taken and not yet confirmed by the broker."""


_lock = threading.Lock()
_publisher: Publisher | None = None
_override: Transport | None = None  # set by use_transport(): the test kit's in-memory transport


def get_publisher() -> Transport:
    """The publisher of this process, made on first use and again after fork()."""
    if _override is not None:
        return _override
    return _pika_publisher()


def _pika_publisher() -> Publisher:
    global _publisher  # noqa: PLW0603 - the process-wide publisher
    publisher = _publisher
    if publisher is None:  # also in a fork()ed child: _forget_after_fork cleared it
        with _lock:
            if _publisher is None:
                _publisher = Publisher(get_settings())
            publisher = _publisher
    return publisher


def flush(timeout: float | None = None) -> None:
    """Block until every event handed to this process's publisher is confirmed, or raise."""
    if _override is not None:
        _override.flush(timeout)
    elif _publisher is not None and _publisher.pid == os.getpid():
        _publisher.flush(timeout)


def is_overridden() -> bool:
    """Whether events go to a transport installed by use_transport() (tests)."""
    return _override is not None


@contextmanager
def use_transport(transport: Transport) -> Iterator[Transport]:
    """Send this process's events to `transport` instead of the broker within the block."""
    global _override  # noqa: PLW0603
    previous, _override = _override, transport
    try:
        yield transport
    finally:
        _override = previous


def reset_publisher(timeout: float | None = None, **_: object) -> None:
    """Close this process's publisher (flushing for `timeout`); the next event makes a new one."""
    global _publisher
    with _lock:
        publisher, _publisher = _publisher, None
    if publisher is not None and publisher.pid == os.getpid():
        publisher.close(timeout)


def _forget_after_fork() -> None:
    # The child must not touch the parent's socket or republish the parent's buffer.
    global _publisher, _lock  # noqa: PLW0603
    _publisher = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
