"""System checks: one id per rule of BROADCASTER, W002 (models), and `manage.py check` without a database."""

from __future__ import annotations

from io import StringIO

import django
import pytest
from django.core.checks import Tags, run_checks
from django.core.management import call_command
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete
from django.test.utils import isolate_apps
from pydantic import BaseModel

import broadcaster
from broadcaster.checks import _KEY_IDS, RULES, check_database_deletes, check_settings
from broadcaster.settings import BroadcasterSettings

needs_db_on_delete = pytest.mark.skipif(django.VERSION < (6, 1), reason="database-level on_delete is Django 6.1+")


class Gone(BaseModel):
    id: int


def _item_model(on_delete: object, name: str = "Item") -> type[models.Model]:
    """A model `name` with a foreign key to a basket model, in an isolated app registry."""
    basket = type(f"{name}Basket", (models.Model,), {"__module__": __name__, "Meta": type("Meta", (), _META)})
    body = {
        "__module__": __name__,
        "basket": models.ForeignKey(basket, on_delete=on_delete, null=True),  # type: ignore[call-overload]
        "Meta": type("Meta", (), _META),
    }
    return type(name, (models.Model,), body)


_META = {"app_label": "testapp"}


pytestmark = pytest.mark.usefixtures("without_mysql")


# A value each key refuses, and the id that reports it: every key has one (see the test below).
BAD_VALUES = {
    "SERVICE_NAME": ("has space", "broadcaster.E002"),
    "BROKER_URL": ("http://localhost", "broadcaster.E003"),
    "EXCHANGE": ("-leading-dash", "broadcaster.E101"),
    "QUEUE": ("", "broadcaster.E102"),
    "QUEUE_TYPE": ("stream", "broadcaster.E103"),
    "PREFETCH": (0, "broadcaster.E104"),
    "PUBLISH_TIMEOUT": (0, "broadcaster.E105"),
    "MAX_BUFFER": (0, "broadcaster.E106"),
    "SHUTDOWN_TIMEOUT": (-1, "broadcaster.E107"),
    "RETRY_DELAYS": ([1, -2], "broadcaster.E108"),
    "MAX_HOPS": ("many", "broadcaster.E109"),
    "MAX_MESSAGE_BYTES": (10, "broadcaster.E110"),
    "MAX_JSON_DEPTH": (201, "broadcaster.E111"),
    "HEARTBEAT": (-1, "broadcaster.E112"),
    "PUBLISH_MODE": ("later", "broadcaster.E113"),
    "OUTBOX_BATCH": (0, "broadcaster.E114"),
    "OUTBOX_POLL_INTERVAL": (0, "broadcaster.E115"),
    "OUTBOX_RETENTION": (-1, "broadcaster.E116"),
    "INBOX_RETENTION": (-1, "broadcaster.E117"),
    "TLS_CA_FILE": (3, "broadcaster.E118"),
    "TLS_CERT_FILE": (3, "broadcaster.E119"),
    "TLS_KEY_FILE": (3, "broadcaster.E120"),
    "TLS_SERVER_NAME": (3, "broadcaster.E121"),
    "TLS_VERIFY": ("maybe", "broadcaster.E122"),
    "SIGNING_KEYS": (["k1"], "broadcaster.E123"),
    "SIGNING_KEY_ID": (7, "broadcaster.E124"),
    "REQUIRE_SIGNATURES": ("maybe", "broadcaster.E125"),
    "REQUIRE_USER_ID": ("maybe", "broadcaster.E126"),
    "SEAL_KEYS": ("not-a-list", "broadcaster.E127"),
    "INSTANCE_ID": ("pod 1", "broadcaster.E128"),
    "INSTANCE_QUEUE_EXPIRES": (0, "broadcaster.E129"),
    "PARTITIONS": (1001, "broadcaster.E130"),
    "CONCURRENCY": (0, "broadcaster.E131"),
    "CONSUMER_TIMEOUT": (0, "broadcaster.E132"),
    "RECONNECT_MAX_DELAY": (0, "broadcaster.E133"),
    "UNROUTED_QUEUE": ("a/b", "broadcaster.E134"),
    "UNROUTED_LOG_INTERVAL": (0, "broadcaster.E135"),
    "MANAGEMENT_URL": ("ftp://host", "broadcaster.E136"),
    "KILL_SWITCH_RATIO": (1.5, "broadcaster.E137"),
    "KILL_SWITCH_WINDOW": (0, "broadcaster.E138"),
    "KILL_SWITCH_MIN_EVENTS": (0, "broadcaster.E139"),
    "KILL_SWITCH_COOLDOWN": (-1, "broadcaster.E140"),
}
# Rules about BROADCASTER as a whole, or about keys that are valid alone but not together.
BAD_SETTINGS = [
    pytest.param(None, "broadcaster.E001", id="missing"),
    pytest.param("orders", "broadcaster.E001", id="not-a-dict"),
    pytest.param({}, "broadcaster.E002", id="no-service-name"),
    pytest.param({"SERVICE_NAME": "orders", "EXCHNAGE": "typo"}, "broadcaster.E004", id="unknown-key"),
    pytest.param(
        {"SERVICE_NAME": "orders", "BROKER_URL": ["amqp://a/", "amqps://b/"]}, "broadcaster.E020", id="schemes"
    ),
    pytest.param(
        {"SERVICE_NAME": "orders", "BROKER_URL": ["amqp://u:p@a/", "amqp://b/"]}, "broadcaster.E021", id="users"
    ),
    pytest.param({"SERVICE_NAME": "orders", "TLS_CA_FILE": "/ca.pem"}, "broadcaster.E030", id="tls-without-amqps"),
    pytest.param(
        {"SERVICE_NAME": "orders", "BROKER_URL": "amqps://h", "TLS_CERT_FILE": "/c.pem"},
        "broadcaster.E031",
        id="cert-without-key",
    ),
    pytest.param(
        {"SERVICE_NAME": "orders", "SIGNING_KEYS": {"orders": {"k1": "s"}}, "SIGNING_KEY_ID": "k7"},
        "broadcaster.E032",
        id="unknown-key-id",
    ),
    pytest.param({"SERVICE_NAME": "orders", "REQUIRE_SIGNATURES": True}, "broadcaster.E033", id="no-keys"),
]


def reported(settings: object, value: object) -> list[str]:
    if value is None:
        del settings.BROADCASTER  # type: ignore[attr-defined]
    else:
        settings.BROADCASTER = value  # type: ignore[attr-defined]
    return [message.id or "" for message in check_settings()]


@pytest.mark.parametrize(("key", "value", "expected"), [(k, v, i) for k, (v, i) in BAD_VALUES.items()])
def test_each_key_reports_its_own_id(settings: object, key: str, value: object, expected: str) -> None:
    assert reported(settings, {"SERVICE_NAME": "orders", key: value}) == [expected]


@pytest.mark.parametrize(("value", "expected"), BAD_SETTINGS)
def test_each_rule_reports_its_own_id(settings: object, value: object, expected: str) -> None:
    assert reported(settings, value) == [expected]


def test_every_key_and_every_id_has_a_rule_of_its_own() -> None:
    keys = [field.alias for field in BroadcasterSettings.model_fields.values()]
    assert sorted(BAD_VALUES) == sorted(keys) == sorted(_KEY_IDS), "a new setting needs an id and a test value"
    assert len(set(_KEY_IDS.values())) == len(_KEY_IDS)
    tested = {check_id for _, check_id in BAD_VALUES.values()} | {param.values[1] for param in BAD_SETTINGS}
    untested = set(RULES) - tested - {"broadcaster.E010", "broadcaster.E011", "broadcaster.W001", "broadcaster.W002"}
    assert untested == {"broadcaster.W020"}  # tested in test_cluster_nodes.py
    assert all(rule.hint and rule.reported_when for rule in RULES.values())


@needs_db_on_delete
@isolate_apps("tests.testapp")
@pytest.mark.parametrize("signal", [pre_delete, post_delete])
def test_a_broadcast_delete_of_rows_the_database_deletes_is_a_warning(signal: models.signals.ModelSignal) -> None:
    item = _item_model(models.DB_CASCADE)  # type: ignore[attr-defined]
    broadcaster.broadcast(signal, sender=item, event="checks.item_deleted", schema=Gone)
    messages = check_database_deletes()
    assert [message.id for message in messages] == ["broadcaster.W002"]
    assert messages[0].obj is item._meta.get_field("basket")
    assert "testapp.Item" in messages[0].msg
    assert "testapp.ItemBasket" in messages[0].msg
    assert "DB_CASCADE" in messages[0].msg
    assert "broadcaster.W002" in [message.id for message in run_checks(tags=[Tags.models])]  # registered


@needs_db_on_delete
@isolate_apps("tests.testapp")
def test_nothing_to_warn_about() -> None:
    item = _item_model(models.CASCADE)  # Django deletes row by row and signals each
    broadcaster.broadcast(post_delete, sender=item, event="checks.item_deleted", schema=Gone)
    other = _item_model(models.DB_CASCADE, "Other")  # type: ignore[attr-defined]
    broadcaster.broadcast(post_save, sender=other, event="checks.item_saved", schema=Gone)  # saves are signalled
    assert check_database_deletes() == []


@needs_db_on_delete
@isolate_apps("tests.testapp")
def test_a_database_set_null_deletes_nothing() -> None:
    item = _item_model(models.DB_SET_NULL)  # type: ignore[attr-defined]
    broadcaster.broadcast(post_delete, sender=item, event="checks.item_deleted", schema=Gone)
    assert check_database_deletes() == []


def test_manage_py_check_passes_without_touching_the_database() -> None:
    # pytest-django refuses any database access in a test not marked django_db.
    broadcaster.broadcast(post_delete, sender="testapp.Article", event="checks.article_deleted", schema=Gone)
    out = StringIO()
    call_command("check", stdout=out)
    assert "System check identified no issues" in out.getvalue()
