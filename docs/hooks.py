"""MkDocs hooks: the reference pages are generated from the code, so they cannot drift from it.

A page asks for a generated block with a marker comment on a line of its own:

- ``<!-- generate: settings -->``: every field of `BroadcasterSettings` (alias, type, default, description);
- ``<!-- generate: checks -->``: the system check ids and what each reports;
- ``<!-- generate: reasons -->``: the dead-letter reason codes (`Reason`), each with its docstring;
- ``<!-- generate: commands -->``: every management command with its options, from its argparse parser;
- ``<!-- generate: exceptions -->``: the exception hierarchy from `broadcaster.exceptions`;
- ``<!-- include: PATH -->``: a file of the repository (CHANGELOG.md), verbatim;
- ``<!-- include-if-present: PATH -->``: the same, or a short note while the file does not exist.

A marker nobody handles, or a reason code without a docstring, fails the build.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import annotated_types
import django
from django.conf import settings as django_settings
from django.core.management import load_command_class
from mkdocs.exceptions import PluginError
from pydantic_core import PydanticUndefined

from broadcaster import checks, exceptions
from broadcaster import settings as broadcaster_settings
from broadcaster.failures import Reason
from broadcaster.settings import BroadcasterSettings

ROOT = Path(__file__).resolve().parent.parent

_MARKER = re.compile(r"^<!-- (generate|include|include-if-present): (\S+) -->$", re.MULTILINE)
_MISSING = (
    "The repository has no `{name}` yet: report vulnerabilities privately to the maintainers, not in a public issue.\n"
)

# Options every Django command has; the reference lists only the command's own.
_DJANGO_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}
_COMMANDS = (
    "consume_signals",
    "relay_outbox",
    "dead_letters",
    "broadcaster_contract",
    "broadcaster_topology",
    "broadcast_backfill",
)


def on_config(config: Any) -> Any:
    """Give the command modules a minimal Django to import into (no database is touched)."""
    if not django_settings.configured:
        django_settings.configure(
            INSTALLED_APPS=["broadcaster"],
            BROADCASTER={"SERVICE_NAME": "docs"},
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        )
    django.setup()
    return config


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each marker with its generated block."""

    def replace(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "include":
            return _include(name)
        if kind == "include-if-present":
            return _include(name) if (ROOT / name).is_file() else _MISSING.format(name=name)
        generator = _GENERATORS.get(name)
        if generator is None:
            raise PluginError(f"{page.file.src_path}: unknown generated block {name!r}")
        return generator()

    return _MARKER.sub(replace, markdown)


def _include(name: str) -> str:
    path = (ROOT / name).resolve()
    if ROOT not in path.parents or not path.is_file():
        raise PluginError(f"cannot include {name!r}: not a file of the repository")
    return path.read_text(encoding="utf-8")


# --- settings ------------------------------------------------------------------------------


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every BROADCASTER setting, in model order."""
    rows = []
    for field in BroadcasterSettings.model_fields.values():
        if field.alias is None:
            raise PluginError("every BroadcasterSettings field needs its upper-case alias")
        kind = _type_name(field.annotation) + _constraints(field.metadata)
        rows.append((field.alias, kind, _default(field), field.description or ""))
    return rows


def _settings_table() -> str:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, kind, default, description in settings_rows():
        lines.append(f"| `{key}` | {_code(kind)} | {default} | {_cell(description)} |")
    env = broadcaster_settings.BROKER_URL_ENV
    return "\n".join(lines) + f"\n\nThe environment variable `{env}`, when set, replaces `BROKER_URL`.\n"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(arg).replace("'", '"') for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"tuple[{_type_name(args[0])}, ...]"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    return str(getattr(annotation, "__name__", annotation))


_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def _constraints(metadata: list[Any]) -> str:
    parts = [
        f"{symbol} {getattr(item, attribute)}"
        for item in metadata
        for cls, attribute, symbol in _BOUNDS
        if isinstance(item, cls)
    ]
    return f", {', '.join(parts)}" if parts else ""


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return _code(repr(field.default_factory()))
    if field.default is PydanticUndefined:
        return "(required)"
    if field.default is None:
        return "unset"
    value = field.default
    if isinstance(value, tuple):
        value = [_number(item) for item in value]
    value = _number(value)
    return _code(str(value) if isinstance(value, str) else repr(value))


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


# --- system checks -------------------------------------------------------------------------


def check_ids() -> list[str]:
    """Every system check id, sorted: the rules of `broadcaster.checks.RULES`.

    An id written in checks.py that is not a rule there (a message without its hint and
    meaning) fails the build.
    """
    written = set(re.findall(r'"(broadcaster\.[CEW]\d{3})"', inspect.getsource(checks)))
    if stray := sorted(written - set(checks.RULES)):
        raise PluginError(f"system check ids in broadcaster/checks.py without a Rule: {stray}")
    return sorted(checks.RULES)


def _checks_table() -> str:
    lines = ["| id | reported when | hint |", "| --- | --- | --- |"]
    for check_id in check_ids():
        rule = checks.RULES[check_id]
        lines.append(f"| `{check_id}` | {_cell(rule.reported_when)} | {_cell(rule.hint)} |")
    return "\n".join(lines) + "\n"


# --- dead-letter reasons -------------------------------------------------------------------


def reason_meanings() -> dict[str, str]:
    """Every dead-letter reason code (`broadcaster.failures.Reason`) with its member's docstring."""
    [cls] = ast.parse(textwrap.dedent(inspect.getsource(Reason))).body
    assert isinstance(cls, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, following in zip(cls.body, cls.body[1:], strict=False):
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            text = inspect.cleandoc(str(following.value.value))
            docs[node.targets[0].id] = " ".join(text.split()).replace("``", "`")
    undocumented = [member.name for member in Reason if member.name not in docs]
    if undocumented:
        raise PluginError(f"dead-letter reasons without a docstring in broadcaster.failures: {undocumented}")
    return {member.value: docs[member.name] for member in Reason}


def _reasons_table() -> str:
    lines = ["| `x-broadcaster-reason` | meaning |", "| --- | --- |"]
    lines += [f"| `{code}` | {_cell(meaning)} |" for code, meaning in reason_meanings().items()]
    return "\n".join(lines) + "\n"


# --- management commands -------------------------------------------------------------------


def _commands() -> str:
    sections = []
    for name in _COMMANDS:
        command = load_command_class("broadcaster", name)
        parser = command.create_parser("manage.py", name)
        sections.append(f"### `{name}`\n\n{command.help}\n\n{_options(parser, name)}")
    return "\n".join(sections)


def _options(parser: argparse.ArgumentParser, command: str) -> str:
    rows: list[str] = []
    subcommands: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for sub, subparser in action.choices.items():
                subcommands.append(f"**`{command} {sub}`**: {helps.get(sub) or ''}\n\n{_options(subparser, command)}")
            continue
        if action.dest in _DJANGO_OPTIONS or not action.option_strings:
            continue
        flag = ", ".join(action.option_strings)
        value = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
        required = " (required)" if action.required else ""
        rows.append(f"| `{flag}{value}` | {_cell(action.help or '')}{required} |")
    table = "| option | meaning |\n| --- | --- |\n" + "\n".join(rows) + "\n" if rows else "No options of its own.\n"
    if subcommands:
        return "\n".join(subcommands)
    return table


def _exceptions() -> str:
    doc = exceptions.__doc__ or ""
    tree = doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else doc
    return f"```text\n{tree}\n```\n"


_GENERATORS: dict[str, Callable[[], str]] = {
    "settings": _settings_table,
    "checks": _checks_table,
    "reasons": _reasons_table,
    "commands": _commands,
    "exceptions": _exceptions,
}
