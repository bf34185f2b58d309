"""Settings for the library's own tests."""

SECRET_KEY = "tests"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "broadcaster", "tests.testapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "HOST": "127.0.0.1",
        "USER": "postgres",
    },
    "sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "TEST": {"NAME": "broadcaster-tests.sqlite3"},
    },
}
BROADCASTER = {"SERVICE_NAME": "tests", "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
