"""`manage.py dead_letters {list,replay,purge}`: the operator's tools for dead letters.

One command with three subcommands, so the filters, the help and the broker handling are
written once and `manage.py help dead_letters` shows the whole tool. The work happens in
`broadcaster.deadletters`; this module only parses arguments and prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster import deadletters
from broadcaster.deadletters import DeadLetter, Listing, Match
from broadcaster.exceptions import BroadcasterError
from broadcaster.management.options import positive
from broadcaster.settings import BroadcasterSettings, get_settings
from broadcaster.sweep import Sweep, Tally, partition_exchanges
from broadcaster.topology import Topology

DEFAULT_LIMIT = 100
_ERROR_WIDTH = 60
_COLUMNS = ("ID", "EVENT", "REASON", "ATTEMPTS", "AGE", "ERROR")


class Command(BaseCommand):
    help = (
        "List, replay to the service queue, or purge the messages in this service's dead-letter queue; "
        "with --queue unrouted, the events parked in UNROUTED_QUEUE, replayed to EXCHANGE. "
        "Example: manage.py dead_letters replay --queue unrouted --event orders.order_saved. "
        "Exit codes: 0 done; 1 an error (broker, settings, a refused copy); 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,replay,purge}")
        listing = actions.add_parser("list", help="show dead letters without removing them")
        listing.add_argument(
            "--limit", type=positive, default=DEFAULT_LIMIT, help=f"show at most this many (default {DEFAULT_LIMIT})"
        )
        listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
        replay = actions.add_parser("replay", help="send dead letters back to the service queue, from attempt 1")
        replay.add_argument("--limit", type=positive, help="replay at most this many")
        purge = actions.add_parser("purge", help="delete dead letters for good")
        purge.add_argument("--limit", type=positive, help="delete at most this many")
        purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        for sub in (listing, replay, purge):
            sub.add_argument(
                "--queue",
                choices=("dead-letter", "unrouted"),
                default="dead-letter",
                help="the service's dead-letter queue (default), or UNROUTED_QUEUE: events no queue took, "
                "replayed to EXCHANGE by event type",
            )
            sub.add_argument("--event", help="only messages of this event type (ce-type or routing key)")
            sub.add_argument("--id", dest="envelope_id", help="only the message with this envelope id (ce-id)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        match = Match(event=options["event"], id=options["envelope_id"])
        if action == "purge" and not options["yes"] and not _interactive():
            raise CommandError(
                "dead_letters: refusing to purge without confirmation: stdin is not a terminal; pass --yes"
            )
        try:
            settings = get_settings()
            queue = _queue(settings, options["queue"])
            if action == "list":
                self._list(settings, queue, match, options["limit"], as_json=options["json"])
            elif action == "replay" and options["queue"] == "unrouted":
                self._replay_unrouted(settings, queue, match, options["limit"])
            elif action == "replay":
                self._replay(settings, match, options["limit"])
            else:
                self._purge(settings, queue, match, options["limit"], confirmed=options["yes"])
        except BroadcasterError as exc:
            raise CommandError(f"dead_letters: {exc}") from exc

    def _list(self, settings: BroadcasterSettings, queue: str, match: Match, limit: int, *, as_json: bool) -> None:
        with deadletters.connect(settings) as channel:
            listing = deadletters.peek(channel, queue, settings=settings, limit=limit, match=match)
        if as_json:
            self.stdout.write(json.dumps(_listing_json(listing, match), indent=2))
            return
        if listing.letters:
            self.stdout.write(_table(listing.letters))
        shown, total = len(listing.letters), listing.total
        scope = "" if match.everything else f" (matching {match}; {listing.scanned} looked at)"
        self.stdout.write(f"listed {shown} of {total} {_plural(total)} in queue {queue!r}{scope}")

    def _replay(self, settings: BroadcasterSettings, match: Match, limit: int | None) -> None:
        topology = Topology.for_settings(settings)
        with deadletters.connect(settings) as channel:
            sweep = Sweep(channel, topology.dead_letter_queue, settings, match, limit, self._progress("replayed"))
            tally = sweep.replay(
                topology.queue, exchange=topology.requeue_exchange, ordered=partition_exchanges(settings)
            )
        self.stdout.write(
            f"replayed {tally.done} of {tally.scanned} {_plural(tally.scanned)} to queue {topology.queue!r}"
            + _rest(tally, match)
        )

    def _replay_unrouted(self, settings: BroadcasterSettings, queue: str, match: Match, limit: int | None) -> None:
        with deadletters.connect(settings) as channel:
            tally = Sweep(channel, queue, settings, match, limit, self._progress("replayed")).replay_unrouted(
                settings.exchange
            )
        self.stdout.write(
            f"replayed {tally.done} of {tally.scanned} unrouted {_plural(tally.scanned, 'event')} to exchange "
            f"{settings.exchange!r}" + _rest(tally, match)
        )

    def _purge(
        self, settings: BroadcasterSettings, queue: str, match: Match, limit: int | None, *, confirmed: bool
    ) -> None:
        with deadletters.connect(settings) as channel:
            total = deadletters.count(channel, queue)
            if not confirmed and not self._confirm(queue, total, match, limit):
                self.stdout.write("purge cancelled; nothing deleted")
                return
            tally = Sweep(channel, queue, settings, match, limit, self._progress("purged")).purge(upto=total)
        self.stdout.write(
            f"purged {tally.done} of {tally.scanned} {_plural(tally.scanned)} from queue {queue!r}"
            + _rest(tally, match)
        )

    def _confirm(self, queue: str, total: int, match: Match, limit: int | None) -> bool:
        scope = "every dead letter" if match.everything else f"the dead letters matching {match}"
        cap = f" (at most {limit})" if limit else ""
        self.stdout.write(
            f"Delete {scope}{cap} of the {total} in queue {queue!r}? This cannot be undone. [y/N] ", ending=""
        )
        self.stdout.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    def _progress(self, verb: str) -> Callable[[Tally], None]:
        def report(tally: Tally) -> None:
            self.stderr.write(f"dead_letters: {tally.scanned} looked at, {tally.done} {verb} so far")

        return report


def _queue(settings: BroadcasterSettings, which: str) -> str:
    """The queue --queue names: the dead-letter queue, or UNROUTED_QUEUE (which must be set)."""
    if which == "dead-letter":
        return Topology.for_settings(settings).dead_letter_queue
    if settings.unrouted_queue is None:
        raise CommandError("dead_letters: --queue unrouted needs BROADCASTER['UNROUTED_QUEUE'], which is not set")
    return settings.unrouted_queue


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False


def _listing_json(listing: Listing, match: Match) -> dict[str, object]:
    return {
        "queue": listing.queue,
        "total": listing.total,
        "scanned": listing.scanned,
        "filter": {"event": match.event, "id": match.id},
        "dead_letters": [letter.as_json() for letter in listing.letters],
    }


def _table(letters: tuple[DeadLetter, ...]) -> str:
    rows = [_COLUMNS, *(_row(letter) for letter in letters)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _row(letter: DeadLetter) -> tuple[str, ...]:
    error = (letter.error or "").replace("\n", " ")
    if len(error) > _ERROR_WIDTH:
        error = error[: _ERROR_WIDTH - 3] + "..."
    attempts = "-" if letter.attempts is None else str(letter.attempts)
    return (letter.id or "-", letter.event or "-", letter.reason or "-", attempts, format_age(letter.age), error)


def format_age(seconds: float | None) -> str:
    """A short human age: 42s, 5m, 3h10m, 2d4h."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _rest(tally: Tally, match: Match) -> str:
    scope = "" if match.everything else f" (matching {match})"
    return f"{scope}; {tally.left} left in {tally.queue!r}"


def _plural(number: int, noun: str = "dead letter") -> str:
    return noun if number == 1 else f"{noun}s"
