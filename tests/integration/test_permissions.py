"""`broadcaster_topology --permissions` applied to the real broker: each service only does its own job.

Two services of the relay project: A broadcasts relay.ping (and relay.priced) and
subscribes to relay.pong; B subscribes to relay.ping and answers with relay.pong. Each
gets the broker user its own printed commands make; the tests then show what the broker
lets each user do.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from broadcaster.permissions import PASSWORD_PLACEHOLDER
from broadcaster.topology import Topology
from tests.broker_admin import delete_user, rabbitmqctl, strong_password, unique
from tests.integration.conftest import DEFAULT_RETRY_DELAYS, Broker, Service, wait_for

pytestmark = pytest.mark.faults  # rabbitmqctl calls take about a second each

ACCESS_REFUSED = 403


class Restricted:
    """A service of the test with the broker user its own permission commands made."""

    def __init__(self, service: Service, user: str, password: str) -> None:
        self.service = service
        self.user = user
        self.password = password
        self.url = f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:5672/%2F"
        self.connections: list[pika.BlockingConnection] = []
        service.env["BROADCASTER_BROKER_URL"] = self.url

    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        """A new channel (in confirm mode) on a new connection as this user: a refusal closes only it."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.connections.append(connection)
        channel = connection.channel()
        channel.confirm_delivery()
        return channel

    def close(self) -> None:
        for connection in self.connections:
            if connection.is_open:
                connection.close()


def _apply(printed: str, password: str) -> list[str]:
    """Run every rabbitmqctl line of `printed`, with the real password; return the commands run."""
    commands = [line for line in printed.splitlines() if line.startswith("rabbitmqctl ")]
    for line in commands:
        args = [password if arg == PASSWORD_PLACEHOLDER else arg for arg in shlex.split(line)[1:]]
        rabbitmqctl(*args)
    return commands


@pytest.fixture
def restricted(service: Callable[..., Service]) -> Iterator[Callable[..., Restricted]]:
    """Factory: a service whose user is made from its own `--permissions` output; users deleted afterwards."""
    made: list[Restricted] = []
    users: list[str] = []

    def make(name: str, role: str, **settings: str) -> Restricted:
        one = service(name, role, **settings)
        user, password = unique(f"perm-{name}"), strong_password()
        users.append(user)
        printed = one.manage("broadcaster_topology", "--permissions", "--user", user)
        assert PASSWORD_PLACEHOLDER in printed
        commands = _apply(printed, password)
        assert [shlex.split(line)[1] for line in commands] == ["add_user", "set_permissions", "set_topic_permissions"]
        made.append(Restricted(one, user, password))
        return made[-1]

    yield make
    for one in made:
        one.close()
    for user in users:
        delete_user(user)


def _refused(action: Callable[[], object]) -> pika.exceptions.ChannelClosedByBroker:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        action()
    assert caught.value.reply_code == ACCESS_REFUSED, caught.value
    assert "ACCESS_REFUSED" in caught.value.reply_text
    return caught.value


def _ce(event: str, source: str) -> pika.BasicProperties:
    headers = {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": source, "ce-type": event}
    return pika.BasicProperties(content_type="application/json", headers=headers, delivery_mode=2)


@pytest.fixture
def pair(restricted: Callable[[str, str], Restricted], rabbit: Broker) -> tuple[Restricted, Restricted]:
    a = restricted("a", "producer,pong-to-ping")
    b = restricted("b", "ping-to-pong")
    b.service.daemon()  # B's restricted user may declare its topology and consume
    # A's queue, declared by A's own user, as A's daemon would (not run: A answers pong with ping).
    own = Topology(rabbit.exchange, a.service.queue, "classic", DEFAULT_RETRY_DELAYS)
    own.declare(a.channel(), ["relay.pong"])
    return a, b


def test_topology_without_permissions_names_exchange_queues_and_bindings(service, rabbit: Broker) -> None:
    b = service("b", "ping-to-pong")
    printed = b.manage("broadcaster_topology")
    assert f"exchange {rabbit.exchange} (durable topic" in printed
    assert "publishes relay.pong" in printed
    assert f"queue {b.queue} (classic, durable)\n  bound to {rabbit.exchange} with relay.ping" in printed
    assert f"queue {b.queue}.dead-letter" in printed
    assert f"queue {b.queue}.delay.1000ms (retry: back to {b.queue} after 1 s)" in printed
    assert "rabbitmqctl" not in printed


def test_each_service_publishes_its_own_events_and_reads_its_own_queue(pair: tuple[Restricted, Restricted]) -> None:
    a, b = pair
    a.service.fire("ping", {"n": 1})  # through the library's publisher, as A's user
    [record] = b.service.wait_records(1)
    assert (record["type"], record["source"]) == ("relay.ping", "a")

    # B's receiver answered with relay.pong, published as B's user, into A's queue.
    channel = a.channel()
    method, properties, _ = wait_for(
        lambda: (got := channel.basic_get(a.service.queue, auto_ack=True))[0] and got, 10, "relay.pong in A's queue"
    )
    assert method.routing_key == "relay.pong"
    assert properties.headers["ce-source"] == "b"
    assert properties.user_id == b.user  # the broker checked it is B's connection


def test_a_may_not_publish_b_s_event_type(pair: tuple[Restricted, Restricted], rabbit: Broker) -> None:
    a, b = pair
    channel = a.channel()
    channel.basic_publish(rabbit.exchange, "relay.ping", b'{"n": 2}', _ce("relay.ping", "a"))  # its own: fine
    error = _refused(lambda: channel.basic_publish(rabbit.exchange, "relay.pong", b'{"n": 2}', _ce("relay.pong", "a")))
    assert "relay.pong" in error.reply_text
    assert b.service.wait_records(1)[0]["source"] == "a"
    assert rabbit.count(b.service.queue) == 0  # nothing forged reached B


def test_a_may_not_read_b_s_queues_nor_bind_to_other_events(
    pair: tuple[Restricted, Restricted], rabbit: Broker
) -> None:
    a, b = pair
    _refused(lambda: a.channel().basic_get(b.service.queue, auto_ack=True))
    _refused(lambda: a.channel().basic_get(b.service.dead_letter_queue, auto_ack=True))
    _refused(lambda: a.channel().queue_delete(b.service.queue))
    # Binding its own queue to every event would let A read B's traffic: topic read permission refuses it.
    _refused(lambda: a.channel().queue_bind(a.service.queue, rabbit.exchange, routing_key="relay.#"))
    _refused(lambda: a.channel().exchange_declare(f"{rabbit.exchange}-other", "topic", durable=True))


def test_a_producer_only_service_gets_no_queue_and_no_default_exchange(restricted, rabbit: Broker) -> None:
    producer = restricted("p", "producer")
    channel = producer.channel()
    channel.basic_publish(rabbit.exchange, "relay.priced", b'{"sku": "x", "amount": 1}', _ce("relay.priced", "p"))
    _refused(lambda: producer.channel().queue_declare(unique("p-queue"), durable=True))
    _refused(lambda: producer.channel().basic_publish("", "anything", b"{}", _ce("relay.ping", "p")))


def test_a_subscribing_service_cannot_write_into_another_service_s_queue(
    pair: tuple[Restricted, Restricted], rabbit: Broker
) -> None:
    a, b = pair
    forged = _ce("relay.ping", "not-a")
    # Retries, dead letters and replays go through each service's own requeue exchange, so
    # no service's user needs the default exchange, which reaches every queue of the vhost.
    _refused(lambda: a.channel().basic_publish("", b.service.queue, b'{"n": 99}', forged))
    _refused(lambda: a.channel().basic_publish(f"{b.service.queue}.requeue", b.service.queue, b'{"n": 99}', forged))


def test_with_unrouted_queue_a_producer_declares_and_parks_what_no_queue_takes(
    restricted: Callable[..., Restricted], rabbit: Broker
) -> None:
    parking = unique(f"{rabbit.exchange}.parking")
    rabbit.queues.add(parking)
    rabbit.channel.exchange_delete(rabbit.exchange)  # declared again below, with its alternate exchange
    producer = restricted("u", "producer", UNROUTED_QUEUE=parking)
    printed = producer.service.manage("broadcaster_topology")
    assert f"queue {parking} (classic, durable; UNROUTED_QUEUE)" in printed
    try:
        # The release step, as the producer's own user: EXCHANGE with its alternate, the queue.
        producer.service.manage("broadcaster_topology", "--apply")
        producer.service.fire("ping", {"n": 1})  # no queue is bound to relay.ping
        [parked] = rabbit.take(parking, 1)
        assert parked.routing_key == "relay.ping"
        # Read on the exchange serves its alternate exchange only: binding to an event stays refused.
        _refused(lambda: producer.channel().queue_bind(parking, rabbit.exchange, routing_key="relay.pong"))
    finally:
        rabbit.channel.exchange_delete(f"{rabbit.exchange}.unrouted")
