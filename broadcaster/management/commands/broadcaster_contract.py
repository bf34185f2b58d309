"""`manage.py broadcaster_contract {export,check}`: this service's event contract.

`export` prints the AsyncAPI 3.0 document of the events this service publishes and
consumes, or with ``--output DIR`` writes it and one JSON Schema per event there: that
directory is the snapshot to commit. `check --snapshot DIR` compares the live schemas
with it, by direction, and fails on a breaking change (see `broadcaster.compat` for
which are).

Exit codes: 0 when nothing breaks, 1 on a breaking change, 2 when the contract cannot be
built (a schema pydantic cannot write as JSON Schema, one event published and
consumed with two schemas) or the snapshot read (a missing directory, a file that is
not JSON or not in the snapshot format). From `call_command` the failures are a `CommandError` whose
`returncode` is that code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster import asyncapi, compat, registry, snapshot
from broadcaster.compat import Change
from broadcaster.exceptions import BroadcasterError
from broadcaster.settings import get_settings
from broadcaster.snapshot import EventContract
from broadcaster.topology import Topology

BREAKING_EXIT = 1
UNUSABLE_EXIT = 2


class Command(BaseCommand):
    help = "Export this service's events as AsyncAPI 3.0 and JSON Schema, or check them against a snapshot."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{export,check}")
        export = actions.add_parser("export", help="print the AsyncAPI document, or write a snapshot with --output")
        export.add_argument(
            "--output", type=Path, help="write asyncapi.json and one <event>.schema.json per event to this directory"
        )
        export.add_argument("--api-version", default="1.0.0", help="info.version of the AsyncAPI document")
        check = actions.add_parser("check", help="fail on a breaking change against a snapshot")
        check.add_argument("--snapshot", type=Path, required=True, help="a directory written by export --output")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            contracts = snapshot.collect(registry.broadcasts(), registry.subscriptions().values())
            if options["action"] == "export":
                self._export(contracts, options["output"], options["api_version"])
            else:
                self._check(contracts, options["snapshot"])
        except BroadcasterError as exc:
            raise CommandError(f"broadcaster_contract: {exc}", returncode=UNUSABLE_EXIT) from exc

    def _export(self, contracts: list[EventContract], output: Path | None, version: str) -> None:
        settings = get_settings()
        topology = Topology.for_settings(settings)
        document = asyncapi.asyncapi_document(
            contracts, service=settings.service_name, exchange=topology.exchange, queue=topology.queue, version=version
        )
        if output is None:
            self.stdout.write(_dump(document), ending="")
            return
        files = snapshot.export_files(contracts, document)
        output.mkdir(parents=True, exist_ok=True)
        # An event the service dropped must leave the snapshot too, or `check` would report it forever.
        for stale in output.glob(f"*{snapshot.SCHEMA_SUFFIX}"):
            if stale.name not in files:
                stale.unlink()
        for name, content in files.items():
            (output / name).write_text(_dump(content), encoding="utf-8")
        self.stdout.write(f"broadcaster_contract: wrote {len(files)} file(s) for {len(contracts)} event(s) to {output}")

    def _check(self, contracts: list[EventContract], directory: Path) -> None:
        old = snapshot.read_snapshot(directory)
        new = {item.event: snapshot.schema_document(item) for item in contracts}
        changes = compat.compare(old, new)
        for change in changes:
            self.stdout.write(str(change))
        self.stdout.write(f"note: {compat.INVISIBLE}")
        summary = _summary(changes, len(old.keys() | new.keys()))
        self.stdout.write(summary)
        if any(change.breaking and not change.allowed for change in changes):
            raise CommandError(summary, returncode=BREAKING_EXIT)


def _summary(changes: list[Change], events: int) -> str:
    breaking = sum(change.breaking and not change.allowed for change in changes)
    allowed = sum(change.allowed for change in changes)
    verdict = "FAILED" if breaking else "OK"
    return (
        f"broadcaster_contract: {verdict}: {events} event(s), {len(changes)} change(s), "
        f"{breaking} breaking, {allowed} breaking but allowed by a major version bump"
    )


def _dump(content: Any) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"
