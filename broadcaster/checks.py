"""System checks: misconfiguration is reported by `manage.py check`, with ids.

Every id the library reports is a `Rule` in `RULES`: when it is reported and the hint
shown with it (the settings reference renders its table from them). An id keeps its
meaning for good; a new rule takes a new number:

- E001-E004: the BROADCASTER setting as a whole (missing, SERVICE_NAME, BROKER_URL, a key
  that is not a setting). E005, once "any other invalid value", is no longer reported.
- E010-E011: what the registered schemas send, and the outbox's database.
- E020-E021: the nodes of a BROKER_URL list disagree; W020: classic queues on a cluster.
- E030-E033: settings that are valid alone but not together.
- E101 and up: one per key, in `_KEY_IDS`, for a value of the wrong type or out of range.
- W001: error reports would show the broker password; W002: deletions nobody signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.db import models
from django.db.models.signals import post_delete, pre_delete
from django.utils.module_loading import import_string
from pydantic import ValidationError

from broadcaster.relaylock import skip_locked_problem
from broadcaster.settings import BroadcasterSettings, raw_setting

__all__ = [
    "ERROR_REPORTS_ID",
    "RULES",
    "Rule",
    "SettingProblem",
    "check_database_deletes",
    "check_error_reports",
    "check_outbox_database",
    "check_schemas",
    "check_settings",
    "validate",
]


@dataclass(frozen=True, slots=True)
class Rule:
    """One system check id: when it is reported, and what to do about it."""

    id: str
    reported_when: str
    """For the reference: the situation, in a sentence."""
    hint: str
    """Shown by `manage.py check` under the message."""

    def report(self, message: str, obj: object) -> CheckMessage:
        """The Error (an ``E`` id) or Warning (a ``W`` id) that `manage.py check` shows."""
        level = Warning if self.id.startswith("broadcaster.W") else Error
        return level(message, hint=self.hint, obj=obj, id=self.id)


@dataclass(frozen=True)
class SettingProblem:
    """One thing wrong with BROADCASTER, as a system check reports it."""

    check_id: str
    key: str
    message: str


_FIXED_RULES = (
    Rule(
        "broadcaster.E001",
        "`BROADCASTER` is missing or not a dict.",
        'Add BROADCASTER = {"SERVICE_NAME": "orders"} to your settings.',
    ),
    Rule(
        "broadcaster.E002",
        "`SERVICE_NAME` is missing or not a valid name.",
        "SERVICE_NAME names this service's queue and the source of its events.",
    ),
    Rule(
        "broadcaster.E003",
        "`BROKER_URL` is not an `amqp://` or `amqps://` URL with a host (the URL is never echoed).",
        "Use amqp://user:password@host:5672/vhost (or amqps://), or set BROADCASTER_BROKER_URL.",
    ),
    Rule(
        "broadcaster.E004",
        "A key that is not a setting (a typo).",
        "See the settings reference for the keys BROADCASTER accepts.",
    ),
    Rule(
        "broadcaster.E010",
        "A registered schema sends a form its own validation rejects (a serializer whose declared return type "
        "the field does not accept when read, a `Json[...]` field); silence it if the comparison is wrong.",
        "Make the serializer's declared return type one the field accepts when the message is read "
        "(PlainSerializer(..., return_type=...)); a Json[...] field needs round_trip serialization. "
        "If the comparison is wrong for this schema, add broadcaster.E010 to SILENCED_SYSTEM_CHECKS.",
    ),
    Rule(
        "broadcaster.E011",
        "In outbox mode, a database has no `SELECT ... FOR UPDATE SKIP LOCKED` (MariaDB before 10.6, MySQL "
        "before 8.0.1): the relay cannot run there (checked by `migrate` and `check --database`).",
        "Upgrade the database server, or use PUBLISH_MODE='on_commit' with it.",
    ),
    Rule(
        "broadcaster.E020",
        "`BROKER_URL` lists nodes of different schemes (`amqp://` and `amqps://`); names the entry.",
        "A client fails over from node to node with one TLS configuration: use amqp:// or amqps:// for all of them.",
    ),
    Rule(
        "broadcaster.E021",
        "`BROKER_URL` lists a node with another user, password or vhost than the first; names the entry "
        "(never its password).",
        "A client fails over from node to node with one user: give every URL the same user, password and vhost.",
    ),
    Rule(
        "broadcaster.E030",
        "A `TLS_*` setting is set but `BROKER_URL` is not `amqps://`.",
        "Use amqps:// URLs for the broker, or remove the TLS_* settings.",
    ),
    Rule(
        "broadcaster.E031",
        "Only one of `TLS_CERT_FILE` and `TLS_KEY_FILE` is set.",
        "A client certificate needs its private key: set both, or neither.",
    ),
    Rule(
        "broadcaster.E032",
        "`SIGNING_KEY_ID` is not a key of `SIGNING_KEYS[SERVICE_NAME]`.",
        "Add the key under SIGNING_KEYS[SERVICE_NAME], or name one that is there.",
    ),
    Rule(
        "broadcaster.E033",
        "`REQUIRE_SIGNATURES` is on but `SIGNING_KEYS` is empty: no event could be verified.",
        "Give SIGNING_KEYS the keys of the services this one trusts, or leave REQUIRE_SIGNATURES off.",
    ),
    Rule(
        "broadcaster.W001",
        "A warning: Django's error reports (the DEBUG page, the mails to `ADMINS`) would show the broker password, "
        "because `DEFAULT_EXCEPTION_REPORTER_FILTER` is not the library's filter "
        "(see [Security](../security.md#error-reports)).",
        'Set DEFAULT_EXCEPTION_REPORTER_FILTER = "broadcaster.reporting.SafeExceptionReporterFilter" '
        "(or a subclass of it).",
    ),
    Rule(
        "broadcaster.W002",
        "A model whose deletions are broadcast (`pre_delete`/`post_delete`) has a foreign key with "
        "`on_delete=DB_CASCADE` (Django 6.1): the database deletes those rows without any signal, so they are "
        "not published.",
        "Use on_delete=models.CASCADE on that foreign key (Django then deletes, and signals, row by row), "
        "or broadcast the deletion from the parent model's signal.",
    ),
    Rule(
        "broadcaster.W020",
        "A warning: `BROKER_URL` lists several nodes and `QUEUE_TYPE` is `classic`, whose queues live on one node "
        "(see the cluster page).",
        'Set QUEUE_TYPE = "quorum" on a cluster (see docs/cluster.md for moving an existing queue).',
    ),
)

# One id per key, never reused or renumbered: a new setting takes the next free number.
# SERVICE_NAME and BROKER_URL keep the ids they had before every key had its own.
_KEY_IDS = {
    "SERVICE_NAME": "broadcaster.E002",
    "BROKER_URL": "broadcaster.E003",
    "EXCHANGE": "broadcaster.E101",
    "QUEUE": "broadcaster.E102",
    "QUEUE_TYPE": "broadcaster.E103",
    "PREFETCH": "broadcaster.E104",
    "PUBLISH_TIMEOUT": "broadcaster.E105",
    "MAX_BUFFER": "broadcaster.E106",
    "SHUTDOWN_TIMEOUT": "broadcaster.E107",
    "RETRY_DELAYS": "broadcaster.E108",
    "MAX_HOPS": "broadcaster.E109",
    "MAX_MESSAGE_BYTES": "broadcaster.E110",
    "MAX_JSON_DEPTH": "broadcaster.E111",
    "HEARTBEAT": "broadcaster.E112",
    "PUBLISH_MODE": "broadcaster.E113",
    "OUTBOX_BATCH": "broadcaster.E114",
    "OUTBOX_POLL_INTERVAL": "broadcaster.E115",
    "OUTBOX_RETENTION": "broadcaster.E116",
    "INBOX_RETENTION": "broadcaster.E117",
    "TLS_CA_FILE": "broadcaster.E118",
    "TLS_CERT_FILE": "broadcaster.E119",
    "TLS_KEY_FILE": "broadcaster.E120",
    "TLS_SERVER_NAME": "broadcaster.E121",
    "TLS_VERIFY": "broadcaster.E122",
    "SIGNING_KEYS": "broadcaster.E123",
    "SIGNING_KEY_ID": "broadcaster.E124",
    "REQUIRE_SIGNATURES": "broadcaster.E125",
    "REQUIRE_USER_ID": "broadcaster.E126",
    "SEAL_KEYS": "broadcaster.E127",
    "INSTANCE_ID": "broadcaster.E128",
    "INSTANCE_QUEUE_EXPIRES": "broadcaster.E129",
    "PARTITIONS": "broadcaster.E130",
    "CONCURRENCY": "broadcaster.E131",
    "CONSUMER_TIMEOUT": "broadcaster.E132",
    "RECONNECT_MAX_DELAY": "broadcaster.E133",
    "UNROUTED_QUEUE": "broadcaster.E134",
    "UNROUTED_LOG_INTERVAL": "broadcaster.E135",
    "MANAGEMENT_URL": "broadcaster.E136",
    "KILL_SWITCH_RATIO": "broadcaster.E137",
    "KILL_SWITCH_WINDOW": "broadcaster.E138",
    "KILL_SWITCH_MIN_EVENTS": "broadcaster.E139",
    "KILL_SWITCH_COOLDOWN": "broadcaster.E140",
}
# Rules that pydantic reports by error type (raised in broadcaster.settings), whatever the key.
_TYPE_IDS = {
    "extra_forbidden": "broadcaster.E004",
    "broker_url_schemes": "broadcaster.E020",
    "broker_url_credentials": "broadcaster.E021",
    "tls_needs_amqps": "broadcaster.E030",
    "tls_cert_and_key": "broadcaster.E031",
    "signing_key_id_unknown": "broadcaster.E032",
    "signatures_without_keys": "broadcaster.E033",
}
_SECRET_KEYS = frozenset({"BROKER_URL", "SIGNING_KEYS", "SEAL_KEYS", "MANAGEMENT_URL"})


def _key_rules() -> list[Rule]:
    fields = {field.alias: field for field in BroadcasterSettings.model_fields.values()}
    return [
        Rule(
            check_id,
            f"`{key}` is not a valid value: of another type, out of its range, or malformed.",
            f"{key}: {fields[key].description} See the settings reference for its type and range.",
        )
        for key, check_id in _KEY_IDS.items()
        if check_id.startswith("broadcaster.E1")
    ]


RULES: dict[str, Rule] = {rule.id: rule for rule in sorted((*_FIXED_RULES, *_key_rules()), key=lambda r: r.id)}
ERROR_REPORTS_ID = "broadcaster.W001"


def validate() -> tuple[BroadcasterSettings | None, list[SettingProblem]]:
    """Read and validate BROADCASTER now; return the settings or what is wrong, each with its id."""
    raw = raw_setting()
    if raw is None:
        message = "settings.BROADCASTER must be a dict with at least SERVICE_NAME"
        return None, [SettingProblem("broadcaster.E001", "BROADCASTER", message)]
    try:
        return BroadcasterSettings.model_validate(raw), []
    except ValidationError as exc:
        return None, [_problem(error) for error in exc.errors(include_url=False)]


def _problem(error: Any) -> SettingProblem:
    key = str(error["loc"][0]) if error["loc"] else "BROADCASTER"
    check_id = _TYPE_IDS.get(error["type"]) or _KEY_IDS[key]
    if error["type"] == "extra_forbidden":
        return SettingProblem(check_id, key, f"BROADCASTER[{key!r}] is not a known setting")
    if not error["loc"]:  # a rule about several keys: its message names them
        return SettingProblem(check_id, key, f"BROADCASTER: {error['msg']}")
    # Never echo a secret back: the broker URL may carry a password, SIGNING_KEYS are keys.
    shown = "" if key in _SECRET_KEYS else f" (got {error.get('input')!r})"
    return SettingProblem(check_id, key, f"BROADCASTER[{key!r}]: {error['msg']}{shown}")


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """The BROADCASTER setting is missing or invalid (one id per rule); W020: classic queues on a cluster."""
    settings, problems = validate()
    if settings is not None and len(settings.broker_urls) > 1 and settings.queue_type == "classic":
        return [
            RULES["broadcaster.W020"].report(
                'BROADCASTER["BROKER_URL"] lists several nodes but QUEUE_TYPE is "classic": a classic queue lives '
                "on one node, and its messages are out of reach while that node is down",
                "settings.BROADCASTER",
            )
        ]
    return [RULES[problem.check_id].report(problem.message, "settings.BROADCASTER") for problem in problems]


def check_schemas(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.E010: a registered schema sends a form its own validation rejects."""
    from broadcaster import payload, registry  # noqa: PLC0415 - the registry is filled once apps are ready
    from broadcaster.exceptions import ContractError  # noqa: PLC0415

    schemas = {item.schema for item in registry.broadcasts()} | {s.schema for s in registry.subscriptions().values()}
    errors: list[CheckMessage] = []
    for schema in sorted(schemas, key=lambda cls: cls.__qualname__):
        try:
            problems = payload.serialization_problems(schema)
        except ContractError:
            continue  # no JSON Schema to compare: `broadcaster_contract` reports that
        errors += [
            RULES["broadcaster.E010"].report(
                f"{schema.__qualname__} sends what its own validation rejects (read -> sent): {problem}", schema
            )
            for problem in problems
        ]
    return errors


def check_error_reports(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.W001: Django's error reports would show the broker password (or a key).

    Quiet once DEFAULT_EXCEPTION_REPORTER_FILTER is broadcaster.reporting's filter or a
    subclass of it, or when BROADCASTER holds no password and no key.
    """
    # Imported here: Django's error reporting is not needed to load the app.
    from broadcaster import reporting  # noqa: PLC0415

    path = settings.DEFAULT_EXCEPTION_REPORTER_FILTER
    try:
        configured = import_string(path)
    except ImportError:
        configured = None  # Django reports its own setting when it uses it
    safe = isinstance(configured, type) and issubclass(configured, reporting.SafeExceptionReporterFilter)
    if safe or not reporting.secrets():
        return []
    return [
        RULES[ERROR_REPORTS_ID].report(
            "the DEBUG page and the error mails to ADMINS would show the broker password: Django hides "
            "settings by name only, and BROADCASTER['BROKER_URL'] carries its password in the value",
            "settings.DEFAULT_EXCEPTION_REPORTER_FILTER",
        )
    ]


def check_outbox_database(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """broadcaster.E011: in outbox mode, a database cannot run the relay's SKIP LOCKED query.

    Registered with the database tag: it connects, so it runs only for the databases
    Django names (``migrate``, ``check --database``), never in a plain ``manage.py check``.
    """
    settings, _ = validate()
    if not databases or settings is None or settings.publish_mode != "outbox":
        return []
    return [
        RULES["broadcaster.E011"].report(problem, f"settings.DATABASES[{alias!r}]")
        for alias in databases
        if (problem := skip_locked_problem(alias)) is not None
    ]


def check_database_deletes(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """broadcaster.W002: a broadcast delete signal's sender can be deleted by the database alone.

    A foreign key with ``on_delete=DB_CASCADE`` (Django 6.1) deletes rows inside the
    database, and Django sends no pre_delete or post_delete for them: those deletions
    would never be published. Reads model metadata only; never opens a connection.
    """
    return [
        _unsignalled_delete(signal_name, event, model, field)
        for signal_name, event, model in _broadcast_deletes()
        for field in model._meta.fields
        if isinstance(field, models.ForeignKey) and _deleted_by_database(field)
    ]


def _unsignalled_delete(
    signal_name: str, event: str, model: type[models.Model], field: models.ForeignKey[Any, Any]
) -> CheckMessage:
    parent = field.remote_field.model
    parent_label = parent if isinstance(parent, str) else parent._meta.label
    return RULES["broadcaster.W002"].report(
        f"{model._meta.label} is broadcast on {signal_name} as {event!r}, but deleting a {parent_label} "
        f"deletes it in the database ({field.name}: on_delete={field.remote_field.on_delete}), which sends "
        "no signal: those deletions are not published.",
        field,
    )


def _broadcast_deletes() -> list[tuple[str, str, type[models.Model]]]:
    """(signal name, event, model) for each model whose deletions a broadcast publishes."""
    from broadcaster.registry import broadcasts  # noqa: PLC0415 - filled once apps are ready

    names = {id(pre_delete): "pre_delete", id(post_delete): "post_delete"}
    found = []
    for receiver in broadcasts():
        name = names.get(id(receiver.signal))
        if name is None:
            continue
        found += [(name, receiver.event, model) for model in _models_of(receiver.sender)]
    return found


def _models_of(sender: object) -> list[type[models.Model]]:
    if sender is None:  # every model's deletions
        return list(apps.get_models())
    if isinstance(sender, str):
        try:
            return [apps.get_model(sender)]
        except (LookupError, ValueError):
            return []
    return [sender] if isinstance(sender, type) and issubclass(sender, models.Model) else []


def _deleted_by_database(field: models.Field[Any, Any]) -> bool:
    """Whether `field` is a foreign key whose target's deletion deletes this row in the database."""
    db_cascade = getattr(models, "DB_CASCADE", None)  # Django 6.1 and later
    return (
        db_cascade is not None and isinstance(field, models.ForeignKey) and field.remote_field.on_delete is db_cascade
    )
