"""dispatch() re-emits a valid event on its local signal and says why anything else is rejected."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, ClassVar

import pika
import pytest
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.envelope import Envelope, properties_for
from broadcaster.exceptions import HopLimitExceeded
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings


class Paid(BaseModel):
    schema_version: ClassVar[str] = "1.3"
    invoice: int
    amount: Decimal


def run(body: bytes | str, properties: pika.BasicProperties | None = None, **envelope: Any) -> Outcome:
    if properties is None:
        properties = properties_for(Envelope.new(source="billing", type="billing.paid", schema_version="1.0"))
        properties.headers.update({f"ce-{k}": str(v) for k, v in envelope.items()})
    raw = body.encode() if isinstance(body, str) else body
    return dispatch(properties, raw, settings=get_settings(), subscriptions=subscriptions(), attempt=1)


@pytest.fixture
def received() -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    local = broadcaster.subscribe("billing.paid", schema=Paid)
    local.connect(lambda **kwargs: calls.append(kwargs), weak=False)
    return calls


def test_valid_event_reaches_receivers_as_typed_kwargs(received: list[dict[str, Any]]) -> None:
    outcome = run('{"invoice": 4, "amount": "12.50", "unknown_new_field": 1}')
    assert outcome.action is Action.ACK
    [call] = received
    assert call["sender"] is Paid
    assert call["invoice"] == 4
    assert call["amount"] == Decimal("12.50")
    assert call["envelope"].source == "billing"
    assert call["envelope"] is outcome.envelope
    assert "unknown_new_field" not in call


def test_sender_can_be_overridden() -> None:
    calls: list[object] = []
    local = broadcaster.subscribe("billing.paid", schema=Paid, signal=Signal(), sender="billing")
    local.connect(lambda sender, **_: calls.append(sender), weak=False)
    assert run('{"invoice": 4, "amount": 1}').action is Action.ACK
    assert calls == ["billing"]


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        ("not json", {}, "not-json"),
        ('{"invoice": "four", "amount": 1}', {}, "schema-violation"),
        ("[]", {}, "schema-violation"),
        ('{"invoice": 1, "amount": 1}', {"type": "billing.refunded"}, "unknown-event"),
        ('{"invoice": 1, "amount": 1}', {"schemaversion": "2.0"}, "unsupported-schema-version"),
        ('{"invoice": 1, "amount": 1}', {"schemaversion": "x.y"}, "unsupported-schema-version"),
        ('{"invoice": 1, "amount": 1}', {"hops": "99"}, "hop-limit"),
        ('{"invoice": 1, "amount": 1, "pad": "' + "x" * 2_000_000 + '"}', {}, "too-large"),
        ("[" * 10_000 + "]" * 10_000, {}, "too-deep"),  # MAX_JSON_DEPTH, checked before parsing
    ],
)
def test_bad_input_is_dead_lettered_with_a_reason_and_never_reaches_receivers(
    received: list[dict[str, Any]], body: str, headers: dict[str, str], reason: str
) -> None:
    outcome = run(body, **headers)
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, reason)
    assert outcome.detail
    assert received == []


def test_missing_schema_version_is_read_as_the_current_one(received: list[dict[str, Any]]) -> None:
    properties = pika.BasicProperties(
        content_type="application/json",
        headers={"ce-specversion": "1.0", "ce-id": "x", "ce-source": "other", "ce-type": "billing.paid"},
    )
    assert run('{"invoice": 1, "amount": 1}', properties).action is Action.ACK
    assert received[0]["envelope"].schema_version is None


def test_structured_mode_is_dispatched(received: list[dict[str, Any]]) -> None:
    document = {
        "specversion": "1.0",
        "id": "s-1",
        "source": "x",
        "type": "billing.paid",
        "data": {"invoice": 2, "amount": 0.1},
    }
    properties = pika.BasicProperties(content_type="application/cloudevents+json")
    assert run(json.dumps(document), properties).action is Action.ACK
    assert received[0]["amount"] == Decimal("0.1")
    assert received[0]["envelope"].id == "s-1"


def test_receiver_exception_asks_for_a_retry() -> None:
    def explode(**_: object) -> None:
        raise ValueError("ledger locked")

    broadcaster.subscribe("billing.paid", schema=Paid).connect(explode, weak=False)
    outcome = run('{"invoice": 1, "amount": 1}')
    assert outcome.action is Action.RETRY
    assert outcome.reason == "receiver-error"
    assert outcome.exception == "builtins.ValueError"
    assert outcome.detail == "ledger locked"


def test_hop_limit_in_a_receiver_is_dead_lettered_at_once() -> None:
    def cycle(**_: object) -> None:
        raise HopLimitExceeded("billing.paid", 9, 8)

    broadcaster.subscribe("billing.paid", schema=Paid).connect(cycle, weak=False)
    outcome = run('{"invoice": 1, "amount": 1}')
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "hop-limit")


class PaidV3(BaseModel):
    """v1 had `cents`; v2 renamed it `amount_cents`; v3 holds a Decimal `amount`."""

    schema_version: ClassVar[str] = "3.0"
    invoice: int
    amount: Decimal


UPCASTERS = {
    1: lambda v1: {"invoice": v1["invoice"], "amount_cents": v1["cents"]},
    2: lambda v2: {"invoice": v2["invoice"], "amount": Decimal(v2["amount_cents"]) / 100},
}


@pytest.fixture
def upcasting() -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    broadcaster.subscribe("billing.paid", schema=PaidV3, upcasters=UPCASTERS).connect(
        lambda **kwargs: calls.append(kwargs), weak=False
    )
    return calls


def test_older_majors_are_upcast_step_by_step(upcasting: list[dict[str, Any]]) -> None:
    assert run('{"invoice": 1, "cents": 250}', schemaversion="1.4").action is Action.ACK
    assert run('{"invoice": 2, "amount_cents": 199}', schemaversion="2.0").action is Action.ACK
    assert run('{"invoice": 3, "amount": "7.5", "added_in_3_1": true}', schemaversion="3.1").action is Action.ACK
    assert [(c["invoice"], c["amount"]) for c in upcasting] == [
        (1, Decimal("2.5")),
        (2, Decimal("1.99")),
        (3, Decimal("7.5")),
    ]
    assert upcasting[0]["envelope"].schema_version == "1.4"  # receivers can tell what was sent


def test_unreadable_versions_are_dead_lettered_never_half_processed(upcasting: list[dict[str, Any]]) -> None:
    newer = run('{"invoice": 1, "amount": 1}', schemaversion="4.0")
    assert (newer.reason, "reads major 3" in newer.detail) == ("unsupported-schema-version", True)
    broken = run('{"invoice": 1}', schemaversion="1.0")  # v1 without `cents`: the upcaster raises
    assert (broken.action, broken.reason) == (Action.DEAD_LETTER, "upcast-failed")
    assert "KeyError" in broken.detail
    assert upcasting == []


def test_a_missing_upcaster_is_named() -> None:
    broadcaster.subscribe("billing.paid", schema=PaidV3, upcasters={2: UPCASTERS[2]})
    outcome = run('{"invoice": 1, "cents": 1}', schemaversion="1.0")
    assert outcome.reason == "unsupported-schema-version"
    assert "no upcaster from major version 1" in outcome.detail


def test_upcasters_must_target_older_majors() -> None:
    with pytest.raises(broadcaster.RegistrationError, match="older major version"):
        broadcaster.subscribe("billing.paid", schema=PaidV3, upcasters={3: UPCASTERS[2]})


def test_an_event_from_an_unexpected_source_is_dead_lettered() -> None:
    calls: list[object] = []
    broadcaster.subscribe("billing.paid", schema=Paid, sources=["billing"]).connect(
        lambda **kw: calls.append(kw), weak=False
    )
    assert run('{"invoice": 1, "amount": 1}').action is Action.ACK  # ce-source "billing"
    forged = run('{"invoice": 2, "amount": 1}', source="intruder")
    assert (forged.action, forged.reason) == (Action.DEAD_LETTER, "unexpected-source")
    assert "accepted only from billing" in forged.detail
    assert len(calls) == 1
