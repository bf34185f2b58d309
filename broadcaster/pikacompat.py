"""pika's private names and quirks, in one place: the publisher's fast path, or pika's public path.

The publisher joins the frames of a batch of publishes through pika's adapter hook
``SelectConnection._adapter_emit_data`` and writes them straight to the socket of a plain
TCP transport (``_AsyncPlaintextTransport``: its ``_sock``, ``_state`` and
``_STATE_ACTIVE``, and the connection's ``_transport``). That saves two system calls and a
GIL hand-over per write, but none of these names is public: a pika release may rename or
drop any of them. So they are looked up once, at the first connection (never at import),
and when one is missing, or a write finds an attribute gone, the fast path turns itself
off for the process (logged once) and every frame takes pika's public path: correct,
only slower. The range of pika versions tested is declared in ``pyproject.toml``.

One quirk is mended for every client: a socket the broker resets just after the TCP
handshake makes pika raise ValueError (see `IOServices` and `blocking_connection`), which
the clients would take for a bug and not for the failed connection attempt it is.
"""

from __future__ import annotations

import importlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection
from pika.adapters.utils import nbio_interface
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter

__all__ = [
    "WRITE_BYTES",
    "BatchingConnection",
    "IOServices",
    "blocking_connection",
    "fast_path",
    "recheck",
    "reset_while_connecting",
]

logger = logging.getLogger(__name__)

WRITE_BYTES = 128 * 1024  # the most a batch of publishes hands to the socket in one write

_lock = threading.Lock()
_checked = False
_plaintext: Any = None  # pika's plain TCP transport class, while the fast path is on


def fast_path() -> bool:
    """Whether the batched, direct socket write is in use (the names it needs are looked up once)."""
    global _checked, _plaintext  # noqa: PLW0603 - one answer per process
    if not _checked:
        with _lock:
            if not _checked:
                _plaintext = _probe()
                _checked = True
    return _plaintext is not None


def recheck() -> bool:
    """Look pika's names up again (after pika was patched, in tests); return fast_path()."""
    global _checked  # noqa: PLW0603
    with _lock:
        _checked = False
    return fast_path()


def _probe() -> Any:
    """pika's plain transport class when every name the fast path uses is there, else None."""
    try:
        utils = importlib.import_module("pika.adapters.utils.io_services_utils")
    except ImportError as exc:
        _public_path(f"pika.adapters.utils.io_services_utils cannot be imported ({exc})")
        return None
    plaintext = getattr(utils, "_AsyncPlaintextTransport", None)
    missing = [
        name
        for name, present in (
            ("SelectConnection._adapter_emit_data", callable(getattr(SelectConnection, "_adapter_emit_data", None))),
            ("_AsyncPlaintextTransport", isinstance(plaintext, type)),
            ("_AsyncPlaintextTransport._STATE_ACTIVE", hasattr(plaintext, "_STATE_ACTIVE")),
            ("_AsyncPlaintextTransport.get_write_buffer_size", hasattr(plaintext, "get_write_buffer_size")),
        )
        if not present
    ]
    if missing:
        _public_path(f"this pika lacks {', '.join(missing)}")
        return None
    return plaintext


def _public_path(reason: str) -> None:
    logger.warning("publisher: %s; frames go through pika's public path (correct, slower)", reason)


def _disable(exc: Exception) -> None:
    global _plaintext  # noqa: PLW0603
    if _plaintext is not None:
        _plaintext = None
        _public_path(f"a pika internal changed at run time ({type(exc).__name__}: {exc})")


class BatchingConnection(SelectConnection):
    """A SelectConnection that hands the frames of a batch of publishes to the socket together.

    pika writes every frame with a send() of its own: three system calls per message,
    each releasing the GIL. Within `batched()` frames are joined into writes of up to
    WRITE_BYTES (larger ones would make pika copy the rest of a partly sent buffer), and
    a write goes to the socket at once when it can (see `_send_now`). Without the fast
    path `batched()` changes nothing.
    """

    _batch: list[bytes] | None = None
    _batch_bytes = 0

    def _adapter_emit_data(self, data: bytes) -> None:
        # pika's hook for an adapter's output: every frame of the connection passes here.
        if self._batch is None:
            super()._adapter_emit_data(data)  # type: ignore[misc]
            return
        self._batch.append(data)
        self._batch_bytes += len(data)
        if self._batch_bytes >= WRITE_BYTES:
            self._write_batch()

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Collect the frames written within the block and write them in few pieces."""
        if not fast_path():
            yield
            return
        self._batch, self._batch_bytes = [], 0
        try:
            yield
        finally:
            self._write_batch()
            self._batch = None

    def _write_batch(self) -> None:
        data = b"".join(self._batch) if self._batch else b""
        self._batch, self._batch_bytes = [], 0
        if data and (rest := data[self._send_now(data) :]):
            super()._adapter_emit_data(rest)  # type: ignore[misc]

    def _send_now(self, data: bytes) -> int:
        """Write what the socket takes of `data` now; return how many bytes that was.

        pika's transport only buffers a write and waits for the poller to report the
        socket writable: two epoll_ctl calls and one more turn of the I/O loop (one more
        GIL hand-over) per write. Sending at once is sound when pika has nothing buffered
        (the order stays) on a plain TCP transport (TLS writes go through its SSL object);
        otherwise, on EAGAIN, or on an error, the bytes go pika's way and pika deals with
        a broken connection as it always does.
        """
        try:
            transport: Any = self._transport  # type: ignore[attr-defined]
            if (
                type(transport) is not _plaintext
                or transport._state != transport._STATE_ACTIVE
                or transport.get_write_buffer_size()
            ):
                return 0
            sock = transport._sock
        except AttributeError as exc:
            _disable(exc)
            return 0
        try:
            sent: int = sock.send(data)
        except OSError:
            return 0
        return sent


class IOServices(SelectorIOServicesAdapter):  # type: ignore[type-arg]  # generic in the stubs only
    """pika's I/O services for the publisher's SelectConnection, with two of pika's failures mended.

    - The broker's address is resolved on the loop's own thread. pika resolves on a thread
      of its own, and Python 3.12 refuses to start a thread once the interpreter is shutting
      down: a process that sent events and exited before its publisher had connected could
      then never connect in the flush at exit, and those events were lost. Resolving in
      place blocks only the publisher's I/O thread, which has nothing else to do before it
      is connected.
    - A socket the broker resets just after the TCP handshake (a node pausing or shutting
      down does) makes pika raise ValueError out of the I/O loop instead of reporting a
      failed attempt; the publisher's thread would end with it. Here it is reported to
      pika as the connection error it is, and the publisher reconnects.

    Passed as ``custom_ioloop``, which pika accepts.
    """

    def getaddrinfo(  # noqa: PLR0917 - pika's signature
        self,
        host: bytearray | bytes | str | None,
        port: str | int | None,
        on_done: Callable[..., None],
        family: int = 0,
        socktype: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> nbio_interface.AbstractIOReference:
        result: Any
        try:
            result = socket.getaddrinfo(
                bytes(host) if isinstance(host, bytearray) else host, port, family, socktype, proto, flags
            )
        except Exception as exc:  # pika reports any failure to on_done, as its resolver thread does
            result = exc
        return self._later(on_done, result)

    def create_streaming_connection(
        self,
        protocol_factory: Callable[[], nbio_interface.AbstractStreamProtocol],
        sock: socket.socket,
        on_done: Callable[..., None],
        ssl_context: Any = None,
        server_hostname: str | None = None,
    ) -> nbio_interface.AbstractIOReference:
        try:
            return super().create_streaming_connection(protocol_factory, sock, on_done, ssl_context, server_hostname)
        except ValueError as exc:
            reset = reset_while_connecting(exc)
            if reset is None:
                raise
            return self._later(on_done, reset)  # pika has closed the socket

    def _later(self, on_done: Callable[..., None], result: Any) -> nbio_interface.AbstractIOReference:
        """Call on_done(result) from the loop, as pika expects of these services."""
        reference = _Once(lambda: on_done(result))
        self.add_callback_threadsafe(reference.run)
        return reference


def reset_while_connecting(exc: ValueError) -> OSError | None:
    """The socket error behind pika's ValueError for a socket reset mid-connect, else None.

    pika checks a new socket with getpeername() and turns its OSError (ENOTCONN once the
    peer has reset it) into a ValueError raised while handling it; both are checked, as
    any ValueError raised inside a caller's ``except OSError`` has such a context too.
    """
    cause = exc.__context__
    if isinstance(cause, OSError) and str(exc).startswith("Expected connected socket"):
        return cause
    return None


def blocking_connection(params: pika.connection.Parameters) -> pika.BlockingConnection:
    """pika.BlockingConnection(params), a socket reset mid-connect raised as the AMQPConnectionError it is."""
    try:
        return pika.BlockingConnection(params)
    except ValueError as exc:
        reset = reset_while_connecting(exc)
        if reset is None:
            raise
        raise pika.exceptions.AMQPConnectionError(f"the connection was reset as it opened ({reset})") from exc


class _Once(nbio_interface.AbstractIOReference):
    """A callback that runs once, unless cancelled first."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback

    def run(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()

    def cancel(self) -> bool:
        cancelled, self._callback = self._callback is not None, None
        return cancelled
