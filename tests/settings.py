"""Settings for the library's own tests."""

import os
import tempfile

SECRET_KEY = "tests"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the admin's CSS, served by live_server to the browser tests
    "broadcaster",
    "tests.testapp",
]
# What the admin needs, for tests/test_admin.py.
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "static/"
# Test databases named per run, so that two runs on one machine never drop each other's.
_RUN = f"broadcaster_{os.getpid()}"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "HOST": "127.0.0.1",
        "USER": "postgres",
        "TEST": {"NAME": f"test_{_RUN}"},
    },
    "sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"{_RUN}.sqlite3")},
    },
    "mysql": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "test",
        "HOST": "127.0.0.1",
        "PORT": "3306",
        "USER": "root",
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": f"test_{_RUN}", "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
    },
}
BROADCASTER = {"SERVICE_NAME": "tests", "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}
# Error reports never show the broker password (broadcaster.W001 otherwise).
DEFAULT_EXCEPTION_REPORTER_FILTER = "broadcaster.reporting.SafeExceptionReporterFilter"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# MariaDB ignores the condition of the outbox's partial index (the relay's query then uses
# a full index on id): Django says so with models.W037, which the docs tell MariaDB users.
SILENCED_SYSTEM_CHECKS = ["models.W037"]
# Django 6.1 configures mail through MAILERS (EMAIL_BACKEND is deprecated there); earlier
# versions ignore the setting. The test runner replaces the backend with locmem anyway.
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
