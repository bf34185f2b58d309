"""The payload's wire form: a schema's fields by alias, and schemas whose form cannot travel.

A payload goes on the wire as ``schema.model_dump_json(by_alias=True)`` and is read back
with ``schema.model_validate_json(body)``, which reads aliases: one form, the one
pydantic's JSON Schema (``by_alias=True``) and the AsyncAPI document describe. Receivers
still get the fields by their Python names.

`check_schema()` refuses, at `broadcast()`/`subscribe()` time, a schema whose own
serialized form its validation rejects for a reason visible on the class itself: a
field sent under a key validation does not read, a required field excluded from the
output, a default its own type rejects (``v: int = None`` sends ``null``), a computed
field sent to a model that forbids unknown keys. A serializer that changes a value's
form is visible only through the JSON Schemas (when it declares its return type):
`serialization_problems()` compares the schema's serialization-mode schema with its own
validation-mode one, and the system check ``broadcaster.E010`` reports what it finds (a
system check, not an exception, because it rests on the schema comparison, which may
be over-strict, and can be silenced).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    Secret,
    SecretBytes,
    SecretStr,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from broadcaster.exceptions import RegistrationError

__all__ = [
    "check_schema",
    "dump",
    "field_value",
    "may_drop_values",
    "schema_major",
    "serialization_problems",
    "wire_problem",
]

_SECRETS = (SecretStr, SecretBytes, Secret)
_SERIALIZE_AS_ANY: type = type(SerializeAsAny())  # type: ignore[type-arg]  # an Annotated alias to type checkers
_MASK = "**********"  # how pydantic writes every secret type
_MASKED = b'"**********"'


def dump(payload: BaseModel) -> bytes:
    """The JSON body of `payload`, as the producer sends it (by alias)."""
    return payload.__pydantic_serializer__.to_json(payload, by_alias=True)


def field_value(payload: object, path: str) -> object:
    """The value at a dotted field path (``"instance.id"``) of a validated payload (or a dict of its fields)."""
    for name in path.split("."):
        payload = payload[name] if isinstance(payload, dict) else getattr(payload, name)
    return payload


def schema_major(version: str) -> int | None:
    """The major number of a ``"major.minor"`` schema version, or None when it starts with none.

    Strict, because a version may come off the wire: ASCII digits only, at most five.
    """
    head = version.split(".", 1)[0]
    return int(head) if head.isascii() and head.isdigit() and len(head) < 6 else None


def check_schema(schema: type[BaseModel]) -> None:
    """Raise RegistrationError if `schema` sends a form its own validation rejects."""
    for model in _models(schema):
        for name, info in model.model_fields.items():
            problem = _field_problem(model, name, info)
            if problem:
                raise RegistrationError(f"{_where(schema, model)}field {name!r}: {problem}")
        if model.model_config.get("extra") == "forbid" and model.model_computed_fields:
            computed = ", ".join(sorted(model.model_computed_fields))
            raise RegistrationError(
                f"{_where(schema, model)}computed field(s) {computed} are sent, but extra='forbid' rejects them "
                "when the same schema reads the message; allow extra keys or drop the computed field"
            )


def serialization_problems(schema: type[BaseModel]) -> list[str]:
    """What `schema` may send that it would itself reject, by its two JSON Schemas."""
    from broadcaster.schemacheck import findings  # noqa: PLC0415 - only checks and tools need it
    from broadcaster.snapshot import json_schema  # noqa: PLC0415 - it imports the registry, which imports us

    sent, accepted = json_schema(schema, "serialization"), json_schema(schema, "validation")
    return [str(finding) for finding in findings(sent, accepted, writer_is_new=True)]


def _where(schema: type[BaseModel], model: type[BaseModel]) -> str:
    inner = "" if model is schema else f" (in {model.__qualname__})"
    return f"schema {schema.__qualname__}{inner}: "


def _field_problem(model: type[BaseModel], name: str, info: FieldInfo) -> str | None:
    if info.exclude is True:
        if info.is_required():
            return "exclude=True on a required field: it is never sent, so every message is rejected"
        return None
    key = _sent_key(name, info)
    if key not in _read_keys(model, name, info):
        return (
            f"it is sent as {key!r} (serialization by alias) but read only as "
            f"{', '.join(repr(k) for k in sorted(_read_keys(model, name, info))) or 'nothing'}; "
            "give it one alias, or set populate_by_name=True if it is sent by its name"
        )
    return _default_problem(info)


def _sent_key(name: str, info: FieldInfo) -> str:
    return info.serialization_alias or info.alias or name


def _read_keys(model: type[BaseModel], name: str, info: FieldInfo) -> set[str]:
    config = model.model_config
    by_alias = config.get("validate_by_alias", True)
    by_name = bool(config.get("validate_by_name") or config.get("populate_by_name"))
    keys = {name} if by_name or not by_alias else set()
    if not by_alias:
        return keys
    aliases: list[Any] = [info.validation_alias or info.alias or name]
    if isinstance(info.validation_alias, AliasChoices):
        aliases = list(info.validation_alias.choices)
    for alias in aliases:
        if isinstance(alias, str):
            keys.add(alias)
        elif isinstance(alias, AliasPath) and len(alias.path) == 1 and isinstance(alias.path[0], str):
            keys.add(alias.path[0])
    return keys


def _default_problem(info: FieldInfo) -> str | None:
    """A default that is sent as it is but that the field's own type rejects."""
    if info.default is PydanticUndefined or info.validate_default:
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(info.rebuild_annotation())
        sent = adapter.dump_json(info.default, by_alias=True, warnings=False)
    except Exception:
        return None
    try:
        adapter.validate_json(sent)
    except ValidationError as exc:
        reason = exc.errors(include_url=False)[0]["msg"]
        return (
            f"its default is sent as {sent.decode()} but the field rejects it ({reason}); "
            "make the type optional (`int | None = None`) or the default valid"
        )
    return None


def may_drop_values(schema: type[BaseModel]) -> bool:
    """Whether a body of `schema` may hold a value pydantic's JSON drops (see `wire_problem()`).

    Read once per broadcast, so that other schemas pay nothing on send(): from the
    schema's serialization JSON Schema (a number, a secret's ``"format": "password"``, a
    part that takes anything) and from its annotations (``Secret[int]`` is written there
    as an integer, and ``SerializeAsAny[Base]`` as the base, whatever subclass is sent).
    Yes when the JSON Schema cannot be made.
    """
    from broadcaster.snapshot import json_schema  # noqa: PLC0415 - it imports the registry, which imports us

    try:
        document = json_schema(schema, "serialization")
    except Exception:
        return True
    hidden = any(
        (isinstance(leaf, type) and issubclass(leaf, _SECRETS)) or isinstance(leaf, _SERIALIZE_AS_ANY)
        for model in _models(schema)
        for info in model.model_fields.values()
        for leaf in [*info.metadata, *_leaves(info.annotation)]
    )
    return hidden or _may_drop(document)


_SHAPES = frozenset({"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "not", "properties"})


def _may_drop(node: Any) -> bool:
    if node is True:  # additionalProperties or items: true, anything
        return True
    if not isinstance(node, dict):
        return False
    kind = node.get("type")
    if "number" in (kind if isinstance(kind, list) else [kind]) or node.get("format") == "password":
        return True
    if not node.keys() & _SHAPES:  # {} or only a title, a default...: any value
        return True
    children = [
        *node.get("properties", {}).values(),
        *node.get("patternProperties", {}).values(),
        *node.get("$defs", {}).values(),
        *node.get("prefixItems", []),
        *node.get("anyOf", []),
        *node.get("oneOf", []),
        *node.get("allOf", []),
        *(node[key] for key in ("items", "additionalProperties", "not") if key in node),
    ]
    return any(_may_drop(child) for child in children)


def _leaves(annotation: object) -> Iterator[object]:
    """`annotation`, and for a generic its origin, its arguments and their leaves."""
    yield annotation
    origin = typing.get_origin(annotation)
    if origin is not None:
        yield origin
    if origin is not None or isinstance(annotation, types.UnionType):
        for argument in typing.get_args(annotation):
            yield from _leaves(argument)


def wire_problem(schema: type[BaseModel], payload: BaseModel, body: bytes) -> str | None:
    """What `body`, the JSON just made of `payload`, says in place of a value; None almost always.

    Two of pydantic's JSON forms drop the value: an infinite or NaN float is written as
    ``null`` (unless the schema sets ``ser_json_inf_nan``), and a secret type as
    ``"**********"``. Each leaves its token in the body, so only a body holding one is
    looked at closer, in what pydantic serialized (aliases, serializers and exclusions
    applied, so the path named is the one on the wire).
    """
    if b"null" in body and schema.model_config.get("ser_json_inf_nan", "null") == "null":
        # Python mode: JSON mode has already turned a float under Any into None.
        sent = payload.__pydantic_serializer__.to_python(payload, by_alias=True)
        where = _first(sent, lambda value: isinstance(value, float) and not math.isfinite(value))
        if where is not None:
            return f"{where}: an infinite or NaN float cannot travel in JSON (it would be sent as null)"
    if _MASKED in body and _holds_secret(payload):
        sent = payload.__pydantic_serializer__.to_python(payload, mode="json", by_alias=True)
        where = _first(sent, lambda value: value == _MASK)
        if where is not None:
            return (
                f"{where}: a secret type is sent as {_MASK!r}, never its value; return value.get_secret_value() "
                "from a field_serializer to send it, or leave it out of the event"
            )
    return None


def _first(document: Any, wrong: Callable[[Any], bool]) -> str | None:
    """The dotted path of the first value of a serialized payload for which `wrong` holds."""
    todo: list[tuple[str, Any]] = [("", document)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list | tuple | deque | set | frozenset):
            items = enumerate(value)
        elif wrong(value):
            return path or "(payload)"
        else:
            continue
        todo.extend(reversed([(f"{path}.{key}" if path else str(key), item) for key, item in items]))
    return None


def _holds_secret(payload: object) -> bool:
    """Whether a secret type is among the values of `payload` (models, dataclasses, containers)."""
    todo, seen = [payload], set()
    while todo:
        value = todo.pop()
        if isinstance(value, _SECRETS):
            return True
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, BaseModel):
            todo.extend(value.__dict__.values())
            todo.extend((value.__pydantic_extra__ or {}).values())
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            todo.extend(getattr(value, field.name) for field in dataclasses.fields(value))
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list | tuple | set | frozenset | deque):
            todo.extend(value)
    return False


def _models(schema: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """`schema` and every model nested in its fields, each once."""
    seen: set[type[BaseModel]] = set()
    todo = [schema]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for info in model.model_fields.values():
            todo.extend(_nested(info.annotation))


def _nested(annotation: object) -> Iterator[type[BaseModel]]:
    for leaf in _leaves(annotation):
        if isinstance(leaf, type) and issubclass(leaf, BaseModel):
            yield leaf
