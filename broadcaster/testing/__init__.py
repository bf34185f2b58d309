"""A test kit for projects that use broadcaster: no broker needed.

- `capture_broadcasts()` records what a block of code broadcasts (after commit, as in
  production) instead of sending it to RabbitMQ.
- `deliver()` hands one event to this process's subscriptions as the daemon would:
  decoding, version check, upcasting, validation, loop prevention, inbox.
- `InMemoryBroker` is RabbitMQ and this service's daemon in the test process: what is
  broadcast (or `send()` publishes as another service) is routed by the service's
  topology and settled by the daemon's own policy: retries with their delays recorded,
  dead letters with their reasons, ordered subscriptions retried in place.

With pytest, the ``broadcasts`` fixture (from the plugin `broadcaster.pytest_plugin`,
loaded automatically) yields a capture. With Django's TestCase, on_commit callbacks
only run inside ``self.captureOnCommitCallbacks(execute=True)``, as for any on_commit code.
"""

from broadcaster.testing.broker import InMemoryBroker
from broadcaster.testing.capture import Capture, CapturedEvent, capture_broadcasts, deliver
from broadcaster.testing.exchanges import topic_matches
from broadcaster.testing.records import DeadLetter, Handled, Message, Retry

__all__ = [
    "Capture",
    "CapturedEvent",
    "DeadLetter",
    "Handled",
    "InMemoryBroker",
    "Message",
    "Retry",
    "capture_broadcasts",
    "deliver",
    "topic_matches",
]
