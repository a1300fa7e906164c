"""The builder's build counters and durations, scraped after two real builds."""

from __future__ import annotations

import pytest

from slipway.libs.metrics import socket_path
from tests.builder.conftest import Harness, tarball
from tests.metrics.scrape import samples, value

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]


async def test_builds_started_and_finished_by_outcome(harness: Harness) -> None:
    """A static site that builds and an app nothing detects: started +2, one of each outcome."""
    sock = socket_path(harness.settings.home_path, "builder", harness.settings.instance)
    before = await samples(sock)
    built = await harness.build(
        # Two entries at the top: a tarball holding one folder only is unwrapped, as GitHub's are.
        tarball({"static.json": "{}\n", "public/index.html": "<p>metered</p>\n"}),
        app_id=harness.app_id(),
        buildpacks=["static"],
    )
    assert built.status == "succeeded", built.text
    refused = await harness.build(tarball({"README": "nothing here\n"}), app_id=harness.app_id())
    assert refused.status == "failed"
    after = await samples(sock)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("slipway_builds_started_total") == 2
    assert moved("slipway_builds_finished_total", outcome="succeeded") == 1
    assert moved("slipway_builds_finished_total", outcome="failed") == 1
    assert moved("slipway_build_duration_seconds_count", outcome="succeeded") == 1
    assert moved("slipway_build_duration_seconds_sum", outcome="succeeded") > 0
