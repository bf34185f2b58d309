"""MAX_JSON_DEPTH: nesting measured by scanning the bytes, before and apart from any parser."""

from __future__ import annotations

import json
from typing import Any

import pika
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

import broadcaster
from broadcaster import jsondepth
from broadcaster.dispatch import Action, dispatch
from broadcaster.envelope import Envelope, properties_for
from broadcaster.exceptions import RejectedMessage
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings

# Text that looks like JSON structure, so that strings full of brackets, quotes and
# backslashes are drawn as often as plain ones.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\:,ab é\n\t\x00\u2028'), max_size=12) | st.text(max_size=12)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tricky_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


def reference_depth(value: object) -> int:
    """Nesting of a parsed value: what the scan of its text must find."""
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


def nest(levels: int, shape: str) -> object:
    """`levels` of arrays, objects, or both in turn, around a string full of brackets."""
    value: object = ']]}}[{\\"'
    for level in range(levels):
        as_list = shape == "[" or (shape == "mixed" and level % 2)
        value = [value] if as_list else {"k[": value}
    return value


@given(json_values, st.booleans(), st.sampled_from([None, 2]))
def test_the_scan_finds_the_depth_of_any_json_text(value: Any, ascii_only: bool, indent: int | None) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert jsondepth.depth(text.encode("utf-8", "surrogatepass")) == reference_depth(value)
    assert jsondepth.depth(text) == reference_depth(value)


@given(json_values, st.integers(min_value=1, max_value=8))
def test_check_refuses_exactly_the_texts_deeper_than_the_limit(value: Any, limit: int) -> None:
    body = json.dumps(value).encode()
    if reference_depth(value) > limit:
        with pytest.raises(RejectedMessage) as raised:
            jsondepth.check(body, limit)
        assert raised.value.reason == "too-deep"
        assert f"MAX_JSON_DEPTH ({limit})" in raised.value.detail
    else:
        jsondepth.check(body, limit)
    assert jsondepth.too_deep(body, limit) is (reference_depth(value) > limit)


@pytest.mark.parametrize("shape", ["[", "{", "mixed"])
@pytest.mark.parametrize("levels", [0, 1, 63, 64, 65, 1_000, 100_000])
def test_the_bound_is_the_setting_not_the_interpreter(shape: str, levels: int) -> None:
    body = json.dumps(nest(levels, shape)).encode() if levels < 500 else _flat_nest(levels, shape)
    assert jsondepth.depth(body) == levels
    assert jsondepth.too_deep(body) is (levels > 64)  # the default MAX_JSON_DEPTH


def _flat_nest(levels: int, shape: str) -> bytes:
    # json.dumps itself recurses; deep texts are written out directly.
    openers = {"[": "[" * levels, "{": '{"k":' * levels, "mixed": '[{"k":' * (levels // 2)}[shape]
    closers = {"[": "]" * levels, "{": "}" * levels, "mixed": "}]" * (levels // 2)}[shape]
    return f"{openers}1{closers}".encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'"[[[["', 0),
        (b'["\\"[[", [1]]', 2),  # an escaped quote does not end the string
        (b'["\\\\", [1]]', 2),  # an escaped backslash does not escape the closing quote
        (b'{"a": "unterminated [[[[', 1),  # the parser refuses it; the scan stays bounded
        (b"]]]][[", 0),
        (b"", 0),
    ],
)
def test_strings_and_broken_texts(text: bytes, expected: int) -> None:
    assert jsondepth.depth(text) == expected


def test_the_setting_is_read_at_each_check(settings: Any) -> None:
    body = json.dumps(nest(5, "[")).encode()
    settings.BROADCASTER = {**settings.BROADCASTER, "MAX_JSON_DEPTH": 4}
    assert jsondepth.too_deep(body)
    settings.BROADCASTER = {**settings.BROADCASTER, "MAX_JSON_DEPTH": 5}
    assert not jsondepth.too_deep(body)


@pytest.mark.parametrize("value", [0, 201, "deep"])
def test_an_unusable_setting_names_itself(value: object) -> None:
    with pytest.raises(ValueError, match="MAX_JSON_DEPTH"):
        BroadcasterSettings.model_validate({"SERVICE_NAME": "x", "MAX_JSON_DEPTH": value})


def test_a_payload_at_the_limit_is_delivered_one_level_more_is_dead_lettered(settings: Any) -> None:
    class Tree(BaseModel):
        node: Any

    calls: list[object] = []
    broadcaster.subscribe("depth.tree", schema=Tree).connect(lambda **kw: calls.append(kw["node"]), weak=False)
    config = BroadcasterSettings.model_validate({"SERVICE_NAME": "depth", "MAX_JSON_DEPTH": 3})
    props: pika.BasicProperties = properties_for(Envelope.new(source="depth", type="depth.tree"))
    at_limit = dispatch(props, b'{"node": [[1]]}', settings=config, subscriptions=subscriptions())
    beyond = dispatch(props, b'{"node": [[[1]]]}', settings=config, subscriptions=subscriptions())
    assert at_limit.action is Action.ACK
    assert (beyond.action, beyond.reason) == (Action.DEAD_LETTER, "too-deep")
    assert "4 levels deep, more than MAX_JSON_DEPTH (3)" in beyond.detail
    assert calls == [[[1]]]


@pytest.mark.parametrize("levels", [65, 100_000])
def test_the_dead_letter_tools_read_a_too_deep_structured_event_as_one_without_attributes(levels: int) -> None:
    from broadcaster import deadletters

    props = pika.BasicProperties(content_type="application/cloudevents+json")
    body = b'{"id": "x", "type": "t", "data": ' + _flat_nest(levels - 1, "[") + b"}"
    assert deadletters._structured(props, body) == {}  # neither parsed nor a RecursionError
    assert deadletters._structured(props, b'{"id": "x", "data": [[1]]}')["id"] == "x"
