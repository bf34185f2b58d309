"""The payload's wire form: a schema's fields by alias, and schemas whose form cannot travel.

A payload goes on the wire as ``schema.model_dump_json(by_alias=True)`` and is read back
with ``schema.model_validate_json(body)``, which reads aliases: one form, the one
pydantic's JSON Schema (``by_alias=True``) and the AsyncAPI document describe. Receivers
still get the fields by their Python names.

`check_schema()` refuses, at `broadcast()`/`subscribe()` time, a schema whose own
serialized form its validation rejects for a reason visible on the class itself: a
field sent under a key validation does not read, a required field excluded from the
output, a default its own type rejects (``v: int = None`` sends ``null``), a computed
field sent to a model that forbids unknown keys, and in a broadcast's schema a secret
type (sent as asterisks) without a serializer of its own. A serializer that changes a value's
form is visible only through the JSON Schemas (when it declares its return type):
`serialization_problems()` compares the schema's serialization-mode schema with its own
validation-mode one, and the system check ``broadcaster.E010`` reports what it finds (a
system check, not an exception, because it rests on the schema comparison, which may
be over-strict, and can be silenced).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    PlainSerializer,
    Secret,
    SecretBytes,
    SecretStr,
    TypeAdapter,
    ValidationError,
    WrapSerializer,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from broadcaster.exceptions import RegistrationError

__all__ = [
    "check_schema",
    "dump",
    "field_value",
    "may_send_non_finite",
    "non_finite",
    "schema_major",
    "serialization_problems",
]

_SECRETS = (SecretStr, SecretBytes, Secret)
_SERIALIZERS = (PlainSerializer, WrapSerializer)
_CONTAINERS = (dict, list, tuple, set, frozenset)  # without arguments, they hold anything


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


def check_schema(schema: type[BaseModel], *, sends: bool = True) -> None:
    """Raise RegistrationError if `schema` sends a form its own validation rejects.

    With `sends` (a broadcast's schema), also if it would send a secret's asterisks; a
    subscriber may well read a plain string into a secret type.
    """
    for model in _models(schema):
        for name, info in model.model_fields.items():
            problem = _field_problem(model, name, info, sends=sends)
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


def _field_problem(model: type[BaseModel], name: str, info: FieldInfo, *, sends: bool) -> str | None:
    if info.exclude is True:
        if info.is_required():
            return "exclude=True on a required field: it is never sent, so every message is rejected"
        return None
    if sends and _holds_secret(info.annotation) and not _serialized_by_hand(model, name, info):
        return (
            "a secret type is sent as '**********', never its value, so receivers would get the "
            "asterisks; send the value with a field_serializer that returns get_secret_value(), "
            "or leave the field out of the event"
        )
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


def _leaves(annotation: object) -> Iterator[object]:
    """`annotation`, and for a generic its origin, its arguments and their leaves (Annotated's markers too)."""
    yield annotation
    origin = typing.get_origin(annotation)
    if origin is not None:
        yield origin
    if origin is not None or isinstance(annotation, types.UnionType):
        for argument in typing.get_args(annotation):
            yield from _leaves(argument)


def _holds_secret(annotation: object) -> bool:
    return any(isinstance(leaf, type) and issubclass(leaf, _SECRETS) for leaf in _leaves(annotation))


def _may_hold_float(annotation: object) -> bool:
    if annotation is Any or annotation is object or annotation in _CONTAINERS:  # anything may be inside
        return True
    if isinstance(annotation, type) and issubclass(annotation, float):
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return False
    return any(_may_hold_float(argument) for argument in typing.get_args(annotation))


def _serialized_by_hand(model: type[BaseModel], name: str, info: FieldInfo) -> bool:
    """Whether a serializer of the user's writes the field (or the whole model)."""
    decorators = model.__pydantic_decorators__
    if decorators.model_serializers:
        return True
    if any(name in d.info.fields or "*" in d.info.fields for d in decorators.field_serializers.values()):
        return True
    markers = [*info.metadata, *_leaves(info.annotation)]
    return any(isinstance(marker, _SERIALIZERS) for marker in markers)


def may_send_non_finite(schema: type[BaseModel]) -> bool:
    """Whether a payload of `schema` may hold a float that JSON cannot carry (sent as null).

    False when no model of the schema has a field that may hold a float, or each that
    does sets ``ser_json_inf_nan`` to a form of its own: then `non_finite()` is not needed.
    """
    for model in _models(schema):
        if model.model_config.get("ser_json_inf_nan", "null") != "null":
            continue
        if any(_may_hold_float(info.annotation) for info in model.model_fields.values()):
            return True
    return False


def non_finite(value: object, path: str = "") -> str | None:
    """The path of the first infinite or NaN float in a validated payload, else None.

    pydantic sends such a float as ``null``: the receiver would get None for a number, or
    reject the event, so the producer refuses it instead.
    """
    items: Any
    if isinstance(value, float):
        return None if math.isfinite(value) else path or "(payload)"
    if isinstance(value, BaseModel):
        items = [*value.__dict__.items(), *(value.__pydantic_extra__ or {}).items()]
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple | set | frozenset):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


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
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if typing.get_origin(annotation) is not None or isinstance(annotation, types.UnionType):
        for argument in typing.get_args(annotation):
            yield from _nested(argument)
