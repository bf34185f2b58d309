"""Loop prevention across processes: re-emissions, causation chains and the hop limit."""

from __future__ import annotations

import json


def test_a_reemitted_signal_is_not_published_again(service, rabbit):
    observer = rabbit.observe("relay.ping")
    echo = service("echo", "echo")  # broadcasts ping as relay.ping and subscribes to relay.ping on ping
    daemon = echo.daemon("--max-messages", "1")

    echo.fire("ping", {"n": 1})

    log = daemon.wait_exit()  # it exits after one message, once what it published is confirmed
    assert "stopped after 1 message(s) (acked 1)" in log
    [record] = echo.records()
    assert record["payload"] == {"n": 1, "note": ""}
    [published] = rabbit.take_all(observer)
    assert published.properties.message_id == record["id"]
    assert rabbit.count(echo.queue) == 0


def test_an_event_a_receiver_causes_carries_the_causation_chain(service, rabbit):
    observer = rabbit.observe("relay.pong")
    relay = service("relay", "ping-to-pong")
    relay.daemon()

    cause = rabbit.publish_event("relay.ping", {"n": 10}, hops="2")

    [message] = rabbit.take(observer)
    headers = message.headers
    assert headers["ce-type"] == "relay.pong"
    assert headers["ce-source"] == "relay"
    assert headers["ce-causationid"] == cause
    assert headers["ce-hops"] == "3"
    assert headers["ce-id"] != cause
    assert json.loads(message.body) == {"n": 11}


def test_a_cycle_between_two_services_stops_at_the_hop_limit(service, rabbit):
    a = service("a", "ping-to-pong", MAX_HOPS="3")
    b = service("b", "pong-to-ping", MAX_HOPS="3")
    daemons = [a.daemon(), b.daemon()]

    first = rabbit.publish_event("relay.ping", {"n": 0})

    # ping 0 -> pong 1 -> ping 2 -> pong 3, whose answer would be the 4th hop.
    [dead] = rabbit.take(b.dead_letter_queue)
    assert dead.headers["x-broadcaster-reason"] == "hop-limit"
    assert dead.headers["ce-type"] == "relay.pong"
    assert dead.headers["ce-hops"] == "3"
    assert dead.headers["x-broadcaster-attempts"] == 1  # retrying a cycle would only repeat it
    assert dead.headers["x-broadcaster-routing-key"] == "relay.pong"
    assert json.loads(dead.body) == {"n": 3}

    assert [(r["type"], r["hops"], r["payload"]["n"]) for r in a.records()] == [
        ("relay.ping", 0, 0),
        ("relay.ping", 2, 2),
    ]
    assert [(r["type"], r["hops"]) for r in b.wait_records(2)] == [("relay.pong", 1), ("relay.pong", 3)]
    assert a.records()[0]["id"] == first
    assert all(daemon.alive for daemon in daemons)
    # Nothing is still travelling: each daemon handled exactly its two messages.
    assert "stopped after 2 message(s) (acked 2)" in daemons[0].stop()
    assert "stopped after 2 message(s) (acked 1, dead-lettered 1)" in daemons[1].stop()
    assert [rabbit.count(queue) for queue in (a.queue, b.queue, a.dead_letter_queue)] == [0, 0, 0]
