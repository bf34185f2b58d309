"""A headless Chromium, driven by Selenium, for the admin pages' browser tests.

Chromium and chromedriver come from the system's packages (scripts/browser-deps.sh);
nothing is downloaded: Selenium is given the driver's path and told to stay offline.
Set BROADCASTER_SCREENSHOTS to a directory to keep a PNG of each page a test shows
(docs/img holds the ones the docs use).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,900",
)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session, with a fresh profile directory."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("Chromium and chromedriver are not installed: run scripts/browser-deps.sh")
    os.environ["SE_OFFLINE"] = "true"  # never let selenium-manager download a browser or driver
    from selenium import webdriver  # only the browser tests need it
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="broadcaster-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: Any, live_server: Any) -> Iterator[Any]:
    """The session's Chromium, logged out, its cookies cleared after the test."""
    chromium.delete_all_cookies()
    yield chromium
    chromium.delete_all_cookies()


@pytest.fixture
def screenshot(browser: Any) -> Callable[[str], None]:
    """screenshot("admin-outbox") keeps the page as docs would show it, when BROADCASTER_SCREENSHOTS is set."""

    def take(name: str) -> None:
        directory = os.environ.get("BROADCASTER_SCREENSHOTS")
        if not directory:
            return
        path = Path(directory) / f"{name}.png"
        browser.save_screenshot(str(path))
        from PIL import Image  # only when keeping screenshots

        with Image.open(path) as image:  # a small PNG for the docs: 64 colours are plenty for the admin
            image.convert("RGB").quantize(64).save(path, optimize=True)

    return take


@pytest.fixture(scope="session")
def live_server(django_db_setup: None) -> Iterator[Any]:
    """pytest-django's live server, on 127.0.0.1 (not "localhost", which may resolve to ::1 first).

    Made once the test databases exist: the server thread then opens its own connections
    to them, rather than being handed the main thread's SQLite one.
    """
    from django.db import connections
    from pytest_django.live_server_helper import LiveServer

    # An in-memory SQLite connection is handed to the server's thread, as Django's
    # LiveServerTestCase does: it must be allowed there, or closing it at the end of a
    # request raises in that thread.
    shared = [conn for conn in connections.all() if conn.vendor == "sqlite" and conn.is_in_memory_db()]
    for conn in shared:
        conn.inc_thread_sharing()
    server = LiveServer("127.0.0.1:0")
    try:
        yield server
    finally:
        server.stop()
        for conn in shared:
            conn.dec_thread_sharing()
