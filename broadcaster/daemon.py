"""What the long-running commands (consume_signals, relay_outbox) share: signals, logging, memory."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["freeze_startup_objects", "log_to_stderr_unless_configured", "stop_on_signals", "toggle_on_sigusr1"]

logger = logging.getLogger("broadcaster.daemon")


def freeze_startup_objects() -> None:
    """Take what start-up made (Django, the project's models and schemas) out of the collector's walk.

    Those objects live as long as the process. Left in the collector's oldest generation,
    every full collection walks them all: tens of milliseconds in a small project, hundreds
    in a large one, while the daemon handles nothing and events wait in its prefetch
    window. Frozen, a full collection walks only what the daemon made since it started.
    """
    gc.collect()
    gc.freeze()


def stop_on_signals(name: str, stop: Callable[[], None], timeout: float) -> None:
    """On SIGTERM/SIGINT call `stop`; exit at once on a second signal or after `timeout` s.

    The hard exit leaves the message in hand unacked, so the broker delivers it again:
    nothing is lost, and a hung receiver cannot keep a deployment waiting forever.
    """
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            logger.warning("%s: second signal, exiting at once", name)
            os._exit(1)
        received.append(signum)
        logger.info("%s: %s received, stopping after the work in hand", name, signal.Signals(signum).name)
        deadline = threading.Timer(timeout, _give_up, args=(name, timeout))
        deadline.daemon = True
        deadline.start()
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def toggle_on_sigusr1(toggle: Callable[[], None]) -> None:
    """On SIGUSR1 call `toggle` (pause or resume the daemon); it must only leave a note."""
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: toggle())


def _give_up(name: str, timeout: float) -> None:
    logger.error("%s: still busy %g s after the stop signal (SHUTDOWN_TIMEOUT); exiting", name, timeout)
    logging.shutdown()
    os._exit(1)


def log_to_stderr_unless_configured() -> None:
    """Make the start/stop/failure lines visible even where LOGGING leaves them out."""
    package = logging.getLogger("broadcaster")
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
