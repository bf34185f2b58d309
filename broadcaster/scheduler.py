"""Which deliveries may run now, and which acks to send: the daemon's scheduling, without I/O.

The consumer daemon runs up to CONCURRENCY receivers at once. Two rules keep that safe:

- `Lanes`: deliveries of an ordered subscription with the same partition key run one at
  a time, in delivery order; everything else runs as soon as a worker is free.
- `AckWindow`: deliveries finish out of order, and each is acked as soon as it is settled,
  with one multiple-ack for the run of tags settled in order (the usual case) and single
  acks for those that finished ahead of an earlier, slower one. No tag is acked twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["AckWindow", "Acks", "Lanes"]

T = TypeVar("T")


class Lanes(Generic[T]):
    """Deliveries waiting to run: free ones in arrival order, keyed ones one per key at a time.

    Not thread-safe: the caller holds its own lock around every call.
    """

    def __init__(self) -> None:
        self._ready: deque[tuple[T, Hashable | None]] = deque()
        self._waiting: dict[Hashable, deque[T]] = {}  # key -> items behind the running (or ready) one

    def add(self, item: T, key: Hashable | None) -> None:
        """Queue `item`; with a `key`, it waits until the items of that key before it are done."""
        if key is None:
            self._ready.append((item, None))
        elif key in self._waiting:
            self._waiting[key].append(item)
        else:
            self._waiting[key] = deque()
            self._ready.append((item, key))

    def take(self) -> T | None:
        """The next item that may run now, or None."""
        return self._ready.popleft()[0] if self._ready else None

    def done(self, key: Hashable | None) -> None:
        """The running item of `key` finished: the next one of that key may run."""
        if key is None:
            return
        behind = self._waiting.get(key)
        if behind is None:
            return
        if behind:
            self._ready.append((behind.popleft(), key))
        else:
            del self._waiting[key]

    def clear(self) -> None:
        """Forget every item not started (keys of running items stay until done())."""
        for _, key in self._ready:
            if key is not None:
                del self._waiting[key]  # nothing of this key runs: the lane is free again
        self._ready.clear()
        for behind in self._waiting.values():
            behind.clear()

    def drain(self) -> list[T]:
        """Remove and return every item not started."""
        items = [item for item, _ in self._ready] + [item for behind in self._waiting.values() for item in behind]
        self.clear()
        return items

    def __len__(self) -> int:
        return len(self._ready) + sum(len(behind) for behind in self._waiting.values())


@dataclass(frozen=True, slots=True)
class Acks:
    """The acks to send now: one multiple-ack up to `up_to`, and single acks of `single`."""

    up_to: int | None = None
    single: tuple[int, ...] = ()


@dataclass
class AckWindow:
    """Delivery tags of one channel, from delivered to acked."""

    _order: deque[int] = field(default_factory=deque)  # delivered, not yet passed by a multiple-ack
    _settled: set[int] = field(default_factory=set)
    _acked: set[int] = field(default_factory=set)  # settled and already acked (or nacked) alone

    def delivered(self, tag: int) -> None:
        """A delivery arrived (tags grow on a channel)."""
        self._order.append(tag)

    def settle(self, tags: list[int], *, already: frozenset[int] = frozenset()) -> Acks:
        """Tags whose verdicts were carried out; `already` were answered alone (a nack).

        Returns the acks that answer every settled tag exactly once.
        """
        self._settled.update(tags)
        self._acked.update(already)
        up_to = None
        while self._order and self._order[0] in self._settled:
            tag = self._order.popleft()
            self._settled.discard(tag)
            if tag in self._acked:
                self._acked.discard(tag)  # answered alone before: a multiple-ack must not cover only it
            else:
                up_to = tag
        # A multiple-ack up to `up_to` covers every unanswered tag before it; what finished
        # ahead of a slower delivery is acked alone now, so its prefetch slot frees at once.
        single = tuple(sorted(tag for tag in self._settled if tag not in self._acked))
        self._acked.update(single)
        return Acks(up_to, single)

    def __len__(self) -> int:
        """Deliveries not yet answered."""
        return len(self._order) - len(self._acked)
