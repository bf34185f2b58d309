"""The exception tree: what is worth retrying apart from what never succeeds."""

from __future__ import annotations

import pika.exceptions
import pytest

import broadcaster
from broadcaster import exceptions
from broadcaster.exceptions import CONNECTION_LOST, BroadcasterError, PermanentError, TransientError

TRANSIENT = {"BrokerUnavailable", "FlushTimeout", "PublishBufferFull", "PublishError"}
ROOTS = {"BroadcasterError", "PermanentError", "TransientError"}


def errors() -> dict[str, type[BroadcasterError]]:
    return {
        name: value
        for name, value in vars(exceptions).items()
        if isinstance(value, type) and issubclass(value, BroadcasterError) and name not in ROOTS
    }


@pytest.mark.parametrize("name", sorted(errors()))
def test_every_error_is_on_exactly_one_branch(name: str) -> None:
    error = errors()[name]
    assert issubclass(error, TransientError) != issubclass(error, PermanentError)
    assert issubclass(error, TransientError) == (name in TRANSIENT)


def test_every_error_is_public_and_drawn_in_the_tree() -> None:
    assert set(errors()) | ROOTS <= set(broadcaster.__all__)
    tree = exceptions.__doc__ or ""
    assert [name for name in set(errors()) | ROOTS - {"BroadcasterError"} if f"-- {name} " not in tree] == []


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (pika.exceptions.StreamLostError("gone"), True),
        (pika.exceptions.ConnectionClosedByBroker(320, "shutdown"), True),
        (pika.exceptions.ChannelWrongStateError("closed"), True),
        (ConnectionRefusedError(), True),
        (pika.exceptions.BodyTooLongError(), False),  # a bug a new connection would meet again
        (pika.exceptions.ReentrancyError(), False),
    ],
)
def test_connection_lost_is_what_a_reconnection_may_cure(error: Exception, lost: bool) -> None:
    assert isinstance(error, CONNECTION_LOST) == lost
