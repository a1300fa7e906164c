"""Dashboard tests: the gateway's serving of the single-page app, and Debian's Chromium.

`chromium` makes headless Chromium browsers (Selenium + Debian's chromedriver), each
with a fresh profile; every browser is closed after the test. The flags keep Chromium
from its own network chatter (this machine's closed network refuses it, and it would
slow every start). `SHOTS` is where the run saves its screenshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.gateway.conftest import (  # noqa: F401
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

Browser = Callable[..., webdriver.Chrome]


def _browsers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A factory of headless Chromium browsers (`make(width=390)`); all closed at the end."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium is missing: scripts/install.sh installs chromium chromium-driver")
    made: list[webdriver.Chrome] = []

    def make(width: int = 1280, height: int = 900, network_log: bool = False) -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        if network_log:  # DevTools' network events, read with driver.get_log("performance")
            options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        profile = tmp_path_factory.mktemp("chromium-profile")
        for flag in (
            "--headless=new",
            "--no-sandbox",  # runs as root in a container
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        made.append(driver)
        return driver

    try:
        yield make
    finally:
        for driver in made:
            driver.quit()


@pytest.fixture
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium browsers for one test: `chromium(width=390)`."""
    yield from _browsers(tmp_path_factory)


@pytest.fixture(scope="module")
def chromium_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """`chromium`, for browsers a whole module shares."""
    yield from _browsers(tmp_path_factory)


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save what the browser shows as test-artifacts/dashboard/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
