"""The distributions: built without a warning, and the wheel working in a venv of its own.

The wheel is installed into a fresh venv outside the repository, with its dependencies
pinned to the versions this suite runs on (so pip takes them from its cache when it can,
the package registry otherwise). A small project there runs `manage.py check` and
publishes a real event to RabbitMQ, which this test then reads from the broker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import BROKER_URL, Broker

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parent.parent
# Dependencies of the wheel, pinned to what this suite runs on.
PINNED = ("Django", "asgiref", "sqlparse", "pika", "pydantic", "pydantic-core", "annotated-types", "typing-extensions")

SETTINGS = """
import os
SECRET_KEY = "packaging"
INSTALLED_APPS = ["django.contrib.contenttypes", "broadcaster", "shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(os.path.dirname(__file__), "db")}}
USE_TZ = True
BROADCASTER = {"SERVICE_NAME": "shop", "BROKER_URL": os.environ["BROKER_URL"], "EXCHANGE": os.environ["EXCHANGE"]}
DEFAULT_EXCEPTION_REPORTER_FILTER = "broadcaster.reporting.SafeExceptionReporterFilter"
"""

SIGNALS = """
from django.dispatch import Signal

parcel_sent = Signal()
"""

APPS = """
from django.apps import AppConfig
from pydantic import BaseModel

import broadcaster


class ParcelSent(BaseModel):
    parcel: int


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self):
        from shop import parcel_sent

        broadcaster.broadcast(parcel_sent, event="shop.parcel_sent", schema=ParcelSent)
"""

MANAGE = """
import sys
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""

PUBLISH = """
import django, json
django.setup()
import broadcaster, shop
shop.parcel_sent.send(sender=None, parcel=42)
broadcaster.flush(10)
print(json.dumps({"broadcaster": broadcaster.__file__}))
"""


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built from the repository as a release would be."""
    source, out = _source_copy(tmp_path_factory.mktemp("source")), tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # that alone makes one warning
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        env={**env, "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    warnings = [line for line in output.splitlines() if "warn" in line.lower() or "deprecat" in line.lower()]
    assert warnings == [], output
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return sdist, wheel


def test_the_distributions_carry_the_license_and_the_package(distributions: tuple[Path, Path]) -> None:
    sdist, wheel = distributions
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name for name in names if name.endswith(".dist-info/METADATA"))
        fields = archive.read(info).decode()
    assert "License-Expression: MIT" in fields
    assert "License-File: LICENSE" in fields
    assert "Requires-Python: >=3.11" in fields
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert {"broadcaster/py.typed", "broadcaster/jsondepth.py", "broadcaster/migrations/0001_initial.py"} <= set(names)
    assert not any(name.startswith(("tests/", "services/", "schemas/")) for name in names)
    with tarfile.open(sdist) as archive:
        assert any(member.endswith("/LICENSE") for member in archive.getnames())


def test_the_wheel_works_in_a_fresh_venv(distributions: tuple[Path, Path], tmp_path: Path, broker: Broker) -> None:
    _, wheel = distributions
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{name}=={metadata.version(name)}\n" for name in PINNED))
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "--quiet", "-c", str(constraints), str(wheel)], tmp_path)

    project = tmp_path / "project"
    (project / "shop").mkdir(parents=True)
    (project / "settings.py").write_text(SETTINGS)
    (project / "shop" / "__init__.py").write_text(SIGNALS)
    (project / "shop" / "apps.py").write_text(APPS)
    (project / "manage.py").write_text(MANAGE)
    (project / "publish.py").write_text(PUBLISH)
    queue = broker.tap("shop.#")
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "settings",
        "BROKER_URL": BROKER_URL,
        "EXCHANGE": broker.exchange,
    }
    checked = _run([python, "manage.py", "check"], project, env)
    assert "System check identified no issues" in checked
    published = json.loads(_run([python, "publish.py"], project, env))
    assert Path(published["broadcaster"]).is_relative_to(venv)  # the installed wheel, not the repository
    (message,) = broker.drain(queue)
    assert (message.routing_key, json.loads(message.body)) == ("shop.parcel_sent", {"parcel": 42})
    assert message.headers["ce-source"] == "shop"


def _source_copy(target: Path) -> Path:
    """The repository's files (tracked or new, not ignored) copied to `target`.

    A build writes its egg-info and build/ into the tree it builds: a copy keeps two
    suites running side by side (make test) out of each other's way.
    """
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], REPO)
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
    return done.stdout
