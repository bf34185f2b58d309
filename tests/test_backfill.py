"""broadcast_backfill against PostgreSQL and the real broker: existing rows published as ordinary events."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models.signals import post_save
from pydantic import BaseModel, ConfigDict

import broadcaster
from broadcaster.exceptions import BrokerRefused, PermanentError
from broadcaster.settings import get_settings
from broadcaster.topology import Topology
from tests.broker_admin import delete_user, rabbitmqctl, strong_password
from tests.conftest import Broker, wait_for
from tests.testapp.models import Article

EVENT = "ops.article_saved"


class ArticleSnapshot(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    words: int


class ArticleSaved(BaseModel):
    instance: ArticleSnapshot
    created: bool


@pytest.fixture
def articles(db: Any) -> list[Article]:
    """Five rows made before the broadcast exists (as in a service that adds one later)."""
    return [Article.objects.create(title=f"a{n}", words=n % 2) for n in range(5)]


@pytest.fixture
def registered(articles: list[Article]) -> list[Article]:
    broadcaster.broadcast(post_save, sender="testapp.Article", event=EVENT, schema=ArticleSaved, key="instance.id")
    return articles


def backfill(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of broadcast_backfill."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("broadcast_backfill", "testapp.Article", "--event", EVENT, *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_every_row_is_published_in_key_order_with_the_broadcasts_schema_key_and_marker(
    broker: Broker, registered: list[Article]
) -> None:
    tap = broker.tap(EVENT)
    code, out, err = backfill("--batch", "2")
    assert code == 0
    received = broker.drain(tap)
    assert [json.loads(m.body) for m in received] == [
        {"instance": {"id": a.pk, "title": a.title, "words": a.words}, "created": False} for a in registered
    ]
    assert all(m.headers["ce-backfill"] == "true" for m in received)
    assert [m.headers["ce-partitionkey"] for m in received] == [str(a.pk) for a in registered]
    assert all(m.headers["ce-type"] == EVENT and m.headers["ce-source"] == "tests" for m in received)
    assert len({m.headers["ce-id"] for m in received}) == 5
    progress = err.strip().splitlines()
    assert len(progress) == 3  # batches of 2, 2 and 1
    assert progress[0].endswith(f"(resume with --after {registered[1].pk})")
    assert "5/5 100%" in progress[-1]
    assert out.strip() == (
        f"published 5 {EVENT} event(s) of testapp.Article to exchange {broker.exchange!r}; "
        f"last primary key {registered[-1].pk}"
    )


def test_after_resumes_and_filters_narrow(broker: Broker, registered: list[Article]) -> None:
    tap = broker.tap(EVENT)
    assert backfill("--after", str(registered[2].pk))[0] == 0
    assert [json.loads(m.body)["instance"]["id"] for m in broker.drain(tap)] == [a.pk for a in registered[3:]]
    assert backfill("--filter", "words=1", "--filter", "title__startswith=a")[0] == 0
    assert [json.loads(m.body)["instance"]["id"] for m in broker.drain(tap)] == [registered[1].pk, registered[3].pk]


def test_target_sends_to_one_services_queue_only(broker: Broker, registered: list[Article]) -> None:
    tap = broker.tap(EVENT)
    topology = Topology.for_settings(get_settings())  # the target service's queue, as its daemon declares it
    topology.declare(broker.connection.channel(), [])
    code, out, _ = backfill("--target", topology.queue)
    assert code == 0
    assert f"to service {topology.queue!r}" in out
    assert broker.count(topology.queue) == 5
    assert broker.count(tap) == 0  # the other subscribers see nothing

    with pytest.raises(CommandError, match="is the service deployed") as missing:
        backfill("--target", f"{topology.queue}-absent")
    assert f"exchange '{topology.queue}-absent.requeue' does not exist" in str(missing.value)
    assert isinstance(missing.value.__cause__, PermanentError)  # retrying the same command changes nothing


def test_a_subscriber_sees_ordinary_signed_events(broker: Broker, daemon: Any, settings: Any, registered: Any) -> None:
    keys = {"tests": {"k1": "backfill-signing-secret"}}
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "SIGNING_KEYS": keys,
        "SIGNING_KEY_ID": "k1",
        "REQUIRE_SIGNATURES": True,
    }
    seen: list[dict[str, Any]] = []
    broadcaster.subscribe(EVENT, schema=ArticleSaved).connect(lambda **kw: seen.append(kw), weak=False)
    consumer = daemon()
    assert backfill()[0] == 0
    wait_for(lambda: len(seen) == 5, "the five backfilled events")
    assert sorted(kw["instance"].id for kw in seen) == sorted(a.pk for a in registered)
    assert consumer.counts["acked"] == 5
    assert broker.count(consumer.topology.dead_letter_queue) == 0  # the ce-backfill attribute is signed too


def test_unrouted_events_are_reported_with_their_own_exit_code(broker: Broker, registered: Any) -> None:
    code, out, _ = backfill()
    assert code == 3
    assert f"5 of them reached no queue: no service subscribes to {EVENT} yet" in out


def test_bad_input_names_what_is_wrong(broker: Broker, registered: Any) -> None:
    with pytest.raises(CommandError, match=r"no broadcast of event .ops\.nothing. has sender testapp\.Article"):
        call_command("broadcast_backfill", "testapp.Article", "--event", "ops.nothing")
    with pytest.raises(CommandError, match="not an installed model"):
        call_command("broadcast_backfill", "testapp.Nothing", "--event", EVENT)
    with pytest.raises(CommandError, match="bad --filter"):
        backfill("--filter", "colour=red")
    with pytest.raises(CommandError, match="write it as field=value"):
        backfill("--filter", "words")


@pytest.fixture
def publisher_only_user(broker: Broker) -> Iterator[str]:
    """A broker user restricted as `broadcaster_topology --permissions` restricts a publishing service."""
    name, password = f"backfill-{uuid.uuid4().hex[:8]}", strong_password()
    exchange = broker.exchange.replace(".", r"\.")
    rabbitmqctl("add_user", name, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", name, f"^{exchange}$", f"^{exchange}$", "^$")
        yield f"amqp://{name}:{password}@127.0.0.1:5672/%2F"
    finally:
        delete_user(name)


def test_target_needs_write_on_the_targets_requeue_exchange(
    broker: Broker, registered: Any, settings: Any, publisher_only_user: str
) -> None:
    Topology.for_settings(get_settings()).declare(broker.connection.channel(), [])
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": publisher_only_user}
    with pytest.raises(CommandError) as refused:
        backfill("--target", broker.exchange)
    message = str(refused.value)
    assert f"may not write to exchange '{broker.exchange}.requeue'" in message
    assert "nothing was published" in message
    assert isinstance(refused.value.__cause__, BrokerRefused)
    assert publisher_only_user.split(":")[2].split("@", maxsplit=1)[0] not in message  # never the password
    assert broker.count(broker.exchange) == 0


def test_help_has_an_example() -> None:
    result = subprocess.run(
        [".venv/bin/django-admin", "help", "broadcast_backfill", "--settings", "tests.settings", "--pythonpath", "."],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Example: manage.py broadcast_backfill orders.Order" in " ".join(result.stdout.split())
