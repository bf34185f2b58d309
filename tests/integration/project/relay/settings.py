"""Settings read from the environment, so one project can play every service of a test."""

import os

SECRET_KEY = "integration-tests"
USE_TZ = True
INSTALLED_APPS = ["broadcaster", "relay.apps.RelayConfig"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DB_PATH"]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

BROADCASTER = {
    "SERVICE_NAME": os.environ["SERVICE_NAME"],
    "EXCHANGE": os.environ["EXCHANGE"],
    "QUEUE": os.environ["QUEUE"],
    "SHUTDOWN_TIMEOUT": 5.0,
}
if "MAX_HOPS" in os.environ:
    BROADCASTER["MAX_HOPS"] = int(os.environ["MAX_HOPS"])
if "MAX_MESSAGE_BYTES" in os.environ:
    BROADCASTER["MAX_MESSAGE_BYTES"] = int(os.environ["MAX_MESSAGE_BYTES"])
if "RETRY_DELAYS" in os.environ:
    BROADCASTER["RETRY_DELAYS"] = [float(delay) for delay in os.environ["RETRY_DELAYS"].split(",")]

# Comma-separated wirings from relay.apps.WIRINGS, e.g. "producer" or "ping-to-pong".
ROLE = os.environ.get("ROLE", "")
RECORD_FILE = os.environ["RECORD_FILE"]
