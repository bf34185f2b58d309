"""Django's error reports without the library's secrets.

Django hides a setting by its name (``...KEY``, ``...PASS``...): ``SIGNING_KEYS`` is
hidden, but ``BROADCASTER["BROKER_URL"]``, whose password sits inside the value, would
be shown on the DEBUG page and in the error mails to ``ADMINS``, and so would the
``BROADCASTER_BROKER_URL`` environment variable where a development server copies the
environment into ``request.META``. Name the filter here in the settings::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "broadcaster.reporting.SafeExceptionReporterFilter"

It does everything Django's filter does, and then replaces every broker password (of
every URL of a ``;``-separated BROKER_URL), signing key and seal key with ``***``
wherever a report would show one: settings, ``request.META``, and the local variables
of every traceback frame. System check ``broadcaster.W001`` warns while it is not set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings as django_settings
from django.views import debug

from broadcaster.brokerurl import broker_passwords
from broadcaster.settings import BROKER_URL_ENV

__all__ = ["FILTER_PATH", "SafeExceptionReporterFilter", "secrets"]

FILTER_PATH = "broadcaster.reporting.SafeExceptionReporterFilter"
_HIDDEN = "***"


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's SafeExceptionReporterFilter, and no broker password or key of this library anywhere."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """Django's cleansing by name, then the library's secrets taken out of what is left."""
        return self._hide(super().cleanse_setting(key, value), secrets())

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        """The frame's variables as Django shows them, each without the library's secrets."""
        found = secrets()
        return [
            (name, self._hide(value, found)) for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]

    def _hide(self, value: Any, found: Sequence[str]) -> Any:
        if not found:
            return value
        if isinstance(value, str):
            for secret in found:
                value = value.replace(secret, _HIDDEN)
            return value
        if isinstance(value, dict | list | tuple):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            hidden = {key: self._hide(item, found) for key, item in items}
            if isinstance(value, dict):
                return hidden
            return list(hidden.values()) if isinstance(value, list) else tuple(hidden.values())
        try:
            shown = repr(value)
        except Exception:  # Django reports an unprintable value its own way
            return value
        return self.cleansed_substitute if any(secret in shown for secret in found) else value


def secrets() -> tuple[str, ...]:
    """Every secret of the BROADCASTER setting as it stands now, longest first.

    Read from the raw setting (and the environment variable that overrides the URL), so
    a report of an invalid BROADCASTER hides them as well.
    """
    raw = getattr(django_settings, "BROADCASTER", None)
    raw = raw if isinstance(raw, dict) else {}
    found: set[str] = set()
    for url in [*_texts(raw.get("BROKER_URL")), *_texts(os.environ.get(BROKER_URL_ENV))]:
        found.update(broker_passwords(url))
    keys = raw.get("SIGNING_KEYS")
    for per_source in keys.values() if isinstance(keys, dict) else ():
        found.update(_texts(per_source.values() if isinstance(per_source, dict) else per_source))
    found.update(_texts(raw.get("SEAL_KEYS")))
    return tuple(sorted((secret for secret in found if secret), key=len, reverse=True))


def _texts(value: object) -> list[str]:
    """The strings in `value`: itself, or those of a list, a tuple or another iterable."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        return [item for item in value if isinstance(item, str)]
    return []
