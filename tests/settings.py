"""Settings for the library's own tests."""

import os
import tempfile

SECRET_KEY = "tests"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "broadcaster", "tests.testapp"]
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
}
BROADCASTER = {"SERVICE_NAME": "tests", "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
