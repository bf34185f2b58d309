"""pytest plugin of the test kit: the ``broadcasts`` fixture (loaded through an entry point)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broadcaster.testing import Capture, capture_broadcasts


@pytest.fixture
def broadcasts() -> Iterator[Capture]:
    """What the test broadcasts, recorded instead of published (after commit, as in production)."""
    with capture_broadcasts() as capture:
        yield capture
