"""libs/health against a real nats-server and a ServiceApp running in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from slipway.contracts import subjects
from slipway.contracts.subjects import Service
from slipway.libs.health import main, wait_for_services
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp, Settings
from tests.conftest import assert_eventually

pytestmark = pytest.mark.integration


@asynccontextmanager
async def running_service(url: str, home: Path) -> AsyncIterator[ServiceApp]:
    """The keyring's name on a bare ServiceApp: answers discovery, handles nothing."""
    app = ServiceApp(Service.KEYRING, settings=Settings(nats_url=url, home=str(home)))
    task = asyncio.create_task(app.run(install_signals=False))
    await app.started.wait()
    try:
        yield app
    finally:
        app.stop()
        await task


async def test_running_service_answers_the_ping(nats_server: NatsServer, tmp_path: Path) -> None:
    """Waiting for a running service returns at once with its discovery reply."""
    async with running_service(nats_server.url, tmp_path) as app:
        report = await wait_for_services(nats_server.url, ["keyring"], timeout=5)
    assert report.ok
    assert report.answered["keyring"].name == "keyring"
    assert report.answered["keyring"].id == app.bus.instance


async def test_wait_keeps_asking_until_the_service_starts(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A service that starts after the wait already asked in vain is still seen in time."""
    asked: list[bytes] = []

    async def record(msg: Msg) -> None:
        asked.append(msg.data)

    observer = await nats.connect(nats_server.url)
    watch = await observer.subscribe(subjects.srv_subjects("PING", "keyring", "")[1], cb=record)
    try:
        waiting = asyncio.create_task(wait_for_services(nats_server.url, ["keyring"], timeout=20))
        await assert_eventually(lambda: _check(len(asked) >= 1))
        await watch.unsubscribe()
        assert not waiting.done()
        async with running_service(nats_server.url, tmp_path):
            report = await waiting
    finally:
        await observer.close()
    assert report.ok


def _check(condition: bool) -> None:
    assert condition


async def test_service_that_never_answers_is_named(nats_server: NatsServer) -> None:
    """After the deadline the report names the services that did not answer."""
    report = await wait_for_services(nats_server.url, ["keyring", "gateway"], timeout=0.5)
    assert report.nats_reachable
    assert report.missing == ["keyring", "gateway"]
    assert not report.ok


async def test_unreachable_nats_fails_after_the_deadline() -> None:
    """With no server at the URL the wait gives up at its deadline and says NATS is down."""
    report = await wait_for_services("nats://127.0.0.1:1", ["keyring"], timeout=0.5)
    assert not report.nats_reachable
    assert not report.ok


def test_command_line_exit_status(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command exits 0 when everything asked for answers, 1 when a service is missing."""
    assert main(["--url", nats_server.url, "--timeout", "5"]) == 0
    assert main(["--url", nats_server.url, "--wait", "gateway", "--timeout", "0.3"]) == 1
    assert "not answering after 0.3s: gateway" in capsys.readouterr().err
