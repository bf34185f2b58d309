"""`python -m bench.profile`: pyinstrument profiles of the send() path, the I/O thread and the daemon.

Writes bench/results/profile-caller.txt, profile-io-thread.txt, profile-daemon.txt,
profile-outbox-write.txt, profile-outbox-relay.txt and profile-breakdown.txt. The I/O
thread is profiled by starting pyinstrument inside it (a wrapper around Publisher._run set
here, the library is not changed); the daemon runs `consume_signals` in a child process
under pyinstrument over a queue the parent filled.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from typing import Any

from bench import common
from bench.common import RESULTS, Names

COUNT = 20_000


def _render(profiler: Any) -> str:
    return str(profiler.output_text(unicode=False, color=False, show_all=False, timeline=False))


def _profile_io_thread() -> tuple[list[Any], threading.Event]:
    """Run pyinstrument inside the publisher's I/O thread until the returned event is set."""
    from pyinstrument import Profiler  # noqa: PLC0415

    from broadcaster.publisher import Publisher  # noqa: PLC0415

    profilers: list[Any] = []
    done = threading.Event()
    original = Publisher._run

    def run(self: Publisher) -> None:
        profiler = Profiler(interval=0.0005)
        profiler.start()
        profilers.append(profiler)

        def stop_when_done() -> None:
            if done.is_set():
                profiler.stop()
            else:
                assert self._ioloop is not None
                self._ioloop.call_later(0.05, stop_when_done)

        assert self._ioloop is not None
        self._ioloop.call_later(0.05, stop_when_done)
        original(self)

    Publisher._run = run  # type: ignore[method-assign]
    return profilers, done


def caller_and_io_thread(count: int) -> None:
    """Profile `count` send() calls on the caller's thread and the I/O thread that publishes them."""
    from pyinstrument import Profiler  # noqa: PLC0415

    from bench import library  # noqa: PLC0415

    io_profilers, done = _profile_io_thread()
    library.warm_up()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    library.publish_throughput(count)
    profiler.stop()
    done.set()
    (RESULTS / "profile-caller.txt").write_text(_render(profiler))
    threading.Event().wait(0.3)
    if io_profilers and not io_profilers[0].is_running:
        (RESULTS / "profile-io-thread.txt").write_text(_render(io_profilers[0]))


def _per_call_us(function: Any, count: int = 20_000) -> float:
    for _ in range(500):
        function()
    start = time.perf_counter_ns()
    for _ in range(count):
        function()
    return (time.perf_counter_ns() - start) / count / 1000


def _dropped_send_us(kwargs: dict[str, Any]) -> float:
    """A broadcast send() with a transport that drops the event, minus a send() nobody receives."""
    from bench.events import order_placed, order_placed_plain  # noqa: PLC0415
    from bench.library import Order, _Discard  # noqa: PLC0415
    from broadcaster.transport import use_transport  # noqa: PLC0415

    with use_transport(_Discard()):
        broadcast = _per_call_us(lambda: order_placed.send(Order, **kwargs))
    return broadcast - _per_call_us(lambda: order_placed_plain.send(Order, **kwargs))


def breakdown() -> list[tuple[str, float]]:
    """Microseconds per event of each step, each timed alone in a hot loop (no I/O, no other thread)."""
    import pika  # noqa: PLC0415
    from django.db import close_old_connections, transaction  # noqa: PLC0415
    from django.dispatch import Signal  # noqa: PLC0415

    from bench.events import EVENT, BenchOrderPlaced, kwargs_for, order_placed_plain  # noqa: PLC0415
    from bench.library import Order  # noqa: PLC0415
    from broadcaster.dispatch import dispatch  # noqa: PLC0415
    from broadcaster.envelope import Envelope, OutboundMessage, decode, properties_for  # noqa: PLC0415
    from broadcaster.registry import Subscription, broadcasts  # noqa: PLC0415
    from broadcaster.settings import get_settings  # noqa: PLC0415

    receiver = broadcasts()[0]
    kwargs = kwargs_for(1)
    data = dict(kwargs, signal=order_placed_plain)  # what the receiver is given
    payload = BenchOrderPlaced.model_validate(data, from_attributes=True)
    message = receiver.message(Order, kwargs, None)
    envelope = message.envelope
    properties = properties_for(envelope)
    remote = Signal()
    remote.connect(lambda sender, **kwargs: None, weak=False)
    subscription = Subscription(
        event=EVENT, schema=BenchOrderPlaced, signal=remote, sender=BenchOrderPlaced, schema_version="1.0"
    )
    settings = get_settings()

    def frames() -> None:
        pika.frame.Method(1, pika.spec.Basic.Publish(exchange="x", routing_key=EVENT)).marshal()
        pika.frame.Header(1, len(message.body), properties).marshal()
        pika.frame.Body(1, message.body).marshal()

    return [
        (
            "caller: Signal.send with no receiver (baseline)",
            _per_call_us(lambda: order_placed_plain.send(Order, **kwargs)),
        ),
        ("caller: broadcast send(), all of it, events dropped", _dropped_send_us(kwargs)),
        (
            "caller:   Broadcast.message (validate, serialize, draft)",
            _per_call_us(lambda: receiver.message(Order, data, None)),
        ),
        (
            "caller:     schema validator, from_attributes",
            _per_call_us(lambda: BenchOrderPlaced.__pydantic_validator__.validate_python(data, from_attributes=True)),
        ),
        (
            "caller:     serializer.to_json",
            _per_call_us(lambda: BenchOrderPlaced.__pydantic_serializer__.to_json(payload)),
        ),
        (
            "caller:     OutboundMessage.draft",
            _per_call_us(
                lambda: OutboundMessage.draft(
                    message.body, source="s", type=EVENT, subject="x", schema_version="1", cause=None, traceparent=None
                )
            ),
        ),
        (
            "caller:   in a transaction? (Django's connection lookup)",
            _per_call_us(lambda: transaction.get_connection("default").in_atomic_block),
        ),
        (
            "I/O thread: the envelope (Envelope.new, id from the pool)",
            _per_call_us(lambda: Envelope.new(source="s", type=EVENT, subject="x", schema_version="1.0")),
        ),
        ("I/O thread: properties_for (ce- headers, BasicProperties)", _per_call_us(lambda: properties_for(envelope))),
        ("I/O thread: pika frame marshalling (method, header, body)", _per_call_us(frames)),
        ("daemon: decode (headers -> Envelope)", _per_call_us(lambda: decode(properties, message.body))),
        (
            "daemon: schema.model_validate_json",
            _per_call_us(lambda: BenchOrderPlaced.model_validate_json(message.body)),
        ),
        (
            "daemon: dispatch (decode, validate, re-emit to a no-op receiver)",
            _per_call_us(
                lambda: dispatch(properties, message.body, settings=settings, subscriptions={EVENT: subscription})
            ),
        ),
        ("daemon: close_old_connections", _per_call_us(close_old_connections)),
    ]


def daemon_child(count: int) -> None:
    """In the child: consume_signals --max-messages `count` under pyinstrument."""
    import django  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415
    from pyinstrument import Profiler  # noqa: PLC0415

    django.setup()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    call_command("consume_signals", "--max-messages", str(count))
    profiler.stop()
    (RESULTS / "profile-daemon.txt").write_text(_render(profiler))


def outbox_child(count: int) -> None:
    """In the child (PUBLISH_MODE outbox): profile writing `count` rows, then relaying them."""
    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connection, transaction  # noqa: PLC0415
    from pyinstrument import Profiler  # noqa: PLC0415

    django.setup()
    from bench.events import kwargs_for, order_placed  # noqa: PLC0415
    from bench.library import Order  # noqa: PLC0415
    from broadcaster import outbox  # noqa: PLC0415

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS bench_{settings.RUN_ID}")
    call_command("migrate", verbosity=0)
    outbox.wake = lambda *args, **kwargs: None  # time the relay alone, as the bench does
    kwargs = kwargs_for(1)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(count // 100):
        with transaction.atomic():
            for _ in range(100):
                order_placed.send(sender=Order, **kwargs)
    profiler.stop()
    (RESULTS / "profile-outbox-write.txt").write_text(_render(profiler))
    relay = outbox.Relay()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    relay.run_once()
    profiler.stop()
    relay.close()
    (RESULTS / "profile-outbox-relay.txt").write_text(_render(profiler))


def main() -> None:
    if sys.argv[1:2] == ["daemon"]:
        daemon_child(int(sys.argv[2]))
        return
    if sys.argv[1:2] == ["outbox"]:
        outbox_child(int(sys.argv[2]))
        return
    run_id = uuid.uuid4().hex[:10]
    os.environ.update(common.child_env(run_id, BENCH_ROLE="producer", BENCH_LOG_LEVEL="WARNING"))
    import django  # noqa: PLC0415

    django.setup()
    from bench.run import _clean_up, _consumer_topology, _declare, _queues  # noqa: PLC0415

    names = Names(run_id)
    topology = _consumer_topology(names)
    queues = _queues(names, topology)
    RESULTS.mkdir(exist_ok=True)
    try:
        common.setup_broker(names)
        _declare(topology)
        steps = breakdown()
        text = "\n".join(f"{us:8.2f} us  {what}" for what, us in steps)
        (RESULTS / "profile-breakdown.txt").write_text(text + "\n")
        print(text)
        caller_and_io_thread(COUNT)
        env = common.child_env(run_id, BENCH_ROLE="consumer", BENCH_RECEIVER="noop")
        with common.child(["-m", "bench.profile", "daemon", str(COUNT + 50)], env) as daemon:
            daemon.wait(timeout=180)
        env = common.child_env(run_id, BENCH_ROLE="producer", BENCH_EVENT=common.SINK_KEY, BENCH_PUBLISH_MODE="outbox")
        with common.child(["-m", "bench.profile", "outbox", "10000"], env) as relay:
            relay.wait(timeout=180)
    finally:
        _clean_up(names, queues)
    print(f"profiles written to {RESULTS}/profile-*.txt", file=sys.stderr)


if __name__ == "__main__":
    main()
