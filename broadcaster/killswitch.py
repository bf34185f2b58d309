"""When a daemon stops consuming and when it starts again: the kill switch, without I/O.

A downstream outage makes every receiver raise, and a daemon that goes on consuming
retries each event to exhaustion and fills the dead-letter queue. The kill switch
watches the share of failing events over a sliding window; once it crosses the
threshold the daemon pauses (its messages stay queued) for a cool-down, then tries
again. An operator can hold the daemon paused too, until told to resume.

`KillSwitch` decides; `broadcaster.control` carries its decisions out with pika.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broadcaster.settings import BroadcasterSettings

__all__ = ["KillSwitch", "Limits", "Pause"]


class Pause(enum.StrEnum):
    """Why a daemon is paused; the values label the ``broadcaster_pauses`` metric."""

    TRIPPED = "tripped"
    """The share of failing events crossed KILL_SWITCH_RATIO: paused for KILL_SWITCH_COOLDOWN."""

    OPERATOR = "operator"
    """``consume_signals --pause`` or SIGUSR1: paused until ``--resume`` or SIGUSR1 again."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The kill switch's settings; `ratio` None turns tripping off (an operator can still pause)."""

    ratio: float | None = None
    window: float = 60.0
    min_events: int = 20
    cooldown: float = 60.0

    @classmethod
    def for_settings(cls, settings: BroadcasterSettings) -> Limits:
        return cls(
            settings.kill_switch_ratio,
            settings.kill_switch_window,
            settings.kill_switch_min_events,
            settings.kill_switch_cooldown,
        )


class KillSwitch:
    """The daemon's pause state: a sliding window of outcomes, a cool-down and an operator hold.

    Not thread-safe: the daemon calls it from its connection's thread only.
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed), oldest first
        self._failures = 0
        self._cool_until: float | None = None
        self._held = False
        self.tripped_on = (0, 0)  # (failures, events) of the window that last tripped it

    @property
    def paused(self) -> bool:
        """Whether the daemon must not consume now."""
        return self._held or self._cool_until is not None

    @property
    def reason(self) -> Pause | None:
        """Why it is paused (an operator's hold first), or None while consuming."""
        if self._held:
            return Pause.OPERATOR
        return Pause.TRIPPED if self._cool_until is not None else None

    def record(self, failed: bool) -> bool:
        """Count one finished event (`failed`: a receiver raised); True if this trips the switch."""
        now = self._clock()
        self._outcomes.append((now, failed))
        self._failures += failed
        self._forget_before(now - self.limits.window)
        if self.paused or self.limits.ratio is None or len(self._outcomes) < self.limits.min_events:
            return False
        if self._failures / len(self._outcomes) < self.limits.ratio:
            return False
        self._cool_until = now + self.limits.cooldown
        self.tripped_on = (self._failures, len(self._outcomes))
        self._clear()
        return True

    def cooled_down(self) -> bool:
        """End a cool-down that is over; True if one just ended (the daemon may consume again)."""
        if self._cool_until is None or self._clock() < self._cool_until:
            return False
        self._cool_until = None
        self._clear()  # a fresh window: what failed before the pause says nothing of now
        return True

    def hold(self) -> None:
        """An operator pauses the daemon until release()."""
        self._held = True

    def release(self) -> None:
        """An operator resumes the daemon, ending any cool-down too."""
        self._held = False
        self._cool_until = None
        self._clear()

    def toggle(self) -> None:
        """Pause if consuming, resume if paused for any reason (SIGUSR1)."""
        if self.paused:
            self.release()
        else:
            self.hold()

    def status(self) -> dict[str, Any]:
        """The state as /healthz shows it."""
        resumes_in = None if self._cool_until is None or self._held else max(0.0, self._cool_until - self._clock())
        return {
            "paused": self.paused,
            "pause_reason": self.reason.value if self.reason else None,
            "resumes_in_seconds": None if resumes_in is None else round(resumes_in, 1),
            "window_events": len(self._outcomes),
            "window_failures": self._failures,
        }

    def _forget_before(self, oldest: float) -> None:
        while self._outcomes and self._outcomes[0][0] < oldest:
            self._failures -= self._outcomes.popleft()[1]

    def _clear(self) -> None:
        self._outcomes.clear()
        self._failures = 0
