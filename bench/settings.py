"""Django settings of the bench processes; everything per run comes from the environment.

The runner sets BENCH_RUN_ID before it starts Django or any subprocess, so the exchange,
the queues and the PostgreSQL schema of one run are its own and are deleted afterwards.
BENCH_ROLE says which side a process plays: "producer" broadcasts, "consumer" subscribes.
"""

import os

RUN_ID = os.environ.get("BENCH_RUN_ID", "dev")
ROLE = os.environ.get("BENCH_ROLE", "producer")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "broadcaster", "bench"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "HOST": "127.0.0.1",
        "USER": "postgres",
        # The outbox scenario migrates into a schema of its own, dropped after the run.
        "OPTIONS": {"options": f"-c search_path=bench_{RUN_ID}"},
    }
}
BROADCASTER = {
    "SERVICE_NAME": f"bench-{ROLE}",
    "BROKER_URL": BROKER_URL,
    "EXCHANGE": f"bench-{RUN_ID}",
    "QUEUE": os.environ.get("BENCH_QUEUE", f"bench-{RUN_ID}-{ROLE}"),
    "PARTITIONS": 8,  # the ordered scenario's
    "PUBLISH_MODE": os.environ.get("BENCH_PUBLISH_MODE", "on_commit"),
    "MAX_BUFFER": int(os.environ.get("BENCH_MAX_BUFFER", "10000")),
    "QUEUE_TYPE": os.environ.get("BENCH_QUEUE_TYPE", "classic"),
    # One delay queue is enough here and keeps set-up and clean-up short.
    "RETRY_DELAYS": [1.0],
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "broadcaster": {"handlers": ["stderr"], "level": os.environ.get("BENCH_LOG_LEVEL", "INFO")},
        # The line per event, as FastStream's per-message lines are off: start, stop and
        # failures are still logged.
        "broadcaster.events": {"level": "WARNING"},
    },
}
