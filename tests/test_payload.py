"""The payload's wire form: by alias in the producer, the consumer, the test kit and the schemas.

Every example schema and a generated set of schemas using aliases, exclusions and
serializers go producer -> wire -> consumer, in process and over the real RabbitMQ; a
schema whose serialized form its own validation rejects is refused when registered.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, NewType

import pytest
from django.dispatch import Signal
from hypothesis import given
from hypothesis import strategies as st
from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    Secret,
    SecretStr,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    computed_field,
    create_model,
    field_serializer,
    model_serializer,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

import broadcaster
from broadcaster import payload, registry
from broadcaster.dispatch import Action
from broadcaster.testing import InMemoryBroker, deliver
from schemas import OrderPlaced, OrderSaved, StockLow, StockReserved
from tests.conftest import wait_for


class Lines:
    """An ORM-like object: `from_attributes` reads it."""

    def __init__(self, sku: str, quantity: int) -> None:
        self.sku, self.quantity = sku, quantity


class Row:
    id = 7
    status = "paid"
    customer_email = "a@example.com"
    total = Decimal("10.50")


EXAMPLES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (
        OrderPlaced,
        {
            "order_id": 1,
            "customer_email": "a@example.com",
            "lines": [Lines("SKU-1", 2)],
            "total": Decimal("19.99"),
            "placed_at": datetime(2026, 1, 2, 3, 4, 5, 600007, tzinfo=UTC),
        },
    ),
    (OrderSaved, {"instance": Row(), "created": True}),
    (StockReserved, {"order_id": 1, "sku": "A", "quantity": 3, "remaining": 0}),
    (StockLow, {"sku": "A", "remaining": 1, "threshold": 2}),
]


class Buyer(BaseModel):
    """The case of the issue: one alias, no populate_by_name."""

    buyer: str = Field(alias="buyerEmail")


class Address(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    street_name: str
    house_no: int = Field(serialization_alias="houseNo", validation_alias=AliasChoices("houseNo", "number"))


def _upper(value: str) -> str:
    return value.upper()


# Field variants the generated schemas combine: (annotation, field, kwarg name or None for the
# field's own name, value sent, field value after the trip).
VARIANTS: dict[str, tuple[Any, Any, str | None, Any, Any]] = {
    "alias": (str, Field(alias="buyerEmail"), "buyerEmail", "b@example.com", "b@example.com"),
    "both-aliases": (int, Field(validation_alias="qty", serialization_alias="qty"), "qty", 3, 3),
    "alias-choices": (
        int,
        Field(validation_alias=AliasChoices("count", "n"), serialization_alias="count"),
        "n",
        4,
        4,
    ),
    "alias-path": (str, Field(validation_alias=AliasPath("ref"), serialization_alias="ref"), "ref", "r", "r"),
    "excluded-optional": (str, Field(default="kept here", exclude=True), "secret", "not sent", "kept here"),
    "optional-none": (int | None, Field(default=None), "absent", None, None),
    "nested-aliases": (Address, Field(alias="addr"), "addr", {"streetName": "Main", "number": 5}, None),
    "serializer": (
        Annotated[str, PlainSerializer(_upper, return_type=str)],
        Field(),
        None,
        "hey",
        "HEY",
    ),
    "decimal-as-float": (
        Annotated[Decimal, PlainSerializer(float, return_type=float)],
        Field(),
        None,
        Decimal("1.5"),
        Decimal("1.5"),
    ),
}


def generated_schemas() -> list[tuple[str, type[BaseModel], dict[str, Any], dict[str, Any]]]:
    """Every pair of variants, as a model, with the kwargs to send and the fields to expect."""
    made = []
    for names in itertools.combinations(sorted(VARIANTS), 2):
        fields: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        expected: dict[str, Any] = {}
        for index, name in enumerate(names):
            annotation, info, kwarg, value, after = VARIANTS[name]
            field_name = f"f{index}_{name.replace('-', '_')}"
            fields[field_name] = (annotation, info)
            if name != "optional-none":
                kwargs[kwarg or field_name] = value
            expected[field_name] = Address(street_name="Main", house_no=5) if name == "nested-aliases" else after
        made.append(("+".join(names), create_model("Generated", **fields), kwargs, expected))
    return made


GENERATED = generated_schemas()


@pytest.mark.parametrize(("schema", "kwargs"), EXAMPLES, ids=[schema.__name__ for schema, _ in EXAMPLES])
def test_every_example_schema_goes_through_the_test_kit(schema: type[BaseModel], kwargs: dict[str, Any]) -> None:
    received = _wire(schema, "examples.event")
    sent = schema.model_validate(kwargs, from_attributes=True)

    with InMemoryBroker() as broker:
        received.signal.send(sender=None, **kwargs)

    assert [o.action for o in broker.outcomes] == [Action.ACK]
    assert received.fields == [dict(sent)]
    assert set(broker[0].payload) == set(schema.model_json_schema()["properties"])


@pytest.mark.parametrize(("schema", "kwargs", "expected"), [g[1:] for g in GENERATED], ids=[g[0] for g in GENERATED])
def test_generated_schemas_with_aliases_exclusions_and_serializers_go_through(
    schema: type[BaseModel], kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    received = _wire(schema, "generated.event")

    with InMemoryBroker() as broker:
        received.signal.send(sender=None, **kwargs)

    assert [o.action for o in broker.outcomes] == [Action.ACK], broker.outcomes
    assert received.fields == [expected]
    # The body carries the keys the exported JSON Schema names: the aliases.
    described = schema.model_json_schema(mode="serialization")["properties"]
    assert set(broker[0].payload) <= set(described)


def test_deliver_sends_a_schema_instance_by_alias_as_the_producer_does() -> None:
    received = _wire(Buyer, "shop.bought")

    deliver("shop.bought", Buyer(buyerEmail="c@example.com"))

    assert received.fields == [{"buyer": "c@example.com"}]


def test_the_producer_writes_aliases_and_the_json_schema_names_them() -> None:
    received = _wire(Buyer, "shop.bought")

    with InMemoryBroker() as broker:
        received.signal.send(sender=None, buyerEmail="d@example.com")

    assert broker[0].payload == {"buyerEmail": "d@example.com"}
    assert received.fields == [{"buyer": "d@example.com"}]
    assert list(Buyer.model_json_schema()["properties"]) == ["buyerEmail"]


@pytest.mark.usefixtures("broker")
@pytest.mark.parametrize(
    ("schema", "kwargs", "expected"),
    [(Buyer, {"buyerEmail": "e@example.com"}, {"buyer": "e@example.com"}), *(g[1:] for g in GENERATED[::6])],
)
def test_aliased_schemas_cross_the_real_broker(
    daemon: Any, schema: type[BaseModel], kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    received = _wire(schema, "wire.aliased")
    consumer = daemon()

    received.signal.send(sender=None, **kwargs)
    broadcaster.flush(10)

    wait_for(lambda: received.fields, "the receiver")
    assert received.fields == [expected]
    wait_for(lambda: consumer.counts["acked"] == 1, "the ack")


# --- schemas whose serialized form their own validation rejects ------------------------


class SentUnderAnotherName(BaseModel):
    total: int = Field(serialization_alias="amount")


class AliasNotReadByName(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)

    order_id: int = Field(serialization_alias="order_id")


class ExcludedRequired(BaseModel):
    token: str = Field(exclude=True)


class NoneForInt(BaseModel):
    v: int = None  # type: ignore[assignment]


class Inner(BaseModel):
    code: str = Field(serialization_alias="Code")


class Outer(BaseModel):
    items: list[Inner]


class Forbidding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return self.a * 2


@pytest.mark.parametrize(
    ("schema", "kwargs", "message"),
    [
        (SentUnderAnotherName, {"total": 1}, r"SentUnderAnotherName: field 'total': it is sent as 'amount'"),
        (AliasNotReadByName, {"orderId": 1}, r"field 'order_id': it is sent as 'order_id' .* read only as 'orderId'"),
        (ExcludedRequired, {"token": "t"}, r"field 'token': exclude=True on a required field"),
        (NoneForInt, {}, r"field 'v': its default is sent as null but the field rejects it"),
        (Outer, {"items": [{"code": "x"}]}, r"Outer \(in Inner\): field 'code': it is sent as 'Code'"),
        (Forbidding, {"a": 1}, r"computed field\(s\) double are sent, but extra='forbid' rejects them"),
    ],
)
def test_a_schema_its_own_validation_rejects_is_refused_when_registered(
    schema: type[BaseModel], kwargs: dict[str, Any], message: str
) -> None:
    # What registration prevents: the same schema on both ends, and the message rejected.
    sent = payload.dump(schema.model_validate(kwargs))
    with pytest.raises(ValueError, match="validation error"):
        schema.model_validate_json(sent)

    with pytest.raises(broadcaster.RegistrationError, match=message):
        broadcaster.broadcast(Signal(), event="bad.schema", schema=schema)
    with pytest.raises(broadcaster.RegistrationError, match=message):
        broadcaster.subscribe("bad.schema", schema=schema)


class Fine(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    total: int = Field(serialization_alias="amount", validation_alias="amount")
    note: str | None = None
    hidden: str = Field(default="", exclude=True)
    checked: int = Field(default=None, validate_default=False, exclude=True)  # type: ignore[assignment]

    @field_serializer("note")
    def _note(self, value: str | None) -> str | None:
        return value


def test_a_schema_whose_form_travels_is_accepted() -> None:
    broadcaster.broadcast(Signal(), event="fine.schema", schema=Fine)
    broadcaster.subscribe("fine.schema", schema=Fine)

    assert Fine.model_validate_json(payload.dump(Fine(amount=1))) == Fine(amount=1)


class WithSecret(BaseModel):
    user: str
    token: SecretStr


class WithSecretsInside(BaseModel):
    keys: list[Secret[int]] | None = None


class SecretSentOnPurpose(BaseModel):
    token: SecretStr

    @field_serializer("token")
    def _token(self, value: SecretStr) -> str:
        return value.get_secret_value()


class Credentials(TypedDict):
    token: SecretStr


class SecretInATypedDict(BaseModel):
    credentials: Credentials


class SecretUnderAWrapSerializer(BaseModel):
    token: SecretStr

    @model_serializer(mode="wrap")
    def _all(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {**handler(self), "checked": True}


class Vault(BaseModel):
    token: SecretStr


class SecretLeftOut(BaseModel):
    n: int
    vault: Vault | None = Field(default=None, exclude=True)


class Masked(BaseModel):
    card: str  # a plain string that happens to look like a secret


@pytest.mark.parametrize(
    ("schema", "kwargs", "where"),
    [
        (WithSecret, {"user": "u", "token": "s3cret"}, "token"),
        (WithSecretsInside, {"keys": [1, 2]}, "keys.0"),
        (SecretInATypedDict, {"credentials": {"token": "s3cret"}}, "credentials.token"),
        (SecretUnderAWrapSerializer, {"token": "s3cret"}, "token"),
    ],
)
def test_send_refuses_a_payload_that_would_carry_a_secrets_asterisks(
    schema: type[BaseModel], kwargs: dict[str, Any], where: str
) -> None:
    received = _wire(schema, "secret.schema")

    with InMemoryBroker() as broker, pytest.raises(broadcaster.InvalidPayload, match=rf"{where}: a secret type"):
        received.signal.send(sender=None, **kwargs)

    assert len(broker) == 0  # nothing sent, rather than '**********' for the value


@pytest.mark.parametrize(
    ("schema", "kwargs"),
    [
        (SecretSentOnPurpose, {"token": "s3cret"}),
        (SecretLeftOut, {"n": 1, "vault": {"token": "s3cret"}}),
        (Masked, {"card": "**********"}),
    ],
)
def test_a_secret_sent_on_purpose_or_left_out_and_look_alike_strings_are_sent(
    schema: type[BaseModel], kwargs: dict[str, Any]
) -> None:
    received = _wire(schema, "secret.sent")

    with InMemoryBroker() as broker:
        received.signal.send(sender=None, **kwargs)

    assert [o.action for o in broker.outcomes] == [Action.ACK]
    assert len(received.fields) == 1


def test_a_subscriber_may_read_a_plain_string_into_a_secret() -> None:
    broadcaster.broadcast(Signal(), event="secret.read", schema=SecretSentOnPurpose)
    broadcaster.subscribe("secret.read", schema=WithSecret)  # registration refuses neither


class Price(BaseModel):
    amount: float


class Basket(BaseModel):
    name: str
    prices: list[Price]
    extra: dict[str, Any] = {}


@dataclass
class Reading:
    value: float


class Sensor(BaseModel):
    reading: Reading
    level: NewType("Level", float)  # type: ignore[valid-type]


class Shown(BaseModel):
    amount: float
    hidden: float = Field(default=0.0, exclude=True)

    @field_serializer("amount")
    def _amount(self, value: float) -> str:
        return str(value)


class SentAsConstants(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")

    amount: float


@pytest.mark.parametrize(
    ("schema", "kwargs", "where"),
    [
        (Basket, {"name": "b", "prices": [{"amount": 1.0}, {"amount": float("inf")}]}, "prices.1.amount"),
        (Basket, {"name": "b", "prices": [], "extra": {"rates": [0.5, float("nan")]}}, "extra.rates.1"),
        (Basket, {"name": "b", "prices": [{"amount": float("-inf")}]}, "prices.0.amount"),
        (Sensor, {"reading": Reading(float("nan")), "level": 1.0}, "reading.value"),
        (Sensor, {"reading": Reading(1.0), "level": float("inf")}, "level"),
    ],
)
def test_send_refuses_a_float_json_cannot_carry(schema: type[BaseModel], kwargs: dict[str, Any], where: str) -> None:
    received = _wire(schema, "basket.priced")

    with InMemoryBroker() as broker, pytest.raises(broadcaster.InvalidPayload, match=rf"{where}: an infinite or NaN"):
        received.signal.send(sender=None, **kwargs)

    assert len(broker) == 0  # nothing was sent, rather than null for a number
    assert received.fields == []


@pytest.mark.parametrize(
    ("schema", "kwargs"),
    [
        (Shown, {"amount": float("inf"), "hidden": float("nan")}),  # its serializer writes "inf"; one is not sent
        (SentAsConstants, {"amount": float("inf")}),  # the schema says how to send it
        (Basket, {"name": "null", "prices": [{"amount": 2.5}], "extra": {"none": None}}),
    ],
)
def test_floats_a_serializer_writes_or_leaves_out_are_sent(schema: type[BaseModel], kwargs: dict[str, Any]) -> None:
    received = _wire(schema, "basket.priced")

    with InMemoryBroker() as broker:
        received.signal.send(sender=None, **kwargs)

    assert len(broker) == 1


class Reading2(BaseModel):
    pass


class ReadingWithValue(Reading2):
    value: float


class AnyReading(BaseModel):
    reading: SerializeAsAny[Reading2]


def test_a_subclass_sent_in_place_of_its_base_is_looked_at_too() -> None:
    received = _wire(AnyReading, "reading.sent")

    with InMemoryBroker(), pytest.raises(broadcaster.InvalidPayload, match=r"reading.value: an infinite or NaN"):
        received.signal.send(sender=None, reading=ReadingWithValue(value=float("nan")))


def test_only_schemas_that_may_carry_such_values_have_their_bodies_looked_at() -> None:
    looked_at = [Basket, Sensor, WithSecret, WithSecretsInside, SecretInATypedDict, SecretLeftOut, AnyReading]
    assert all(payload.may_drop_values(schema) for schema in looked_at)
    # Decimal, int, str, datetime, a float its serializer writes as text: nothing JSON drops.
    assert not any(payload.may_drop_values(schema) for schema in (OrderPlaced, OrderSaved, StockLow, Masked, Shown))


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_every_float_arrives_as_sent_or_is_refused_at_send(amount: float, rate: float) -> None:
    kwargs = {"name": "b", "prices": [{"amount": amount}], "extra": {"rate": rate}}
    with registry.isolated(), InMemoryBroker() as broker:
        received = _wire(Basket, "basket.priced")
        try:
            received.signal.send(sender=None, **kwargs)
        except broadcaster.InvalidPayload:
            assert not (math.isfinite(amount) and math.isfinite(rate))
            assert len(broker) == 0
            return

    assert math.isfinite(amount)
    assert math.isfinite(rate)
    assert [o.action for o in broker.outcomes] == [Action.ACK]
    assert received.fields[0]["prices"][0].amount == amount
    assert received.fields[0]["extra"] == {"rate": rate}


# --- helpers ---------------------------------------------------------------------------


class _Wired:
    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.fields: list[dict[str, Any]] = []

    def __call__(self, sender: object, signal: Signal, envelope: object, **fields: Any) -> None:
        self.fields.append(fields)


def _wire(schema: type[BaseModel], event: str) -> _Wired:
    """Broadcast a fresh signal as `event` and subscribe to it here; the receiver records the fields."""
    wired = _Wired(Signal())
    broadcaster.broadcast(wired.signal, event=event, schema=schema)
    broadcaster.subscribe(event, schema=schema).connect(wired, weak=False)
    return wired
