"""The daemons' signal handling: the first signal stops gently, a second or the deadline at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent("""
    import sys, time, threading
    from broadcaster.daemon import log_to_stderr_unless_configured, stop_on_signals
    log_to_stderr_unless_configured()
    stopped = threading.Event()
    stop_on_signals("test-daemon", stopped.set, timeout=float(sys.argv[1]))
    print("ready", flush=True)
    stopped.wait()
    print("stopping", flush=True)
    time.sleep(float(sys.argv[2]))  # the work in hand
    print("clean exit", flush=True)
""")


def start(timeout: float, work: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(timeout), str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def test_first_signal_lets_the_work_in_hand_finish() -> None:
    process = start(timeout=10, work=0.3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out.split() == ["stopping", "clean", "exit"]
    assert "SIGTERM received" in err


def test_second_signal_exits_at_once() -> None:
    process = start(timeout=30, work=30)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert process.returncode == 1
    assert "second signal" in err


def test_shutdown_timeout_ends_a_hung_stop() -> None:
    process = start(timeout=0.5, work=30)
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=10)
    assert 0.4 < time.monotonic() - started < 5
    assert process.returncode == 1
    assert "SHUTDOWN_TIMEOUT" in err


FREEZE = textwrap.dedent("""
    import gc
    import django
    django.setup()
    from broadcaster.daemon import freeze_startup_objects
    from broadcaster import registry
    before = len(gc.get_objects())
    freeze_startup_objects()
    walked = len(gc.get_objects())
    print(before, walked, gc.get_freeze_count(), any(o is registry.__dict__ for o in gc.get_objects()))
""")


def test_a_full_collection_no_longer_walks_what_start_up_made() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run([sys.executable, "-c", FREEZE], env=env, capture_output=True, text=True, check=True)

    before, walked, frozen, registry_walked = result.stdout.split()
    assert int(before) > 10_000  # Django and the library loaded
    assert int(frozen) > int(before) // 2  # now out of the collector's walk
    assert int(walked) < int(before) // 100
    assert registry_walked == "False"
