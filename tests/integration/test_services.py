"""The example services in services/, each run as its own processes over the real RabbitMQ.

Every test gets a fresh shop: its own exchange and queue prefix (a uuid), its own
SQLite files under tmp_path, the three services migrated and inventory stocked. The
services are driven only through their management commands, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest
from pydantic import BaseModel

from broadcaster.control import control_exchange, paused_marker
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Partitions, Topology
from schemas import OrderLine, OrderPlaced, OrderSaved, OrderSnapshot
from tests.integration.conftest import wait_for

SERVICES = Path(__file__).resolve().parents[2] / "services"
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CONSUMERS = ("inventory", "notifications")
STARTED = "consume_signals: started"

TIMEOUT = 20.0  # seconds: the services start as processes and migrate first
Rows = list[dict[str, Any]]


def at_least(count: int, rows: Callable[[], Rows]) -> Callable[[], Rows | None]:
    """A probe for `eventually`: the rows once there are `count` of them."""

    def probe() -> Rows | None:
        found = rows()
        return found if len(found) >= count else None

    return probe


class Daemon:
    """One `consume_signals` process; its stdout and stderr go to a log file."""

    def __init__(self, service: str, env: dict[str, str], log: Path, *args: str) -> None:
        self.service = service
        self.log_path = log
        command = [sys.executable, str(SERVICES / service / "manage.py"), "consume_signals", *args]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_started(self) -> None:
        def started() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"{self.service} exited with {self.process.returncode}:\n{self.log}")
            return STARTED in self.log

        wait_for(started, TIMEOUT, f"{self.service} to start")

    def wait_for_log(self, text: str) -> None:
        wait_for(lambda: text in self.log, TIMEOUT, f"{self.service} to log {text!r}")

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait for the daemon to stop by itself; its exit code."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.service} still running after {timeout:g} s:\n{self.log}")

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM, then the exit code; fails if the daemon takes longer than `timeout`."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.service} still running {timeout:g} s after SIGTERM:\n{self.log}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class Shop:
    """The three example services with their own exchange, queues and databases."""

    def __init__(self, tmp_path: Path) -> None:
        run = uuid.uuid4().hex[:12]
        self.exchange = f"test-shop-{run}"
        self.prefix = f"test-shop-{run}-"
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            # pytest-django exported the library's test settings; each service has its own.
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SERVICE_DATA_DIR": str(tmp_path),
            "SIGNALS_EXCHANGE": self.exchange,
            "SIGNALS_QUEUE_PREFIX": self.prefix,
            "BROADCASTER_BROKER_URL": BROKER_URL,
            "PYTHONUNBUFFERED": "1",
        }
        self.daemons: list[Daemon] = []

    def manage(self, service: str, *args: str, env: dict[str, str] | None = None) -> str:
        command = [sys.executable, str(SERVICES / service / "manage.py"), *args]
        done = subprocess.run(command, env=env or self.env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{service} {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout.strip()

    def start(self, service: str, *args: str) -> Daemon:
        """Start a consumer daemon of `service` and wait until it consumes."""
        log = self.tmp_path / f"{service}-{len(self.daemons)}.log"
        daemon = Daemon(service, self.env, log, *args)
        self.daemons.append(daemon)
        daemon.wait_started()
        return daemon

    def place_order(self, email: str, *lines: str) -> int:
        """Place an order through the orders service; its id."""
        args = [arg for line in lines for arg in ("--line", line)]
        return int(self.manage("orders", "place_order", "--verbosity", "0", "--email", email, *args))

    def state(self, service: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.manage(service, "show_state", "--json"))
        return result

    def notifications(self, event_type: str | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.state("notifications")["notifications"]
        return [row for row in rows if event_type in (None, row["event_type"])]

    def reservations(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.state("inventory")["reservations"]
        return rows

    def stock(self, sku: str) -> dict[str, Any]:
        return next(item for item in self.state("inventory")["stock"] if item["sku"] == sku)

    def publish_twice(self, event: str, payload: BaseModel, key: str | None = None) -> str:
        """Publish one CloudEvent twice, as a redelivery would; its id."""
        event_id = str(uuid.uuid4())
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "orders",
            "ce-type": event,
            "ce-time": datetime.now(UTC).isoformat(),
            "ce-schemaversion": "1.0",
            **({"ce-partitionkey": key} if key is not None else {}),
        }
        properties = pika.BasicProperties(content_type="application/json", headers=headers, delivery_mode=2)
        connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for _ in range(2):
                channel.basic_publish(self.exchange, event, payload.model_dump_json().encode(), properties)
        finally:
            connection.close()
        return event_id

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()
        self.delete_broker_objects()

    def delete_broker_objects(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        try:
            channel = connection.channel()
            for service in CONSUMERS:
                settings = BroadcasterSettings.model_validate({"SERVICE_NAME": service, "QUEUE": self.prefix + service})
                topology = Topology.for_settings(settings)
                partitions = Partitions.for_settings(settings)
                queues = [topology.queue, topology.dead_letter_queue, *topology.retry_queues]
                for queue in queues + [partition.queue for partition in partitions.queues]:
                    channel.queue_delete(queue)
                channel.exchange_delete(topology.requeue_exchange)
                channel.exchange_delete(partitions.exchange)
                channel.exchange_delete(control_exchange(settings))  # the daemons declare it
                channel.exchange_delete(paused_marker(settings))
            channel.exchange_delete(self.exchange)
        finally:
            connection.close()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    shop = Shop(tmp_path)
    try:
        for service in ("orders", *CONSUMERS):
            shop.manage(service, "migrate", "--verbosity", "0")
        shop.manage("inventory", "seed_stock")  # MUG 100, TEE 40, POSTER 12 (low below 5)
        yield shop
    finally:
        shop.close()


def test_an_order_reaches_both_consuming_services(shop: Shop) -> None:
    for service in CONSUMERS:
        shop.start(service)

    order_id = shop.place_order("alice@example.com", "MUG:2", "TEE:1")

    reservations = wait_for(at_least(2, shop.reservations), TIMEOUT, "both reservations")
    placed = wait_for(lambda: shop.notifications("orders.order_placed"), TIMEOUT, "order_placed notification")
    assert {(r["order_id"], r["sku"], r["quantity"]) for r in reservations} == {
        (order_id, "MUG", 2),
        (order_id, "TEE", 1),
    }
    assert shop.stock("MUG")["available"] == 98
    assert placed[0]["recipient"] == "alice@example.com"
    assert placed[0]["message"] == f"Thank you! Order #{order_id} (3 items, 44.00)."
    # One event, one copy per service: both saw the same envelope id.
    assert {r["envelope_id"] for r in reservations} == {placed[0]["envelope_id"]}


def test_a_redelivered_event_reserves_and_notifies_once(shop: Shop) -> None:
    inventory, notifications = (shop.start(service) for service in CONSUMERS)
    event = OrderPlaced(
        order_id=41,
        customer_email="again@example.com",
        lines=[OrderLine(sku="TEE", quantity=5)],
        total=Decimal("95.00"),
        placed_at=datetime.now(UTC),
    )

    event_id = shop.publish_twice("orders.order_placed", event)

    inventory.wait_for_log("already handled (inbox)")  # its subscription has inbox=True
    notifications.wait_for_log("(redelivered event)")  # it deduplicates by envelope id itself
    assert [(r["envelope_id"], r["quantity"]) for r in shop.reservations()] == [(event_id, 5)]
    assert shop.stock("TEE")["reserved"] == 5
    assert [n["envelope_id"] for n in shop.notifications()] == [event_id]


def test_a_model_signal_is_received_as_order_saved(shop: Shop) -> None:
    shop.start("notifications")

    order_id = shop.place_order("bob@example.com", "TEE:2")

    saved = wait_for(lambda: shop.notifications("orders.order_saved"), TIMEOUT, "order_saved notification")
    assert len(saved) == 1
    assert saved[0]["source"] == "orders"
    assert saved[0]["message"] == f"Order #{order_id} created: placed, 38.00."


def test_inventory_replicates_orders_in_order_and_never_goes_back_to_an_older_snapshot(shop: Shop) -> None:
    shop.start("inventory", "--concurrency", "4")
    first = shop.place_order("ann@example.com", "MUG:1")
    second = shop.place_order("bob@example.com", "TEE:1")
    shop.manage("orders", "cancel_order", str(first))  # revision 2 of the first order

    def replicas() -> dict[int, dict[str, Any]]:
        return {row["order_id"]: row for row in shop.state("inventory")["orders"]}

    wait_for(lambda: replicas().get(first, {}).get("revision") == 2, TIMEOUT, "the cancellation replicated")
    wait_for(lambda: second in replicas(), TIMEOUT, "the second order replicated")
    assert replicas()[first]["status"] == "cancelled"
    # An older snapshot of the first order arriving late (a replay) is skipped.
    stale = OrderSaved(
        instance=OrderSnapshot(id=first, status="placed", customer_email="ann@example.com", total=10, revision=1),
        created=True,
    )
    shop.publish_twice("orders.order_saved", stale, key=str(first))
    time.sleep(2)
    assert replicas()[first] == {"order_id": first, "status": "cancelled", "revision": 2}


def test_a_rolled_back_order_publishes_nothing(shop: Shop) -> None:
    for service in CONSUMERS:
        shop.start(service)

    output = shop.manage("orders", "place_order", "--email", "undo@example.com", "--line", "TEE:3", "--rollback")
    assert re.fullmatch(r"order #\d+ rolled back: nothing was stored and nothing published", output)
    # The rolled-back command has exited (and flushed): anything it had published is
    # queued before what this order publishes.
    later = shop.place_order("later@example.com", "MUG:1")

    wait_for(at_least(2, shop.notifications), TIMEOUT, "the later order's two notifications")
    wait_for(shop.reservations, TIMEOUT, "the later order's reservation")
    assert {n["recipient"] for n in shop.notifications("orders.order_placed")} == {"later@example.com"}
    assert [(r["order_id"], r["sku"]) for r in shop.reservations()] == [(later, "MUG")]
    assert shop.stock("TEE")["reserved"] == 0


def test_stock_low_from_inventory_reaches_notifications_with_its_cause(shop: Shop) -> None:
    for service in CONSUMERS:
        shop.start(service)

    shop.place_order("carol@example.com", "POSTER:8")  # 12 on hand - 8 = 4, below 5

    low = wait_for(lambda: shop.notifications("inventory.stock_low"), TIMEOUT, "stock_low notification")
    placed = wait_for(lambda: shop.notifications("orders.order_placed"), TIMEOUT, "order_placed notification")
    (reservation,) = shop.reservations()
    assert low[0]["source"] == "inventory"
    assert low[0]["message"] == "POSTER is low: 4 left (threshold 5)."
    # Caused by the order_placed event inventory was handling, the one notifications saw too.
    assert low[0]["causation_id"] == reservation["envelope_id"] == placed[0]["envelope_id"]
    assert placed[0]["causation_id"] == ""


def test_two_notifications_daemons_share_the_queue(shop: Shop) -> None:
    # Each stops by itself after 3 messages, so 6 messages need both of them.
    first = shop.start("notifications", "--prefetch", "1", "--max-messages", "3")
    second = shop.start("notifications", "--prefetch", "1", "--max-messages", "3")

    for n in range(3):
        shop.place_order(f"c{n}@example.com", "MUG:1")  # order_placed and order_saved

    for daemon in (first, second):
        assert daemon.wait_exit() == 0, daemon.log
    rows = shop.notifications()
    assert len(rows) == 6
    assert len({row["envelope_id"] for row in rows}) == 6
    assert sorted(n["recipient"] for n in shop.notifications("orders.order_placed")) == [
        f"c{n}@example.com" for n in range(3)
    ]
    handled_by = [row["handled_by"] for row in rows]
    assert sorted(handled_by.count(worker) for worker in set(handled_by)) == [3, 3]


def test_sigterm_stops_a_daemon_cleanly(shop: Shop) -> None:
    daemon = shop.start("inventory")
    shop.place_order("dave@example.com", "MUG:1")
    wait_for(shop.reservations, TIMEOUT, "the reservation")

    started = time.monotonic()
    assert daemon.terminate(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert "consume_signals: stopped" in daemon.log


def test_a_daemon_without_broker_exits_with_a_clear_message(shop: Shop) -> None:
    env = {**shop.env, "BROADCASTER_BROKER_URL": "amqp://guest:secret@127.0.0.1:1/%2F"}
    command = [sys.executable, str(SERVICES / "inventory" / "manage.py"), "consume_signals"]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode != 0
    assert "127.0.0.1:1" in done.stderr
    assert "secret" not in done.stderr + done.stdout


# Posts to the orders service's async view through Django's ASGI handler, in an event loop.
_POST_THROUGH_ASGI = """
import asyncio, json, sys
from django.test import AsyncClient
async def main():
    response = await AsyncClient().post("/orders/", json.loads(sys.argv[-1]), content_type="application/json")
    print(response.status_code, response.content.decode())
asyncio.run(main())
"""


def test_an_async_view_publishes_with_asend(shop: Shop) -> None:
    shop.start("notifications")
    order = {"email": "async@example.com", "lines": [["POSTER", 2]]}
    env = {**shop.env, "DJANGO_ALLOWED_HOSTS": "testserver"}
    script = _POST_THROUGH_ASGI.replace("sys.argv[-1]", repr(json.dumps(order)))
    status, body = shop.manage("orders", "shell", "--no-imports", "-c", script, env=env).split(" ", 1)
    assert (status, json.loads(body)["total"]) == ("201", "14.50")
    placed = wait_for(lambda: shop.notifications("orders.order_placed"), TIMEOUT, "order_placed notification")
    assert placed[0]["recipient"] == "async@example.com"
    assert placed[0]["message"] == f"Thank you! Order #{json.loads(body)['order_id']} (2 items, 14.50)."
