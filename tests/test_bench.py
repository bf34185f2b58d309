"""`python -m bench --quick` runs every scenario of `make bench` end to end, so the bench cannot rot unseen.

The quick run's figures mean nothing (a few hundred events each); what is checked is that
every measurement ran and produced a figure.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.broker
@pytest.mark.timeout(300)
def test_the_quick_bench_measures_every_scenario(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "quick.json").read_text())
    assert report["failures"] == []
    # Without the bench extra the FastStream comparisons are skipped; the cluster never runs in --quick.
    absent = ("Cluster",) if importlib.util.find_spec("faststream") else ("Cluster", "FastStream")
    rows = [row for row in report["rows"] if not any(word in row["measure"] for word in absent)]
    assert len(rows) >= 16
    assert [row["measure"] for row in rows if "n/a" in (row["library"], row["baseline"], row["ratio"])] == []
    assert (
        "| measure | library | baseline (same run) | ratio | target | result |" in (tmp_path / "quick.md").read_text()
    )
