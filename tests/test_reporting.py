"""Django's error reports, rendered for real, never show a broker password or a key.

A view fails with the broker URL (three URLs, three passwords) in a local variable, in
the settings and in the environment a development server copies into request.META. The
DEBUG page and the error mails to ADMINS are rendered by Django itself and searched. With
Django's own filter the password shows (so the search can see it); with the library's
filter, no secret does, and system check broadcaster.W001 says when it is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import django
import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from django.utils.log import AdminEmailHandler
from django.views import debug

from broadcaster import reporting
from broadcaster.checks import check_error_reports

PASSWORDS = ("Pw-a41c-first-node-secret", "Pw-93be-second/node#secret", "Pw-07fd-third-node-secret")
KEY = "sk-5e2a-distinctive-signing-key"
SEAL = "seal-8c1f-distinctive-seal-key"
URL = ";".join(
    f"amqp://svc{n}:{quote(password, safe='')}@rabbit-{n}.internal:5672/%2F" for n, password in enumerate(PASSWORDS)
)
SECRETS = (*PASSWORDS, quote(PASSWORDS[1], safe=""), KEY, SEAL)
DJANGO_FILTER = "django.views.debug.SafeExceptionReporterFilter"
# What a development server's environment holds, and so request.META.
ENVIRONMENT = {"BROADCASTER_BROKER_URL": URL}


def failing_view(request: HttpRequest) -> HttpResponse:
    broker_url = django_settings.BROADCASTER["BROKER_URL"]
    credentials = {"url": broker_url, "keys": django_settings.BROADCASTER["SIGNING_KEYS"]}
    raise RuntimeError(f"receiver failed for {len(credentials)} reasons")


urlpatterns = [path("fail/", failing_view)]


@pytest.fixture
def broker_secrets(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """BROADCASTER with a three-node URL and keys; this module's URLs; the filter chosen afresh."""
    settings.BROADCASTER = {
        "SERVICE_NAME": "reports",
        "BROKER_URL": URL,
        "SIGNING_KEYS": {"reports": {"k1": KEY}},
        "SIGNING_KEY_ID": "k1",
        "SEAL_KEYS": [SEAL],
    }
    settings.ROOT_URLCONF = __name__
    # Django 6.1 takes addresses; (name, address) pairs are deprecated there.
    settings.ADMINS = ["ops@example.com"] if django.VERSION >= (6, 0) else [("Ops", "ops@example.com")]
    monkeypatch.setenv("BROADCASTER_BROKER_URL", URL)
    debug.get_default_exception_reporter_filter.cache_clear()  # Django caches the filter it made
    yield
    debug.get_default_exception_reporter_filter.cache_clear()


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def debug_page(settings: Any) -> str:
    settings.DEBUG = True
    response = Client(raise_request_exception=False).get("/fail/", **ENVIRONMENT)
    assert response.status_code == 500
    page = response.content.decode()
    assert "receiver failed for 2 reasons" in page  # Django's technical 500 page, not a plain error
    assert "BROADCASTER_BROKER_URL" in page  # request.META is shown
    assert "broker_url" in page  # and so are the frame's local variables
    return page


def error_mails(settings: Any) -> str:
    settings.DEBUG = False
    handler = AdminEmailHandler(include_html=True)  # as LOGGING's mail_admins, with the HTML part too
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = Client(raise_request_exception=False).get("/fail/", **ENVIRONMENT)
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500
    assert mail.outbox, "no error mail was sent to ADMINS"
    parts = []
    for message in mail.outbox:
        assert message.to == ["ops@example.com"]
        parts += [message.subject, str(message.body), *(str(content) for content, _ in message.alternatives)]
    text = "\n".join(parts)
    assert "receiver failed for 2 reasons" in text
    assert "<html" in text  # the HTML report, with settings, META and locals, was rendered
    return text


@pytest.mark.usefixtures("broker_secrets")
def test_django_s_own_filter_shows_the_broker_passwords(settings: Any) -> None:
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = DJANGO_FILTER
    assert set(leaked(debug_page(settings))) >= set(PASSWORDS[::2])
    assert leaked(error_mails(settings))


@pytest.mark.usefixtures("broker_secrets")
def test_the_debug_page_shows_no_secret_with_the_library_s_filter(settings: Any) -> None:
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = reporting.FILTER_PATH
    page = debug_page(settings)
    assert leaked(page) == []
    assert "amqp://svc0:***@rabbit-0.internal" in page  # still useful: the URL, without its password


@pytest.mark.usefixtures("broker_secrets")
def test_the_error_mail_to_admins_shows_no_secret_with_the_library_s_filter(settings: Any) -> None:
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = reporting.FILTER_PATH
    assert leaked(error_mails(settings)) == []


class OwnFilter(reporting.SafeExceptionReporterFilter):
    """A project's own filter, built on the library's."""


@pytest.mark.usefixtures("broker_secrets")
def test_w001_warns_while_error_reports_would_show_the_password(settings: Any) -> None:
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = DJANGO_FILTER
    [warning] = check_error_reports()
    assert warning.id == "broadcaster.W001"
    assert reporting.FILTER_PATH in (warning.hint or "")
    assert leaked(f"{warning.msg} {warning.hint}") == []
    for safe in (reporting.FILTER_PATH, f"{__name__}.OwnFilter"):
        settings.DEFAULT_EXCEPTION_REPORTER_FILTER = safe
        assert check_error_reports() == []


def test_w001_is_quiet_when_there_is_nothing_to_hide(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BROADCASTER_BROKER_URL", raising=False)
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = DJANGO_FILTER
    settings.BROADCASTER = {"SERVICE_NAME": "reports", "BROKER_URL": "amqp://rabbit.internal/%2F"}
    assert check_error_reports() == []
