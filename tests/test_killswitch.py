"""The kill switch decides when a daemon pauses and resumes, without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from broadcaster.checks import _KEY_IDS, check_settings
from broadcaster.killswitch import KillSwitch, Limits, Pause
from broadcaster.settings import BroadcasterSettings

LIMITS = Limits(ratio=0.5, window=10.0, min_events=4, cooldown=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def switch(clock: Clock) -> KillSwitch:
    return KillSwitch(LIMITS, clock)


def feed(switch: KillSwitch, outcomes: str) -> list[bool]:
    """'F' a failing event, '.' a handled one; what each record() answered."""
    return [switch.record(char == "F") for char in outcomes]


def test_it_trips_once_the_failure_share_reaches_the_ratio_over_enough_events(switch: KillSwitch) -> None:
    assert feed(switch, "F.F") == [False, False, False]  # 2 of 3: too few events to judge
    assert not switch.paused
    assert feed(switch, "F") == [True]  # 3 of 4 failed
    assert switch.paused
    assert switch.reason is Pause.TRIPPED
    assert switch.tripped_on == (3, 4)


def test_a_share_below_the_ratio_keeps_consuming(switch: KillSwitch) -> None:
    assert not any(feed(switch, "..F.F." * 5))  # 1 of 3 at most
    assert not switch.paused


def test_outcomes_older_than_the_window_are_forgotten(switch: KillSwitch, clock: Clock) -> None:
    feed(switch, "FFF")
    clock.now += 11  # past the window: those three say nothing any more
    assert feed(switch, "F...") == [False] * 4
    assert switch.status()["window_events"] == 4


def test_it_resumes_after_the_cooldown_with_a_fresh_window_and_trips_again_if_failures_persist(
    switch: KillSwitch, clock: Clock
) -> None:
    feed(switch, "FFFF")
    assert switch.status()["resumes_in_seconds"] == 30.0
    clock.now += 29.9
    assert not switch.cooled_down()
    assert switch.paused
    clock.now += 0.1
    assert switch.cooled_down()
    assert not switch.paused
    assert not switch.cooled_down()  # once
    assert feed(switch, "FFF") == [False] * 3  # what failed before the pause no longer counts
    assert feed(switch, "F") == [True]


def test_events_finishing_while_paused_do_not_trip_it_again(switch: KillSwitch, clock: Clock) -> None:
    feed(switch, "FFFF")
    assert feed(switch, "FFFFFF") == [False] * 6
    clock.now += 30
    assert switch.cooled_down()


def test_an_operator_hold_lasts_until_released_whatever_the_cooldown(switch: KillSwitch, clock: Clock) -> None:
    switch.hold()
    assert switch.paused
    assert switch.reason is Pause.OPERATOR
    clock.now += 3600
    assert not switch.cooled_down()
    assert switch.paused
    feed(switch, "FFFF")  # in-flight events finishing: no trip on top of the hold
    switch.release()
    assert not switch.paused
    assert switch.reason is None


def test_release_also_ends_a_cooldown(switch: KillSwitch) -> None:
    feed(switch, "FFFF")
    switch.release()
    assert not switch.paused


def test_an_operator_hold_outranks_a_trip_in_the_reason(switch: KillSwitch) -> None:
    feed(switch, "FFFF")
    switch.hold()
    assert switch.reason is Pause.OPERATOR
    assert switch.status()["resumes_in_seconds"] is None


def test_toggle_pauses_a_consuming_daemon_and_resumes_a_paused_one(switch: KillSwitch) -> None:
    switch.toggle()
    assert switch.reason is Pause.OPERATOR
    switch.toggle()
    assert not switch.paused
    feed(switch, "FFFF")
    switch.toggle()  # SIGUSR1 during a cool-down: resume now
    assert not switch.paused


def test_without_a_ratio_it_never_trips(clock: Clock) -> None:
    switch = KillSwitch(Limits(ratio=None, min_events=1), clock)
    assert not any(feed(switch, "F" * 100))
    switch.hold()
    assert switch.paused  # an operator can still pause


def test_limits_come_from_the_settings() -> None:
    configured = BroadcasterSettings.model_validate(
        {"SERVICE_NAME": "s", "KILL_SWITCH_RATIO": 0.25, "KILL_SWITCH_MIN_EVENTS": 5, "KILL_SWITCH_COOLDOWN": 2}
    )
    assert Limits.for_settings(configured) == Limits(0.25, 60.0, 5, 2.0)
    assert Limits.for_settings(BroadcasterSettings.model_validate({"SERVICE_NAME": "s"})).ratio is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KILL_SWITCH_RATIO", 0),
        ("KILL_SWITCH_RATIO", 1.5),
        ("KILL_SWITCH_WINDOW", 0),
        ("KILL_SWITCH_MIN_EVENTS", 0),
        ("KILL_SWITCH_COOLDOWN", -1),
    ],
)
def test_a_bad_kill_switch_setting_is_a_system_check_naming_the_key(settings: Any, key: str, value: float) -> None:
    settings.BROADCASTER = {"SERVICE_NAME": "orders", key: value}
    [message] = check_settings()
    assert message.id == _KEY_IDS[key]  # one id per key
    assert f"BROADCASTER[{key!r}]" in message.msg
    assert message.hint is not None
    assert key in message.hint
