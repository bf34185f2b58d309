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
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Expression, Func, Q, QuerySet, TextField
from django.db.models.sql.compiler import SQLCompiler
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from broadcaster import outbox
from broadcaster.admin_deadletters import DeadLetterAdmin
from broadcaster.exceptions import BroadcasterError
from broadcaster.models import InboxEntry, OutboxEvent

__all__ = ["DeadLetterAdmin", "InboxEntryAdmin", "OutboxEventAdmin", "OutboxStateFilter", "PayloadText"]

logger = logging.getLogger(__name__)

REDELIVERY_NOTE = (
    "Each entry records that the receivers of one event committed their work. Deleting an entry "
    "forgets that: if the broker delivers the event again, its receivers run again."
)
_ERROR_PREVIEW = 80
_STALE_PENDING = 60  # seconds a row may wait before the page asks whether a relay runs
RELAY_HINT = "a relay must run to publish it: manage.py relay_outbox (or the web process's relay after a commit)"

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


class PayloadText(Func):
    """The outbox body (UTF-8 JSON bytes) as text, so the admin can search it."""

    output_field = TextField()

    def __init__(self, expression: Expression | str) -> None:
        super().__init__(expression, output_field=TextField())

    def as_sql(  # type: ignore[override]
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, list[Any]]:
        templates = {
            "postgresql": "convert_from(%(expressions)s, 'UTF8')",
            "mysql": "CONVERT(%(expressions)s USING utf8mb4)",
        }
        template = templates.get(connection.vendor, "CAST(%(expressions)s AS TEXT)")
        sql, params = super().as_sql(compiler, connection, template=template, **extra)
        return sql, list(params)


def _timestamp(value: datetime | None) -> str:
    """To the second, with the zone: an operator compares it with logs."""
    return "-" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def _age(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole // 60 % 60:02d}m"


@admin.register(OutboxEvent)
class OutboxEventAdmin(_OutboxAdmin):
    """Read-only outbox rows, and an action to publish chosen rows again."""

    list_display = ("event_type", "event_id", "state", "created", "published", "attempts", "error_preview")
    list_filter = (OutboxStateFilter, "event_type")
    search_fields = ("event_id", "event_type", "payload_text")
    search_help_text = "Event id, event type, or text in the payload (e.g. 42 for the events of order 42)."
    date_hierarchy = "created_at"
    ordering = ("-id",)
    actions = ("publish_again",)
    fields = (
        "event_type",
        "event_id",
        "state",
        "created",
        "published",
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

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OutboxEvent], search_term: str
    ) -> tuple[QuerySet[OutboxEvent], bool]:
        if search_term:  # decode the payloads only when searching
            queryset = queryset.annotate(payload_text=PayloadText("body"))
        return super().get_search_results(request, queryset, search_term)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        stale = timezone.now() - timedelta(seconds=_STALE_PENDING)
        waiting = OutboxEvent.objects.filter(published_at__isnull=True, last_error="", created_at__lt=stale).count()
        if waiting and request.method == "GET":
            self.message_user(
                request, f"{waiting} event(s) pending for over {_STALE_PENDING} s: {RELAY_HINT}.", messages.WARNING
            )
        return super().changelist_view(request, extra_context)

    @admin.action(
        permissions=["publish"], description="Publish again (now; at-least-once, consumers tell a repeat by its id)"
    )
    def publish_again(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> HttpResponse | None:
        """Ask first; then publish the rows now and report what the broker said.

        Each row keeps its evidence (published_at, last_error) until the new attempt's
        outcome is known: `outbox.publish_again` stamps or records it.
        """
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Publish these events again?",
                "opts": self.opts,
                "rows": list(queryset.order_by("id")),
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(request, "admin/broadcaster/outboxevent/publish_again.html", context)
        ids = list(queryset.order_by("id").values_list("pk", flat=True))
        try:
            count = outbox.publish_again(ids, queryset.db)
        except BroadcasterError as exc:
            logger.warning("admin: %s could not publish %d outbox row(s) again: %s", request.user, len(ids), exc)
            self.message_user(
                request, f"The broker did not take the {len(ids)} event(s): {exc}. Each row records it.", messages.ERROR
            )
            return None
        logger.info("admin: %s published %d outbox row(s) again", request.user, count)
        self.message_user(request, f"{count} event(s) published again; the broker confirmed them.", messages.SUCCESS)
        return None

    @admin.display(description="state")
    def state(self, row: OutboxEvent) -> SafeString:
        if row.published_at is not None:
            return format_html("{}", "published")
        if row.last_error:
            return format_html("{}", "failed")
        age = _age((timezone.now() - row.created_at).total_seconds())
        return format_html('<span title="{}">pending {}</span>', RELAY_HINT, age)

    @admin.display(description="created", ordering="created_at")
    def created(self, row: OutboxEvent) -> str:
        return _timestamp(row.created_at)

    @admin.display(description="published", ordering="published_at")
    def published(self, row: OutboxEvent) -> str:
        return _timestamp(row.published_at)

    @admin.display(description="last error")
    def error_preview(self, row: OutboxEvent) -> SafeString:
        return format_html(
            '<span title="{}">{}</span>', row.last_error, Truncator(row.last_error).chars(_ERROR_PREVIEW)
        )

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
        response.context_data["redelivery_note"] = REDELIVERY_NOTE
    return response


@admin.register(InboxEntry)
class InboxEntryAdmin(_InboxAdmin):
    """Read-only inbox entries; deleting them is allowed, with the consequence spelled out."""

    list_display = ("event_type", "event_id", "source", "handled")
    list_filter = ("event_type", "source")
    search_fields = ("event_id", "event_type", "source")
    date_hierarchy = "handled_at"
    ordering = ("-handled_at",)
    fields = ("event_type", "event_id", "source", "handled")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: InboxEntry | None = None) -> bool:
        return False

    @admin.display(description="handled", ordering="handled_at")
    def handled(self, entry: InboxEntry) -> str:
        return _timestamp(entry.handled_at)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes action_location (list or change form) and deprecates overrides
        # without it; earlier versions neither pass nor accept it.
        where = {} if action_location is None else {"action_location": action_location}
        # Under delete_selected's own name: its confirmation page posts action=delete_selected.
        actions = super().get_actions(request, **where)
        if "delete_selected" in actions:
            actions["delete_selected"] = (forget_entries, "delete_selected", forget_entries.short_description)  # type: ignore[attr-defined,assignment]
        return actions

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"redelivery_note": REDELIVERY_NOTE, **(extra_context or {})})

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().delete_view(request, object_id, {"redelivery_note": REDELIVERY_NOTE, **(extra_context or {})})

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        """Back to the inbox list (Django sends users who may not change rows to the admin index)."""
        response = super().response_delete(request, obj_display, obj_id)
        if not isinstance(response, HttpResponseRedirect) or not self.has_view_permission(request):
            return response
        changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        filters: dict[str, Any] = {"preserved_filters": self.get_preserved_filters(request), "opts": self.opts}
        return HttpResponseRedirect(add_preserved_filters(filters, changelist))
