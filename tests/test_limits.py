"""MAX_MESSAGE_BYTES on both sides, to the byte, and the bounded JSON nesting depth.

The publish side raises MessageTooLarge in the caller of send() and publishes nothing;
the consume side dead-letters with reason ``too-large`` before anything parses the body.
test_registry and test_dispatch hold one case of each; these pin the boundary.
"""

from __future__ import annotations

import json
from typing import Any

import pika
import pytest
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.envelope import Envelope, properties_for
from broadcaster.exceptions import MessageTooLarge
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings
from broadcaster.testing import capture_broadcasts

LIMIT = 1024


class Note(BaseModel):
    text: str


def _note_of_size(size: int) -> dict[str, str]:
    """Kwargs whose payload JSON is exactly `size` bytes."""
    overhead = len(json.dumps({"text": ""}, separators=(",", ":")))
    return {"text": "x" * (size - overhead)}


@pytest.fixture
def limited(settings: Any) -> BroadcasterSettings:
    settings.BROADCASTER = {**settings.BROADCASTER, "MAX_MESSAGE_BYTES": LIMIT}
    return BroadcasterSettings.model_validate(settings.BROADCASTER)


@pytest.fixture
def received() -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    broadcaster.subscribe("limits.note", schema=Note).connect(lambda **kw: calls.append(kw), weak=False)
    return calls


def _dispatch(body: bytes, config: BroadcasterSettings, content_type: str = "application/json") -> Outcome:
    props = properties_for(Envelope.new(source="limits", type="limits.note"))
    props.content_type = content_type
    return dispatch(props, body, settings=config, subscriptions=subscriptions())


def test_a_payload_of_exactly_the_limit_is_published_one_byte_more_raises_in_the_caller(limited: Any) -> None:
    noted = Signal()
    broadcaster.broadcast(noted, event="limits.note", schema=Note)
    with capture_broadcasts() as captured:
        noted.send(sender=None, **_note_of_size(LIMIT))
        with pytest.raises(MessageTooLarge) as caught:
            noted.send(sender=None, **_note_of_size(LIMIT + 1))
    [published] = captured
    assert len(published.body) == LIMIT
    assert (caught.value.event, caught.value.size, caught.value.limit) == ("limits.note", LIMIT + 1, LIMIT)
    assert (
        str(caught.value) == f"event 'limits.note': payload is {LIMIT + 1} bytes, more than MAX_MESSAGE_BYTES ({LIMIT})"
    )


def test_a_body_of_exactly_the_limit_is_consumed_one_byte_more_is_dead_lettered(
    limited: BroadcasterSettings, received: list[dict[str, Any]]
) -> None:
    at_limit = json.dumps(_note_of_size(LIMIT), separators=(",", ":")).encode()
    assert _dispatch(at_limit, limited).action is Action.ACK
    outcome = _dispatch(at_limit + b" ", limited)  # still valid JSON: only the size is wrong
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "too-large")
    assert outcome.detail == f"{LIMIT + 1} bytes, more than MAX_MESSAGE_BYTES ({LIMIT})"
    assert len(received) == 1


@pytest.mark.parametrize("content_type", ["application/cloudevents+json", "application/x-python-serialize", "bogus"])
def test_the_size_limit_comes_before_any_parsing(
    limited: BroadcasterSettings, received: list[dict[str, Any]], content_type: str
) -> None:
    outcome = _dispatch(b"\x80" * (LIMIT + 1), limited, content_type)
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "too-large")
    assert received == []


def test_the_limit_is_the_body_size_in_bytes_not_characters(
    limited: BroadcasterSettings, received: list[dict[str, Any]]
) -> None:
    body = json.dumps({"text": "é" * 600}, ensure_ascii=False).encode()  # 600 characters, 1200+ bytes
    assert (_dispatch(body, limited).reason, len(received)) == ("too-large", 0)


@pytest.mark.parametrize("depth", [2_000, 50_000])
def test_deep_nesting_is_dead_lettered_at_any_size_limit(received: list[dict[str, Any]], depth: int) -> None:
    roomy = BroadcasterSettings.model_validate({"SERVICE_NAME": "limits", "MAX_MESSAGE_BYTES": 10_000_000})
    for body in (
        b'{"text": "a", "extra": ' + b"[" * depth + b"]" * depth + b"}",
        b'{"text": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
    ):
        outcome = _dispatch(body, roomy)
        assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "too-deep"), outcome
    assert received == []


def test_properties_are_not_counted_so_headers_cannot_hide_a_large_body(
    limited: BroadcasterSettings, received: list[dict[str, Any]]
) -> None:
    props: pika.BasicProperties = properties_for(Envelope.new(source="limits", type="limits.note"))
    props.headers["x-padding"] = "p" * 10_000
    outcome = dispatch(props, b'{"text": "small"}', settings=limited, subscriptions=subscriptions())
    assert outcome.action is Action.ACK  # headers are bounded by the broker's frame size, not by this limit
