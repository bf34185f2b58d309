"""Ordered subscriptions over the real RabbitMQ: per-key order survives concurrency, retries and a killed daemon."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict

import pytest

from tests.integration.conftest import Broker, Service, wait_for

pytestmark = pytest.mark.faults

KEYS, PER_KEY = 50, 40


def _sequences(records: list[dict]) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        by_key[record["key"]].append(record["seq"])
    return by_key


def test_per_key_order_with_three_concurrent_daemons_retries_and_a_killed_daemon(
    service, rabbit: Broker, summarize
) -> None:
    consumer: Service = service(
        "ordered", "ordered", PARTITIONS="8", RETRY_DELAYS="0.05,0.05", FAIL_FIRST_EVERY="9", RECEIVER_SLEEP="0.002"
    )
    producer: Service = service("keyed", "keyed-producer")
    daemons = [consumer.daemon("--concurrency", "4") for _ in range(3)]
    total = KEYS * PER_KEY
    producer.fire("keyed", {}, count=total, keys=KEYS)  # k0/0, k1/0, ... k49/0, k0/1, ...
    wait_for(lambda: len(consumer.records()) >= total // 3, 60, "a third of the events")
    os.kill(daemons[0].proc.pid, signal.SIGKILL)  # its partitions move to the other two
    wait_for(lambda: len(_sequences(consumer.records())) == KEYS and _complete(consumer), 120, "every event")
    records = consumer.records()
    sequences = _sequences(records)
    repeats = 0
    for key, seen in sequences.items():
        first = list(dict.fromkeys(seen))  # retried or redelivered repeats dropped, first time kept
        repeats += len(seen) - len(first)
        assert first == list(range(PER_KEY)), f"{key} handled out of order: {seen}"
    assert all(d.alive for d in daemons[1:])
    time.sleep(1)
    assert rabbit.count(consumer.dead_letter_queue) == 0
    summarize(
        f"ordered: {total} events over {KEYS} keys, 3 daemons x 4 workers, one SIGKILLed: "
        f"lost 0, out of order 0, repeated {repeats} (redelivered after the kill)"
    )


def _complete(consumer: Service) -> bool:
    return all(set(seqs) >= set(range(PER_KEY)) for seqs in _sequences(consumer.records()).values())


def test_sigterm_with_sixteen_events_in_hand_finishes_and_acks_them_all(service, rabbit: Broker) -> None:
    consumer: Service = service("graceful", "consumer", RECEIVER_SLEEP="1.5", SHUTDOWN_TIMEOUT="20")
    daemon = consumer.daemon("--concurrency", "16")
    for n in range(16):
        rabbit.publish_event("relay.ping", {"n": n})
    wait_for(lambda: rabbit.count(consumer.queue) == 0, 10, "all 16 delivered")
    time.sleep(0.5)  # every worker is inside its 1.5 s receiver now
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0, daemon.log()
    assert sorted(record["payload"]["n"] for record in consumer.records()) == list(range(16))
    assert "stopped after 16 message(s) (acked 16)" in daemon.log()
    time.sleep(0.5)
    assert rabbit.count(consumer.queue) == 0  # acked, so nothing is delivered again
    second = consumer.daemon()  # a new daemon finds nothing to redo
    time.sleep(1.5)
    second.proc.send_signal(signal.SIGTERM)
    second.proc.wait(30)
    assert len(consumer.records()) == 16


def test_receivers_overlap_with_concurrency(service, rabbit: Broker) -> None:
    consumer: Service = service("overlap", "consumer", RECEIVER_SLEEP="0.4")
    consumer.daemon("--concurrency", "8")
    started = time.monotonic()
    for n in range(8):
        rabbit.publish_event("relay.ping", {"n": n})
    consumer.wait_records(8, timeout=20)
    elapsed = time.monotonic() - started
    assert elapsed < 8 * 0.4 / 2, f"8 receivers of 0.4 s took {elapsed:.2f} s: they did not overlap"
    assert len({record["pid"] for record in consumer.records()}) == 1


def test_an_ordered_event_is_retried_in_place_dead_lettered_and_replayed_into_its_partition(
    service, rabbit: Broker, tmp_path
) -> None:
    broken = tmp_path / "broken"
    broken.touch()
    consumer: Service = service("inplace", "ordered", PARTITIONS="4", RETRY_DELAYS="0.1,0.1", FAIL_WHILE=str(broken))
    producer: Service = service("keyed2", "keyed-producer")
    daemon = consumer.daemon()
    producer.fire("keyed", {"key": "k1", "seq": 0})
    wait_for(lambda: rabbit.count(consumer.dead_letter_queue) == 1, 15, "the dead letter")
    assert "retrying relay.keyed" in daemon.log()
    assert rabbit.count(consumer.queue) == 0  # never through the service queue or a delay queue
    [letter] = rabbit.take(consumer.dead_letter_queue)
    assert letter.headers["x-broadcaster-attempts"] == 3  # in place: 1 + len(RETRY_DELAYS)
    assert letter.headers["x-broadcaster-reason"] == "receiver-error"
    rabbit.channel.basic_publish("", consumer.dead_letter_queue, letter.body, letter.properties)  # put it back
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(20)
    broken.unlink()
    assert "replayed 1 of 1" in consumer.manage("dead_letters", "replay")
    partitions = [rabbit.count(f"{consumer.queue}.partition.{i}") for i in range(4)]
    assert sum(partitions) == 1, "the replayed event went back to its partition"
    assert rabbit.count(consumer.queue) == 0
    consumer.daemon()
    [record] = consumer.wait_records(1)
    assert (record["key"], record["seq"], record["attempt"]) == ("k1", 0, 1)
