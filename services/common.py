"""Settings the three example services share; each `config/settings.py` adds its own few.

Everything that differs between a developer's machine, the tests and docker-compose
comes from the environment:

- `SERVICE_DATA_DIR`: where the SQLite files live (default `services/.data/`)
- `SIGNALS_EXCHANGE`: the topic exchange (default `signals`)
- `SIGNALS_QUEUE_PREFIX`: prefixed to each service's queue name, so that parallel test
  runs on one broker do not steal each other's messages (default empty)
- `BROADCASTER_BROKER_URL`: read by broadcaster itself; it wins over `BROKER_URL` below
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django

__all__ = [
    "DEBUG",
    "DEFAULT_AUTO_FIELD",
    "DEFAULT_EXCEPTION_REPORTER_FILTER",
    "LOGGING",
    "ROOT_URLCONF",
    "SECRET_KEY",
    "TIME_ZONE",
    "USE_TZ",
    "broadcaster_settings",
    "databases",
    "installed_apps",
]

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / ".data"
LOCAL_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-services-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ROOT_URLCONF = "config.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
# The DEBUG page and the error mails to ADMINS hide the broker password (broadcaster.W001 otherwise).
DEFAULT_EXCEPTION_REPORTER_FILTER = "broadcaster.reporting.SafeExceptionReporterFilter"

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "broadcaster": {"level": "INFO"},
        # broadcaster reports a broker it cannot reach in one line; pika would log the
        # same failure again, ten lines and a traceback per attempt.
        "pika": {"level": "CRITICAL"},
        "orders": {"level": "INFO"},
        "inventory": {"level": "INFO"},
        "notifications": {"level": "INFO"},
    },
}


def installed_apps(app: str) -> list[str]:
    """The service's own app after broadcaster (no admin, auth or sessions: none is needed)."""
    return ["broadcaster", app]


def databases(service: str) -> dict[str, Any]:
    """One SQLite file per service, in `SERVICE_DATA_DIR`."""
    data_dir = Path(os.environ.get("SERVICE_DATA_DIR") or DEFAULT_DATA_DIR)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Several consumer processes of one service may write at once (they compete on the
    # service's queue): wait for the lock rather than fail with "database is locked".
    options: dict[str, Any] = {"timeout": 20}
    if django.VERSION >= (5, 1):
        # BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock on
        # a read-to-write upgrade; WAL keeps `show_state` from blocking the daemons.
        options["transaction_mode"] = "IMMEDIATE"
        options["init_command"] = "PRAGMA journal_mode=WAL;"
    return {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": data_dir / f"{service}.sqlite3",
            "OPTIONS": options,
        }
    }


def broadcaster_settings(service: str) -> dict[str, str]:
    """The BROADCASTER setting of one service: its name, the exchange and its queue."""
    prefix = os.environ.get("SIGNALS_QUEUE_PREFIX", "")
    return {
        "SERVICE_NAME": service,
        "BROKER_URL": LOCAL_BROKER_URL,
        "EXCHANGE": os.environ.get("SIGNALS_EXCHANGE") or "signals",
        "QUEUE": f"{prefix}{service}",
        # "quorum" on a cluster (the compose file's cluster profile sets it).
        "QUEUE_TYPE": os.environ.get("SIGNALS_QUEUE_TYPE") or "classic",
    }
