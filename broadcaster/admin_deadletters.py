"""The admin page of this service's dead letters, read from the broker (there is no table).

It shows the head of the dead-letter queue grouped by reason and event type, each
message's headers and body, and replays or purges one message, a selection or a group
after a confirmation page. The work is `broadcaster.deadletters`' (the walk the
``dead_letters`` command uses), so the guarantees are the same: a message is acked
only once its copy is confirmed or it is purged, every other one is handed back, and
a walk sees each message once. Only users with ``broadcaster.manage_dead_letters``
(superusers have it) see the page.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from broadcaster import deadletters
from broadcaster.deadletters import Content, DeadLetter, Listing, Match
from broadcaster.exceptions import BroadcasterError
from broadcaster.models import DeadLetter as DeadLetterModel
from broadcaster.settings import BroadcasterSettings, get_settings
from broadcaster.sweep import Sweep, Tally, partition_exchanges
from broadcaster.topology import Topology

__all__ = ["PERMISSION", "DeadLetterAdmin", "Selection"]

logger = logging.getLogger(__name__)

PERMISSION = "broadcaster.manage_dead_letters"
PAGE_LIMIT = 200
"""Dead letters read from the head of the queue for one view of the page."""
TEXT_LIMIT = 4000
"""Characters of a message's headers or body shown; the rest is cut, and says so."""
_GROUP_SEPARATOR = "\x1f"

if TYPE_CHECKING:
    _Admin = admin.ModelAdmin[DeadLetterModel]
else:  # ModelAdmin is generic only in django-stubs
    _Admin = admin.ModelAdmin


@dataclass(frozen=True, slots=True)
class Selection(Match):
    """Dead letters picked on the page: some envelope ids, or a whole (reason, event type) group."""

    ids: frozenset[str] = frozenset()
    group: tuple[str, str] | None = None
    """(reason, event type) as the page shows them, "" where the message has none."""

    @property
    def everything(self) -> bool:
        return False

    def __call__(self, letter: DeadLetter) -> bool:
        if self.group is not None:
            return _group_of(letter) == self.group
        return letter.id is not None and letter.id in self.ids

    def __str__(self) -> str:
        if self.group is not None:
            reason, event = self.group
            return f"reason {reason or '-'} and event {event or '-'}"
        return f"{len(self.ids)} chosen id(s)"


@dataclass(frozen=True, slots=True)
class _Shown:
    letter: DeadLetter
    headers: str
    body: str


@admin.register(DeadLetterModel)
class DeadLetterAdmin(_Admin):
    """One page (no rows in the database): list, then replay or purge after a confirmation."""

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.changelist_view), name=name)]

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return bool(request.user.has_perm(PERMISSION))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        settings = get_settings()
        try:
            if request.method == "POST":
                return self._act(request, settings)
            return self._list(request, settings)
        except BroadcasterError as exc:
            logger.warning("admin: dead letters unavailable: %s", exc)
            return self._render(request, "dead_letters.html", {"problem": str(exc)}, status=503)

    def _list(self, request: HttpRequest, settings: BroadcasterSettings) -> HttpResponse:
        queue = Topology.for_settings(settings).dead_letter_queue
        with deadletters.connect(settings) as channel:
            listing = deadletters.peek(channel, queue, settings=settings, limit=PAGE_LIMIT, contents=True)
        context = {"listing": listing, "groups": _groups(listing), "shown": _shown(listing), "queue": queue}
        return self._render(request, "dead_letters.html", context)

    def _act(self, request: HttpRequest, settings: BroadcasterSettings) -> HttpResponse:
        action, selection = _requested(request.POST)
        if action not in ("replay", "purge") or selection is None:
            self.message_user(
                request, "Choose dead letters first (tick them, or use a group's button).", messages.WARNING
            )
            return HttpResponseRedirect(request.path)
        if request.POST.get("post") != "yes":
            return self._confirm(request, settings, action, selection)
        upto = _number(request.POST.get("upto"))
        tally = _carry_out(settings, action, selection, upto)
        verb = "Replayed" if action == "replay" else "Purged"
        logger.info("admin: %s %s %d dead letter(s) (%s)", request.user, verb.lower(), tally.done, selection)
        self.message_user(
            request,
            f"{verb} {tally.done} dead letter(s) ({selection}); {tally.left} left in {tally.queue!r}",
            messages.SUCCESS if tally.done else messages.WARNING,
        )
        return HttpResponseRedirect(request.path)

    def _confirm(
        self, request: HttpRequest, settings: BroadcasterSettings, action: str, selection: Selection
    ) -> HttpResponse:
        queue = Topology.for_settings(settings).dead_letter_queue
        with deadletters.connect(settings) as channel:
            listing = deadletters.peek(channel, queue, settings=settings, limit=PAGE_LIMIT, match=selection)
        context = {
            "action": action,
            "scope": str(selection),  # a callable would be called by the template
            "ids": sorted(selection.ids),
            "group": selection.group and _GROUP_SEPARATOR.join(selection.group),
            "listing": listing,
            "queue": queue,
        }
        return self._render(request, "dead_letters_confirm.html", context)

    def _render(
        self, request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
    ) -> TemplateResponse:
        base = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Dead letters of {get_settings().service_name}",
        }
        return TemplateResponse(request, f"admin/broadcaster/deadletter/{template}", {**base, **context}, status=status)


def _carry_out(settings: BroadcasterSettings, action: str, selection: Selection, upto: int | None) -> Tally:
    """Replay or purge what the operator confirmed, through the command's walk."""
    topology = Topology.for_settings(settings)
    with deadletters.connect(settings) as channel:
        sweep = Sweep(channel, topology.dead_letter_queue, settings, selection)
        if action == "purge":
            # upto: the queue's length when the operator confirmed; later arrivals stay.
            return sweep.purge(upto=upto)
        return sweep.replay(topology.queue, exchange=topology.requeue_exchange, ordered=partition_exchanges(settings))


def _requested(form: Any) -> tuple[str, Selection | None]:
    """The action asked for and what it applies to: one message's button, a group, or the ticked ids."""
    one = form.get("one", "")
    if one:
        action, _, envelope_id = one.partition(":")
        return action, Selection(ids=frozenset([envelope_id])) if envelope_id else None
    return form.get("action", ""), _selection(form)


def _selection(form: Any) -> Selection | None:
    if group := form.get("group"):
        reason, _, event = group.partition(_GROUP_SEPARATOR)
        return Selection(group=(reason, event))
    ids = frozenset(value for value in form.getlist("id") if value)
    return Selection(ids=ids) if ids else None


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _group_of(letter: DeadLetter) -> tuple[str, str]:
    return (letter.reason or "", letter.event or "")


def _groups(listing: Listing) -> list[dict[str, object]]:
    counts = Counter(_group_of(letter) for letter in listing.letters)
    return [
        {"reason": reason, "event": event, "count": count, "key": f"{reason}{_GROUP_SEPARATOR}{event}"}
        for (reason, event), count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def _shown(listing: Listing) -> list[_Shown]:
    return [
        _Shown(letter, _cut(json.dumps(content.headers, indent=2, sort_keys=True, default=_plain)), _body(content))
        for letter, content in zip(listing.letters, listing.contents, strict=True)
    ]


def _body(content: Content) -> str:
    try:
        return _cut(json.dumps(json.loads(content.body), indent=2, ensure_ascii=False))
    except (ValueError, RecursionError):
        return _cut(content.body.decode("utf-8", errors="replace"))


def _plain(value: object) -> str:
    # Header values pika decodes to bytes, datetimes or decimals: shown as text.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _cut(text: str) -> str:
    if len(text) <= TEXT_LIMIT:
        return text
    return f"{text[:TEXT_LIMIT]}\n… cut: {len(text) - TEXT_LIMIT} more character(s)"
