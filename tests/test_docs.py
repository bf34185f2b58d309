"""The guide builds without a warning, and its reference pages say what the code does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.settings import BroadcasterSettings

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("mkdocs")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return site_dir


def test_every_setting_is_in_the_settings_reference(site: Path) -> None:
    page = (site / "reference" / "settings" / "index.html").read_text(encoding="utf-8")
    keys = [field.alias for field in BroadcasterSettings.model_fields.values()]
    assert keys
    assert [key for key in keys if f"<code>{key}</code>" not in page] == []


def test_every_check_id_and_dead_letter_reason_is_documented(site: Path) -> None:
    settings_page = (site / "reference" / "settings" / "index.html").read_text(encoding="utf-8")
    messages_page = (site / "reference" / "messages" / "index.html").read_text(encoding="utf-8")
    assert all(f"broadcaster.E00{n}" in settings_page for n in range(1, 5))
    assert "broadcaster.E136" in settings_page
    for reason in ("not-json", "schema-violation", "receiver-error", "hop-limit", "bad-signature"):
        assert f"<code>{reason}</code>" in messages_page


def test_every_command_option_is_in_the_commands_reference(site: Path) -> None:
    page = (site / "reference" / "commands" / "index.html").read_text(encoding="utf-8")
    for option in ("--prefetch", "--max-messages", "--metrics-port", "--once", "--yes", "--snapshot", "--permissions"):
        assert option in page


def test_the_operations_commands_and_their_options_are_documented(site: Path) -> None:
    page = (site / "reference" / "commands" / "index.html").read_text(encoding="utf-8")
    for option in ("broadcast_backfill", "--apply", "--check", "--prune", "--after", "--target", "--queue"):
        assert option in page
    operations = (site / "operations" / "index.html").read_text(encoding="utf-8")
    for section in ('id="deploying-the-topology-before-the-daemons"', 'id="unrouted-events"', 'id="backfill"'):
        assert section in operations
