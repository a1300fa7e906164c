"""The service runner: graceful stop on SIGTERM, discovery, settings."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from slipway.contracts import subjects
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import Settings, SettingsError, load_settings
from tests.conftest import assert_eventually

SERVICE = """
import asyncio, sys
from slipway.contracts import subjects
from slipway.contracts.base import Rpc
from slipway.contracts.subjects import Service
from slipway.libs.service import ServiceApp, Settings, run_service
from tests.bus.test_rpc import Echo, Echoed

RPC = Rpc(Service.KEYRING, "slow", subjects.rpc(Service.KEYRING, "slow"), Echo, Echoed)
app = ServiceApp(
    Service.KEYRING,
    settings=Settings(nats_url=sys.argv[1], home=sys.argv[2], log_format="json"),
)

@app.rpc(RPC)
async def slow(req: Echo) -> Echoed:
    print("handler started", flush=True)
    await asyncio.sleep(req.delay)
    return Echoed(text="finished " + req.text)

run_service(app)
"""


class Settled(Settings, frozen=True, kw_only=True):
    port: int = 80
    verbose: bool = False


def test_settings_are_read_from_the_environment() -> None:
    """SLIPWAY_* variables fill typed fields, converted from strings."""
    env = {"SLIPWAY_PORT": "8080", "SLIPWAY_VERBOSE": "true", "SLIPWAY_NATS_URL": "nats://x:1"}
    settings = load_settings(Settled, env)
    assert (settings.port, settings.verbose, settings.nats_url) == (8080, True, "nats://x:1")


def test_bad_setting_names_the_field() -> None:
    """A value that does not convert raises SettingsError naming the field."""
    with pytest.raises(SettingsError, match="port"):
        load_settings(Settled, {"SLIPWAY_PORT": "eighty"})


@pytest.mark.integration
async def test_sigterm_finishes_in_flight_handler_and_exits_zero(
    nats_server: NatsServer, bus_factory: Callable[[str], Awaitable[Bus]], tmp_path: Path
) -> None:
    """SIGTERM while a handler runs: the handler's reply still arrives, the process exits 0."""
    from tests.bus.test_rpc import Echo

    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    root = str(Path(__file__).resolve().parents[2])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        nats_server.url,
        str(tmp_path / "home"),
        cwd=root,
        env={"PYTHONPATH": root},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    client = await bus_factory("gateway")
    from slipway.contracts.base import Rpc
    from slipway.contracts.subjects import Service
    from tests.bus.test_rpc import Echoed

    rpc = Rpc(Service.KEYRING, "slow", subjects.rpc(Service.KEYRING, "slow"), Echo, Echoed)
    ping = subjects.srv_subjects("PING", "keyring", "x")[1]

    async def up() -> None:
        try:
            await client.nc.request(ping, b"", timeout=0.5)
        except Exception as exc:
            raise AssertionError("not up yet") from exc

    await assert_eventually(up, timeout=20)
    call = asyncio.create_task(client.call(rpc, Echo(text="work", delay=1.5), timeout=10))
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"handler started\n"
    proc.send_signal(signal.SIGTERM)
    reply = await call
    assert reply.text == "finished work"
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert proc.stderr is not None
    lines = [json.loads(line) for line in (await proc.stderr.read()).splitlines() if line]
    events = [line["event"] for line in lines]
    assert events.index("service.stopping") < events.index("service.stopped")
    canonical = [line for line in lines if line["event"] == "rpc"]
    assert canonical and canonical[0]["outcome"] == "ok" and canonical[0]["service"] == "keyring"


@pytest.mark.integration
async def test_discovery_answers_ping_info_and_stats(
    nats_server: NatsServer, bus_factory: Callable[[str], Awaitable[Bus]]
) -> None:
    """A running ServiceApp answers $SRV.PING, INFO and STATS with its endpoints."""
    from slipway.contracts.subjects import Service
    from slipway.libs.service import ServiceApp

    app = ServiceApp(Service.BACKUP, settings=Settings(nats_url=nats_server.url))
    task = asyncio.create_task(app.run(install_signals=False))
    await asyncio.wait_for(app.started.wait(), 10)
    client = await bus_factory("gateway")
    try:
        for verb in subjects.SRV_VERBS:
            msg = await client.nc.request(
                subjects.srv_subjects(verb, "backup", "_")[1], b"", timeout=2
            )
            body = json.loads(msg.data)
            assert body["name"] == "backup"
            assert body["type"] == f"io.nats.micro.v1.{verb.lower()}_response"
    finally:
        app.stop()
        await asyncio.wait_for(task, 10)
