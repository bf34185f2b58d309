"""django-signal-broadcaster: Django signals as typed CloudEvents over RabbitMQ."""

from broadcaster.envelope import Envelope
from broadcaster.exceptions import (
    BroadcasterError,
    BrokerRefused,
    BrokerUnavailable,
    ConfigurationError,
    ContractError,
    FlushTimeout,
    HopLimitExceeded,
    InvalidPayload,
    MessageTooLarge,
    PermanentError,
    PublishBufferFull,
    PublishError,
    QueueNotFound,
    RegistrationError,
    RejectedMessage,
    TransientError,
    Unroutable,
)
from broadcaster.registry import broadcast, subscribe
from broadcaster.transport import flush

__version__ = "0.1.0.dev0"

__all__ = [
    "BroadcasterError",
    "BrokerRefused",
    "BrokerUnavailable",
    "ConfigurationError",
    "ContractError",
    "Envelope",
    "FlushTimeout",
    "HopLimitExceeded",
    "InvalidPayload",
    "MessageTooLarge",
    "PermanentError",
    "PublishBufferFull",
    "PublishError",
    "QueueNotFound",
    "RegistrationError",
    "RejectedMessage",
    "TransientError",
    "Unroutable",
    "broadcast",
    "flush",
    "subscribe",
]
