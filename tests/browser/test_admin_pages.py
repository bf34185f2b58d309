"""The library's admin pages in headless Chromium, used as the engineer on call uses them.

Each test logs in through the login form, then filters, searches, selects, confirms
and reads the result on the page, against the real database and the real broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

import broadcaster
from broadcaster.admin import REDELIVERY_NOTE
from broadcaster.models import InboxEntry, OutboxEvent
from broadcaster.topology import Topology
from tests.conftest import Broker, wait_for
from tests.test_deadletters import failing_receiver, packed, topology  # noqa: F401 - fixtures

# ruff: noqa: F811 - the fixtures imported above are named as parameters

pytestmark = pytest.mark.django_db(transaction=True)

Shot = Callable[[str], None]


def log_in(browser: WebDriver, server: Any, username: str, password: str, then: str) -> None:
    """Through the login form, as a person does, landing on `then`."""
    browser.get(f"{server.url}/admin/login/?next={then}")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda b: "/login/" not in b.current_url)


def navigate(browser: WebDriver, element: WebElement, *, submit: bool = False) -> None:
    """Click `element` (or submit its form) and wait for the page it loads.

    Reading the page right after a click may otherwise find the old page's body, which the
    browser then drops under the reader ("stale element reference").
    """
    page = browser.find_element(By.TAG_NAME, "html")
    if submit:
        element.submit()
    else:
        element.click()
    WebDriverWait(browser, 10).until(staleness_of(page))


def text(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


def submit_action(browser: WebDriver, action: str) -> None:
    Select(browser.find_element(By.NAME, "action")).select_by_value(action)
    navigate(browser, browser.find_element(By.NAME, "index"))


def tick(browser: WebDriver, row_text: str) -> None:
    """Tick the checkbox of the changelist row whose text contains `row_text`."""
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    [row] = [row for row in rows if row_text in row.text]
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()


def outbox_row(order: int, *, failed: bool = False) -> OutboxEvent:
    event_id = str(uuid.uuid4())
    headers = {"ce-id": event_id, "ce-type": "orders.order_saved", "ce-source": "orders", "ce-specversion": "1.0"}
    body = f'{{"order_id": {order}, "email": "buyer{order}@example.com"}}'.encode()
    row = OutboxEvent.objects.create(event_id=event_id, event_type="orders.order_saved", headers=headers, body=body)
    if failed:
        row.attempts = 3
        row.last_error = "cannot connect to amqp://guest:***@rabbit:5672/: ConnectionRefusedError: [Errno 111]"
        row.save()
    return row


def test_outbox_filter_search_publish_again(
    browser: WebDriver, live_server: Any, admin_user: User, broker: Broker, screenshot: Shot
) -> None:
    tap = broker.tap()
    failed, other, pending = outbox_row(42, failed=True), outbox_row(7), outbox_row(42)
    OutboxEvent.objects.filter(pk=other.pk).update(published_at=other.created_at)
    log_in(browser, live_server, "admin", "password", "/admin/broadcaster/outboxevent/")
    assert {failed.event_id, other.event_id, pending.event_id} <= set(text(browser).split())
    screenshot("admin-outbox")

    navigate(browser, browser.find_element(By.LINK_TEXT, "failed"))  # the state filter
    assert failed.event_id in text(browser)
    assert other.event_id not in text(browser)
    assert pending.event_id not in text(browser)
    navigate(browser, browser.find_element(By.LINK_TEXT, "All"))
    search = browser.find_element(By.ID, "searchbar")
    search.send_keys("buyer42")
    navigate(browser, search, submit=True)
    found = text(browser)
    assert failed.event_id in found
    assert pending.event_id in found
    assert other.event_id not in found

    tick(browser, failed.event_id)
    submit_action(browser, "publish_again")
    confirm = text(browser)
    assert "Publish these events again?" in confirm
    assert "ConnectionRefusedError" in confirm  # the evidence, still there
    screenshot("admin-outbox-publish-again")
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "input[value='Yes, publish them again']"))

    assert "1 event(s) published again; the broker confirmed them." in text(browser)
    assert [message.headers["ce-id"] for message in broker.drain(tap)] == [failed.event_id]
    row = OutboxEvent.objects.get(pk=failed.pk)
    assert row.published_at is not None
    assert row.last_error == ""


def test_inbox_bulk_delete_and_delete_one(
    browser: WebDriver, live_server: Any, admin_user: User, screenshot: Shot
) -> None:
    entries = [
        InboxEntry.objects.create(
            key=InboxEntry.key_for("orders", f"evt-{n}"),
            event_id=f"evt-{n}",
            event_type="orders.order_placed",
            source="orders",
        )
        for n in range(3)
    ]
    log_in(browser, live_server, "admin", "password", "/admin/broadcaster/inboxentry/")
    assert REDELIVERY_NOTE in text(browser)
    assert "receivers" not in browser.title  # the note is not the tab's title
    screenshot("admin-inbox")

    tick(browser, "evt-0")
    tick(browser, "evt-1")
    submit_action(browser, "delete_selected")
    assert REDELIVERY_NOTE in text(browser)
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "#content form input[type=submit]"))

    assert "Successfully deleted 2 inbox entries." in text(browser)
    assert list(InboxEntry.objects.values_list("event_id", flat=True)) == ["evt-2"]

    browser.get(f"{live_server.url}/admin/broadcaster/inboxentry/{entries[2].pk}/change/")
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "a.deletelink"))
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "#content form input[type=submit]"))
    WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith("/admin/broadcaster/inboxentry/"))
    assert "was deleted successfully" in text(browser)
    assert not InboxEntry.objects.exists()


def test_dead_letters_replay_a_group_that_the_daemon_then_handles(  # noqa: PLR0917 - one fixture each
    browser: WebDriver,
    live_server: Any,
    broker: Broker,
    topology: Topology,
    daemon: Any,
    failing_receiver: Any,
    screenshot: Shot,
) -> None:
    handled, broken = failing_receiver
    daemon()
    for order in (1, 2, 3):
        packed.send(sender=None, order_id=order, weight="1.5")
    broadcaster.flush(10)
    wait_for(lambda: broker.count(topology.dead_letter_queue) == 3, "three real dead letters", timeout=30)
    oncall = User.objects.create_user("oncall", password="on-call-pw", is_staff=True)
    oncall.user_permissions.add(Permission.objects.get(codename="manage_dead_letters"))

    log_in(browser, live_server, "oncall", "on-call-pw", "/admin/")
    navigate(browser, browser.find_element(By.LINK_TEXT, "Dead letters"))
    page = text(browser)
    assert "holds 3 dead letters" in page
    shown = {cell.text.split()[0] for cell in browser.find_elements(By.CSS_SELECTOR, "td.letter-id")}
    [group] = browser.find_elements(By.CSS_SELECTOR, "#dead-letter-groups tr.group")
    assert group.text.split()[:3] == ["receiver-error", "warehouse.packed", "3"]
    assert "label printer offline" in page
    browser.find_element(By.CSS_SELECTOR, "tr.dead-letter details:last-child summary").click()
    assert '"order_id": 1' in browser.find_element(By.CSS_SELECTOR, "tr.dead-letter pre.body").text
    screenshot("admin-dead-letters")

    broken.clear()  # the printer is back
    navigate(browser, group.find_element(By.CSS_SELECTOR, "button[value=replay]"))
    assert "Replay the dead letters matching reason receiver-error and event warehouse.packed?" in text(browser)
    screenshot("admin-dead-letters-confirm")
    navigate(browser, browser.find_element(By.ID, "confirm"))

    assert "Replayed 3 dead letter(s)" in text(browser)
    wait_for(lambda: len(handled) == 3, "the daemon to handle the replayed events", timeout=30)
    assert {envelope.id for envelope in handled} == shown
    assert broker.count(topology.dead_letter_queue) == 0
    browser.refresh()
    assert "No dead letters" in text(browser)


def test_dead_letters_page_says_when_the_broker_is_away(
    browser: WebDriver, live_server: Any, admin_user: User, settings: Any, screenshot: Shot
) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}

    log_in(browser, live_server, "admin", "password", "/admin/broadcaster/deadletter/")

    message = browser.find_element(By.ID, "broker-problem").text
    assert "cannot be read from the broker right now" in message
    assert "127.0.0.1:1" in message
    screenshot("admin-dead-letters-unreachable")
