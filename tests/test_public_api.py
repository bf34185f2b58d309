"""The public surface is exactly `broadcaster.__all__`, sorted."""

from __future__ import annotations

import broadcaster


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in vars(broadcaster) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(broadcaster, name)).__name__ == "module"}
    assert sorted(broadcaster.__all__) == broadcaster.__all__
    assert set(broadcaster.__all__) == public - modules


def test_every_error_derives_from_broadcaster_error() -> None:
    errors = [
        getattr(broadcaster, name)
        for name in broadcaster.__all__
        if name.endswith(("Error", "Unavailable", "Full", "Timeout", "Exceeded", "Payload", "Large", "Message"))
    ]
    assert errors
    assert all(issubclass(error, broadcaster.BroadcasterError) for error in errors)
