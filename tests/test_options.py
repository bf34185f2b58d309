"""The commands' counts take whole numbers of at least 1, and say so before touching anything."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from broadcaster.management.options import positive


@pytest.mark.parametrize(
    "args",
    [
        ("consume_signals", "--prefetch", "0"),
        ("consume_signals", "--max-messages", "-1"),
        ("consume_signals", "--concurrency", "many"),
        ("dead_letters", "list", "--limit", "0"),
        ("dead_letters", "purge", "--limit", "0", "--yes"),
        ("broadcast_backfill", "testapp.Article", "--event", "x", "--batch", "0"),
    ],
)
def test_a_count_below_one_is_a_usage_error(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError, match=r"invalid positive value"):
        call_command(*args)


def test_positive_takes_whole_numbers_from_one() -> None:
    assert positive("1") == 1
    assert positive("250") == 250
    for bad in ("0", "-3"):
        with pytest.raises(ValueError, match=bad):
            positive(bad)
    with pytest.raises(ValueError, match="invalid literal"):
        positive("1.5")
