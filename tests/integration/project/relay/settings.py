"""Settings read from the environment, so one project can play every service of a test."""

import os

SECRET_KEY = "integration-tests"
USE_TZ = True
INSTALLED_APPS = ["broadcaster", "relay.apps.RelayConfig"]
if os.environ.get("DB_ENGINE") == "postgresql":
    # A database of the test's own (the fault tests make and drop it), for the outbox and the inbox.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["DB_NAME"],
            "HOST": "127.0.0.1",
            "USER": "postgres",
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DB_PATH"]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DEFAULT_EXCEPTION_REPORTER_FILTER = "broadcaster.reporting.SafeExceptionReporterFilter"

BROADCASTER = {
    "SERVICE_NAME": os.environ["SERVICE_NAME"],
    "EXCHANGE": os.environ["EXCHANGE"],
    "QUEUE": os.environ["QUEUE"],
    "SHUTDOWN_TIMEOUT": 5.0,
}
_NUMBERS = {
    "MAX_HOPS": int,
    "MAX_MESSAGE_BYTES": int,
    "MAX_BUFFER": int,
    "PUBLISH_TIMEOUT": float,
    "SHUTDOWN_TIMEOUT": float,
    "RECONNECT_MAX_DELAY": float,
    "OUTBOX_POLL_INTERVAL": float,
    "PARTITIONS": int,
    "CONCURRENCY": int,
    "HEARTBEAT": int,
    "KILL_SWITCH_RATIO": float,
    "KILL_SWITCH_WINDOW": float,
    "KILL_SWITCH_MIN_EVENTS": int,
    "KILL_SWITCH_COOLDOWN": float,
}
for _key, _type in _NUMBERS.items():
    if _key in os.environ:
        BROADCASTER[_key] = _type(os.environ[_key])
if "RETRY_DELAYS" in os.environ:
    BROADCASTER["RETRY_DELAYS"] = [float(delay) for delay in os.environ["RETRY_DELAYS"].split(",")]
if "PUBLISH_MODE" in os.environ:
    BROADCASTER["PUBLISH_MODE"] = os.environ["PUBLISH_MODE"]
if os.environ.get("REQUIRE_USER_ID") == "1":
    BROADCASTER["REQUIRE_USER_ID"] = True
if "UNROUTED_QUEUE" in os.environ:
    BROADCASTER["UNROUTED_QUEUE"] = os.environ["UNROUTED_QUEUE"]
if "INSTANCE_ID" in os.environ:
    BROADCASTER["INSTANCE_ID"] = os.environ["INSTANCE_ID"]
if "QUEUE_TYPE" in os.environ:
    BROADCASTER["QUEUE_TYPE"] = os.environ["QUEUE_TYPE"]
if os.environ.get("LOG_CONNECTIONS"):
    # The cluster tests read from each process's stderr which node its clients connected to.
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler"}},
        "loggers": {"broadcaster": {"handlers": ["stderr"], "level": "INFO"}},
    }

# Comma-separated wirings from relay.apps.WIRINGS, e.g. "producer" or "ping-to-pong".
ROLE = os.environ.get("ROLE", "")
RECORD_FILE = os.environ["RECORD_FILE"]

# Misbehaving receivers, for the fault tests: sleep in every receiver, or SIGKILL the daemon
# once (the file KILL_MARKER remembers it) at event n=KILL_AT, in the receiver or just after
# the receiver's transaction committed (KILL_WHEN=after-commit).
RECEIVER_SLEEP = float(os.environ.get("RECEIVER_SLEEP", "0"))
FAIL_FIRST_EVERY = int(os.environ.get("FAIL_FIRST_EVERY", "0"))
FAIL_WHILE = os.environ.get("FAIL_WHILE", "")
KILL_AT = int(os.environ["KILL_AT"]) if "KILL_AT" in os.environ else None
KILL_WHEN = os.environ.get("KILL_WHEN", "receiver")
KILL_MARKER = os.environ.get("KILL_MARKER") or f"{RECORD_FILE}.killed"
# The "flaky" role's receiver raises on its first FAIL_TIMES calls (counted in RECORD_FILE.calls).
FAIL_TIMES = int(os.environ.get("FAIL_TIMES", "0"))
