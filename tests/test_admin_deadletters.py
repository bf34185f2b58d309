"""The dead letters page of the admin, against the real broker (the page has no table)."""

# ruff: noqa: F811 - the dead_letter and topology fixtures of test_deadletters are imported, then named as parameters

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pika
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from broadcaster import admin_deadletters
from broadcaster.topology import Topology
from tests.conftest import Broker, wait_for
from tests.test_deadletters import dead_letter, queue_ids, topology  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

PAGE = "/admin/broadcaster/deadletter/"


def group_key(reason: str, event: str) -> str:
    return f"{reason}\x1f{event}"


def test_page_groups_by_reason_and_event_with_headers_and_body(admin_client: Client, dead_letter: Any) -> None:
    ids = [dead_letter(reason="schema-violation") for _ in range(3)]
    other = dead_letter("warehouse.weighed", reason="receiver-error", error="label printer offline")

    page = admin_client.get(PAGE)

    assert page.status_code == 200
    content = page.content.decode()
    assert "holds 4 dead letters" in content
    groups = page.context["groups"]
    assert {(g["reason"], g["event"], g["count"]) for g in groups} == {
        ("schema-violation", "warehouse.packed", 3),
        ("receiver-error", "warehouse.weighed", 1),
    }
    assert all(envelope_id in content for envelope_id in [*ids, other])
    assert "label printer offline" in content
    assert "&quot;order_id&quot;: 1" in content  # the body, pretty-printed (escaped)
    assert "&quot;x-broadcaster-reason&quot;: &quot;receiver-error&quot;" in content  # the headers


def test_a_long_body_is_cut_and_says_so(admin_client: Client, broker: Broker, topology: Topology) -> None:
    body = b'{"text": "' + b"x" * 10_000 + b'"}'
    broker.publish(topology.dead_letter_queue, body, pika.BasicProperties(content_type="application/json"), "")

    content = admin_client.get(PAGE).content.decode()

    assert "cut: " in content
    assert "x" * 10_000 not in content


def test_replay_group_asks_then_moves_only_that_group(
    admin_client: Client,
    broker: Broker,
    topology: Topology,
    dead_letter: Any,
) -> None:
    packed = [dead_letter() for _ in range(2)]
    weighed = dead_letter("warehouse.weighed", reason="receiver-error")
    form = {"action": "replay", "group": group_key("schema-violation", "warehouse.packed")}

    confirm = admin_client.post(PAGE, form)

    assert confirm.status_code == 200
    assert "Replay the dead letters matching reason schema-violation and event warehouse.packed?" in (
        confirm.content.decode()
    )
    assert broker.count(topology.dead_letter_queue) == 3  # nothing moved yet
    done = admin_client.post(PAGE, {**form, "post": "yes", "upto": "3"}, follow=True)
    assert "Replayed 2 dead letter(s)" in done.content.decode()
    assert queue_ids(broker, topology.dead_letter_queue) == [weighed]
    assert sorted(queue_ids(broker, topology.queue)) == sorted(packed)


def test_purge_selection_deletes_only_the_chosen(
    admin_client: Client,
    broker: Broker,
    topology: Topology,
    dead_letter: Any,
) -> None:
    ids = [dead_letter() for _ in range(4)]
    chosen = {"action": "purge", "id": [ids[0], ids[2]]}

    confirm = admin_client.post(PAGE, chosen).content.decode()

    assert "Purge the dead letters matching 2 chosen id(s)?" in confirm
    assert "nothing can bring them back" in confirm
    admin_client.post(PAGE, {**chosen, "post": "yes", "upto": "4"})
    assert queue_ids(broker, topology.dead_letter_queue) == [ids[1], ids[3]]


def test_purge_of_a_group_spares_what_arrived_after_the_confirmation(
    admin_client: Client,
    broker: Broker,
    topology: Topology,
    dead_letter: Any,
) -> None:
    before = dead_letter()
    later = dead_letter()  # arrived after the operator saw (and confirmed) a queue of 1

    admin_client.post(
        PAGE,
        {"action": "purge", "group": group_key("schema-violation", "warehouse.packed"), "post": "yes", "upto": "1"},
    )

    assert queue_ids(broker, topology.dead_letter_queue) == [later]
    assert before != later


def test_one_message_replayed_by_its_button(
    admin_client: Client,
    broker: Broker,
    topology: Topology,
    dead_letter: Any,
) -> None:
    first, second = dead_letter(), dead_letter()

    confirm = admin_client.post(PAGE, {"one": f"replay:{second}"})
    assert f'name="id" value="{second}"' in confirm.content.decode()
    admin_client.post(PAGE, {"action": "replay", "id": second, "post": "yes"})

    assert queue_ids(broker, topology.dead_letter_queue) == [first]
    wait_for(lambda: broker.count(topology.queue) == 1, "the copy on the service queue")


def test_nothing_chosen_says_so(admin_client: Client, dead_letter: Any) -> None:
    dead_letter()

    page = admin_client.post(PAGE, {"action": "purge"}, follow=True)

    assert "Choose dead letters first" in page.content.decode()


def test_an_unreachable_broker_is_a_clear_message_not_an_error(admin_client: Client, settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": "amqp://guest:secret@127.0.0.1:1/%2F"}

    page = admin_client.get(PAGE)

    assert page.status_code == 503
    content = page.content.decode()
    assert "cannot be read from the broker right now" in content
    assert "127.0.0.1:1" in content
    assert "secret" not in content
    assert admin_client.post(PAGE, {"action": "purge", "id": "x"}).status_code == 503


def test_a_missing_queue_is_a_clear_message(admin_client: Client, broker: Broker) -> None:
    content = admin_client.get(PAGE).content.decode()

    assert "does not exist (consume_signals declares it)" in content


def test_only_staff_with_the_permission_see_the_page(client: Client, dead_letter: Any) -> None:
    dead_letter()
    user = User.objects.create_user("oncall", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(PAGE).status_code == 403
    assert "Dead letters" not in client.get("/admin/").content.decode()

    user.user_permissions.add(Permission.objects.get(codename="manage_dead_letters"))
    client.force_login(User.objects.get(pk=user.pk))

    assert client.get(PAGE).status_code == 200
    assert PAGE in client.get("/admin/").content.decode()
    assert admin_deadletters.PERMISSION == "broadcaster.manage_dead_letters"


def test_the_page_has_no_other_admin_urls(admin_client: Client) -> None:
    assert admin_client.get(f"{PAGE}add/").status_code == 404
    assert admin_client.get(f"{PAGE}1/change/").status_code == 404


def test_age_of_a_group_letter_is_shown(admin_client: Client, dead_letter: Any) -> None:
    dead_letter(age=timedelta(hours=2))

    page = admin_client.get(PAGE)

    [shown] = page.context["shown"]
    assert shown.letter.age is not None
    assert shown.letter.age > 7000
