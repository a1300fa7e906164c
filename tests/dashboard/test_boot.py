"""boot.js: a module that failed to arrive is fetched again, not left as "Loading…".

Chromium aborts what it is loading when the machine's interfaces change (a container's
veth coming or going: ERR_NETWORK_CHANGED), and a failed module import fails the whole
app for that page. Here DevTools blocks one page module during the first load, the way
such a failure looks to the page, and lets it through once the page has recorded the
failure; the sign-in form must then appear without anyone reloading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from selenium.webdriver.common.by import By

from tests.dashboard.conftest import Browser
from tests.gateway.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.alone]

T = TypeVar("T")

TRIES = "return sessionStorage.getItem('slipway.boot-tries')"


def eventually(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll the blocking `check` until it answers something truthy (Selenium is synchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer := check():
            return answer
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s")


async def test_a_module_that_failed_to_arrive_is_loaded_again(
    stack: Stack, chromium: Browser
) -> None:
    driver = await asyncio.to_thread(chromium)

    def load() -> tuple[object, object]:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/dashboard/pages/audit.js"]})
        driver.get(stack.url + "/")
        tries = eventually(lambda: driver.execute_script(TRIES), 30, "recorded failed load")
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        eventually(lambda: driver.find_elements(By.CSS_SELECTOR, "#token"), 60, "sign-in form")
        return tries, driver.execute_script(TRIES)

    # Selenium blocks: it runs in a thread while this loop serves the in-process gateway.
    tries, left = await asyncio.to_thread(load)
    assert tries == "1"  # the first load did fail
    assert left is None  # and the count is cleared once the app runs


async def test_a_module_that_never_arrives_is_said_after_three_tries(
    stack: Stack, chromium: Browser
) -> None:
    driver = await asyncio.to_thread(chromium)

    def load() -> str:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/dashboard/pages/audit.js"]})
        driver.get(stack.url + "/")
        found = eventually(
            lambda: driver.find_elements(By.CSS_SELECTOR, "main .error"), 60, "error line"
        )
        return str(found[0].text)

    text = await asyncio.to_thread(load)
    assert text.startswith("The dashboard could not load (")
    assert text.endswith("Reload the page to try again.")
