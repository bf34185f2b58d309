"""System checks that read models: broadcaster.W002, and `manage.py check` without a database."""

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
from broadcaster.checks import check_database_deletes

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


@pytest.fixture(autouse=True)
def _without_mysql(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave out the test settings' MySQL alias: under Django 6.1 the model checks run against
    every alias, and Django's own MySQL backend connects to learn its column types (whatever
    the models), which this module's no-database tests cannot allow."""
    from django.db import connections

    if "mysql" in connections.settings:
        monkeypatch.delitem(connections.settings, "mysql")


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
