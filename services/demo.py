"""`make demo`: three services, two consumer daemons, a few orders, and what each service saw.

Every service runs as its own processes with its own SQLite database, in a fresh
`services/.data/demo-*` directory, on the exchange `demo.signals` and queues named
`demo.<service>`, so the demo never mixes with other users of the local broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Topology

SERVICES = Path(__file__).resolve().parent
EXCHANGE = "demo.signals"
QUEUE_PREFIX = "demo."
BROKER_URL = os.environ.get("BROADCASTER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
DAEMONS = ("inventory", "notifications")
ORDERS = [  # (email, lines, rollback); the rolled-back one last, as SQLite reuses its id
    ("alice@example.com", ["MUG:2", "TEE:1"], False),
    ("carol@example.com", ["POSTER:8"], False),  # leaves 4 posters, below 5: stock_low
    ("dave@example.com", ["MUG:1"], False),
    ("bob@example.com", ["TEE:3"], True),
]
EXPECTED_RESERVATIONS = 4  # one per committed order line
EXPECTED_NOTIFICATIONS = 7  # 3 order_placed, 3 order_saved, 1 stock_low
EXPECTED_TOTAL = EXPECTED_RESERVATIONS + EXPECTED_NOTIFICATIONS
WAIT_SECONDS = 30


class DemoFailed(Exception):
    """Something the demo expected did not happen."""


def manage(service: str, *args: str, env: dict[str, str]) -> str:
    """Run one management command of a service and return its output."""
    command = [sys.executable, str(SERVICES / service / "manage.py"), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise DemoFailed(f"{service} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def start_daemon(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(SERVICES / service / "manage.py"), "consume_signals"]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if text in line:
                return line
        if process.poll() is not None:
            raise DemoFailed(f"{log.stem} exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    raise DemoFailed(f"{log.stem} did not log {text!r} within {timeout:g} s")


def state(service: str, env: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(manage(service, "show_state", "--json", env=env))
    return result


def wait_for_events(env: dict[str, str]) -> None:
    """Poll both consumers until everything expected has arrived, printing progress."""
    deadline = time.monotonic() + WAIT_SECONDS
    seen = (-1, -1)
    while True:
        inventory, notifications = state("inventory", env), state("notifications", env)
        counts = (len(inventory["reservations"]), len(notifications["notifications"]))
        if counts != seen:
            print(
                f"  inventory: {counts[0]}/{EXPECTED_RESERVATIONS} reservations, "
                f"notifications: {counts[1]}/{EXPECTED_NOTIFICATIONS} notifications"
            )
            seen = counts
        if counts >= (EXPECTED_RESERVATIONS, EXPECTED_NOTIFICATIONS):
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"events still missing after {WAIT_SECONDS} s")
        time.sleep(0.5)


def print_summary(inventory: dict[str, Any], notifications: dict[str, Any]) -> None:
    events = {n["envelope_id"]: n["event_type"] for n in notifications["notifications"]}
    print("\ninventory received orders.order_placed and reserved:")
    for r in inventory["reservations"]:
        print(f"  order #{r['order_id']}: {r['quantity']} x {r['sku']:<7} event {r['envelope_id'][:8]}")
    for item in inventory["stock"]:
        print(f"  stock {item['sku']:<7} {item['available']:>3} available (low below {item['low_threshold']})")
    print("\nnotifications received:")
    for n in notifications["notifications"]:
        cause = n["causation_id"]
        caused = f"\n      caused by {events.get(cause, '?')} {cause[:8]}" if cause else ""
        print(
            f"  {n['event_type']:<20} {n['envelope_id'][:8]} from {n['source']:<9} "
            f"-> {n['recipient']}: {n['message']}{caused}"
        )


def stop(name: str, process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"{name} did not stop within 15 s of SIGTERM") from None
    print(f"  {name}: exit code {code}; {wait_for_line(log, 'stopped', process, 1).split(': ', 1)[-1]}")
    if code != 0:
        raise DemoFailed(f"{name} exited with {code}")


def forget_old_queues() -> None:
    """A crashed earlier demo (or an older version of it) may have left queues: start afresh."""
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        channel = connection.channel()
        for service in DAEMONS:
            settings = BroadcasterSettings.model_validate({"SERVICE_NAME": service, "QUEUE": QUEUE_PREFIX + service})
            topology = Topology.for_settings(settings)
            for queue in [topology.queue, topology.dead_letter_queue, *topology.retry_queues]:
                channel.queue_delete(queue)
            channel.exchange_delete(topology.requeue_exchange)
    finally:
        connection.close()


def service_env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",  # each service's own, whatever the shell says
        "SERVICE_DATA_DIR": str(data_dir),
        "SIGNALS_EXCHANGE": EXCHANGE,
        "SIGNALS_QUEUE_PREFIX": QUEUE_PREFIX,
        "PYTHONUNBUFFERED": "1",
    }


def place_orders(env: dict[str, str]) -> None:
    for email, lines, rollback in ORDERS:
        args = [arg for line in lines for arg in ("--line", line)] + (["--rollback"] if rollback else [])
        print(f"  {email} {' '.join(lines)}: {manage('orders', 'place_order', '--email', email, *args, env=env)}")


def run(data_dir: Path, daemons: dict[str, subprocess.Popen[bytes]]) -> None:
    env = service_env(data_dir)
    print(f"== setting up three services in {data_dir.relative_to(SERVICES.parent)}")
    for service in ("orders", *DAEMONS):
        manage(service, "migrate", "--verbosity", "0", env=env)
    print("\n".join(f"  inventory: {line}" for line in manage("inventory", "seed_stock", env=env).splitlines()))
    forget_old_queues()

    print("== starting the consumer daemons")
    for service in DAEMONS:
        log = data_dir / f"{service}.log"
        daemons[service] = start_daemon(service, env, log)
        line = wait_for_line(log, "consume_signals: started", daemons[service], timeout=20)
        print(f"  {service}: {line.split(': ', 1)[-1]}")

    print("== placing orders in the orders service")
    place_orders(env)

    print(f"== waiting (at most {WAIT_SECONDS} s) for inventory and notifications")
    wait_for_events(env)
    time.sleep(1)  # anything the rolled-back order had published would show up now
    inventory, notifications = state("inventory", env), state("notifications", env)
    if len(inventory["reservations"]) + len(notifications["notifications"]) > EXPECTED_TOTAL:
        raise DemoFailed("more events arrived than the committed orders explain")
    print_summary(inventory, notifications)

    print("\n== stopping the daemons with SIGTERM")
    for service, process in daemons.items():
        stop(service, process, data_dir / f"{service}.log")
    print(f"\ndemo passed; logs and databases are in {data_dir}")


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # show progress at once
    data_dir = SERVICES / ".data" / f"demo-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    data_dir.mkdir(parents=True)
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    # Killed or interrupted, still run `finally` and take the daemons down with us.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        run(data_dir, daemons)
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    except pika.exceptions.AMQPError as exc:
        print(f"\ndemo FAILED: cannot talk to RabbitMQ ({exc!r}); is it running?", file=sys.stderr)
        return 1
    finally:
        for process in daemons.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
