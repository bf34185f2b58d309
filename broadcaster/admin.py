"""Admin pages for the outbox and the inbox: to look, to publish again, to forget; never to edit.

The rows carry guarantees that editing would break. An outbox row's headers and body are
the event as it was committed with the business change, so they are shown, never
changed, and rows are neither added (an event nobody fired) nor deleted (an unpublished
one would be lost; published ones go after OUTBOX_RETENTION). An inbox row records that
the receivers of one event committed their work; deleting it is allowed, and says so,
because it only means that a redelivery of that event runs the receivers again.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from broadcaster.models import InboxEntry, OutboxEvent
from broadcaster.settings import get_settings

__all__ = ["InboxEntryAdmin", "OutboxEventAdmin", "OutboxStateFilter"]

logger = logging.getLogger(__name__)

REDELIVERY_NOTE = (
    "Each entry records that the receivers of one event committed their work. Deleting an entry "
    "forgets that: if the broker delivers the event again, its receivers run again."
)
_ERROR_PREVIEW = 80

if TYPE_CHECKING:
    _OutboxAdmin = admin.ModelAdmin[OutboxEvent]
    _InboxAdmin = admin.ModelAdmin[InboxEntry]
else:  # ModelAdmin is generic only in django-stubs
    _OutboxAdmin = _InboxAdmin = admin.ModelAdmin


class OutboxStateFilter(admin.SimpleListFilter):
    """Pending (not yet tried or in flight), published, or failed (the last try raised)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "pending"), ("published", "published"), ("failed", "failed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        unpublished = Q(published_at__isnull=True)
        conditions = {
            "pending": unpublished & Q(last_error=""),
            "published": ~unpublished,
            "failed": unpublished & ~Q(last_error=""),
        }
        condition = conditions.get(self.value() or "")
        return queryset if condition is None else queryset.filter(condition)


@admin.register(OutboxEvent)
class OutboxEventAdmin(_OutboxAdmin):
    """Read-only outbox rows, and an action to publish chosen rows again."""

    list_display = ("event_type", "event_id", "created_at", "published_at", "attempts", "error_preview")
    list_filter = (OutboxStateFilter, "event_type")
    search_fields = ("event_id", "event_type")
    ordering = ("-id",)
    actions = ("publish_again",)
    fields = (
        "event_type",
        "event_id",
        "created_at",
        "published_at",
        "attempts",
        "last_error",
        "pretty_headers",
        "payload",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return False

    def has_publish_permission(self, request: HttpRequest) -> bool:
        """Whoever may change outbox rows may publish them again (the form itself stays read-only)."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(
        permissions=["publish"], description="Publish again (the relay re-sends them; delivery is at-least-once)"
    )
    def publish_again(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        """Mark the rows unpublished, so the relay sends them again.

        Safe even for rows the broker already took: consumers get every event at least
        once anyway and tell a repeat by its unchanged envelope id.
        """
        count = queryset.update(published_at=None, last_error="")
        logger.info("admin: %s marked %d outbox row(s) to be published again", request.user, count)
        if get_settings().publish_mode == "outbox":
            from broadcaster import outbox  # noqa: PLC0415 - starts the relay thread only when asked

            using = queryset.db
            transaction.on_commit(lambda: outbox.wake(using), using=using)
        self.message_user(request, f"{count} event(s) will be published again by the relay.", messages.SUCCESS)

    @admin.display(description="last error")
    def error_preview(self, row: OutboxEvent) -> str:
        return Truncator(row.last_error).chars(_ERROR_PREVIEW)

    @admin.display(description="headers")
    def pretty_headers(self, row: OutboxEvent) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(row.headers, indent=2, sort_keys=True))

    @admin.display(description="payload")
    def payload(self, row: OutboxEvent) -> SafeString:
        body = bytes(row.body)
        try:
            text = json.dumps(json.loads(body), indent=2)
        except ValueError:
            text = body.decode("utf-8", errors="replace")
        return format_html("<pre>{}</pre>", text)


@admin.action(permissions=["delete"], description="Delete selected inbox entries (a redelivery then runs again)")
def forget_entries(
    modeladmin: InboxEntryAdmin, request: HttpRequest, queryset: QuerySet[InboxEntry]
) -> HttpResponse | None:
    """Django's delete_selected, whose confirmation page says what deleting means here."""
    response = delete_selected(modeladmin, request, queryset)
    if isinstance(response, TemplateResponse) and response.context_data is not None:
        response.context_data["subtitle"] = REDELIVERY_NOTE
    return response


@admin.register(InboxEntry)
class InboxEntryAdmin(_InboxAdmin):
    """Read-only inbox entries; deleting them is allowed, with the consequence spelled out."""

    list_display = ("event_type", "event_id", "source", "handled_at")
    list_filter = ("event_type", "source")
    search_fields = ("event_id", "event_type")
    ordering = ("-handled_at",)
    actions = (forget_entries,)
    fields = list_display
    readonly_fields = list_display

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: InboxEntry | None = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes action_location (list or change form) and deprecates overrides
        # without it; earlier versions neither pass nor accept it.
        where = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **where)
        actions.pop("delete_selected", None)  # replaced by forget_entries, which carries the note
        return actions

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"subtitle": REDELIVERY_NOTE, **(extra_context or {})})

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().delete_view(request, object_id, {"subtitle": REDELIVERY_NOTE, **(extra_context or {})})
