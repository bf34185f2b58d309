"""The Django app: wires up checks and setting changes; never touches the broker."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.test.signals import setting_changed


class BroadcasterConfig(AppConfig):
    """`"broadcaster"` in INSTALLED_APPS."""

    name = "broadcaster"
    verbose_name = "Signal broadcaster"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from broadcaster import settings  # noqa: PLC0415 - keep importing the app light
        from broadcaster.checks import (  # noqa: PLC0415
            check_database_deletes,
            check_error_reports,
            check_outbox_database,
            check_schemas,
            check_settings,
        )

        checks.register(check_settings)
        checks.register(check_schemas)
        checks.register(check_database_deletes, checks.Tags.models)
        checks.register(check_error_reports, checks.Tags.security)
        checks.register(check_outbox_database, checks.Tags.database)
        setting_changed.connect(settings.reset, dispatch_uid="broadcaster.settings.reset")
        setting_changed.connect(_reset_publisher, dispatch_uid="broadcaster.publisher.reset")


def _reset_publisher(*, setting: str, **kwargs: object) -> None:
    from broadcaster.transport import reset_publisher  # noqa: PLC0415

    if setting == "BROADCASTER":
        reset_publisher(timeout=5)
