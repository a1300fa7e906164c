"""One-off dynos: attached through the gateway's websocket, detached with a time to live.

Real NATS, keyring and gateway in this process; the scheduler's one-off code on
the real Docker engine; the CLI as a subprocess for the terminal path.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from slipway.cli.commands.run import websocket_url
from slipway.contracts import scheduler as sc
from slipway.contracts.gateway import (
    RELEASE_CREATE,
    CreateRelease,
)
from slipway.contracts.scope import Scope
from slipway.services.scheduler.oneoff import OneOffs
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack

pytestmark = [pytest.mark.docker, pytest.mark.integration]


async def released_app(stack: Stack, owner: Api, name: str, image: str) -> dict[str, Any]:
    """An app whose current release runs `image`, as a build would have made it."""
    app = await stack.app(owner, name)
    await owner.ok("PATCH", f"/apps/{name}/config-vars", {"GREETING": "hello from config"})
    await stack.bus.send(
        RELEASE_CREATE,
        CreateRelease(app_id=app["id"], image_ref=image, image_digest="sha256:" + "0" * 64),
    )

    async def has_image() -> None:
        releases = await owner.ok("GET", f"/apps/{name}/releases")
        assert any(r["description"] != "Initial release" and r["version"] >= 3 for r in releases)

    await assert_eventually(has_image, timeout=10)
    return app


async def open_session(
    owner: Api, app: str, command: str, **extra: Any
) -> tuple[dict[str, Any], str]:
    """Start an attached one-off; its attach_url's secret through the websocket door."""
    body = {"command": command, "attach": True, **extra}
    dyno = await owner.ok("POST", f"/apps/{app}/dynos", body, 201)
    assert dyno["attach_url"].startswith("rendezvous://127.0.0.1:")
    return dyno, websocket_url(owner.url, dyno["attach_url"])


async def converse(url: str, send: list[bytes]) -> tuple[bytes, int | None]:
    """Open the attach URL, type `send`, collect output until the exit frame."""
    output = b""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"resize": [100, 30]})
        for chunk in send:
            await ws.send_bytes(chunk)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                output += message.data
            elif message.type == aiohttp.WSMsgType.TEXT:
                return output, message.json().get("exit")
    return output, None


async def test_attached_run_bridges_the_terminal_and_returns_the_exit_status(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """Typed input reaches the dyno, its output and config come back, its status is kept."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    _, url = await open_session(
        alice, "hello", 'read line; echo "got:$line $GREETING $DYNO"; stty size; exit 3'
    )
    output, status = await converse(url, [b"typed words\r"])
    assert status == 3
    text = output.decode()
    assert "got:typed words hello from config run." in text


async def test_the_window_size_follows_the_client(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """A resize sent while the process runs reaches its TTY (SIGWINCH on the client)."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    _, url = await open_session(alice, "hello", "echo ready; read line; stty size")
    seen = b""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                seen += message.data
                if seen.endswith(b"ready\r\n"):
                    await ws.send_json({"resize": [132, 43]})
                    await ws.send_bytes(b"go\r")
            elif message.type == aiohttp.WSMsgType.TEXT:
                break
    assert b"43 132" in seen


async def test_ctrl_c_interrupts_the_remote_process(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """Ctrl-C travels as a byte; the dyno's TTY turns it into SIGINT."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    _, url = await open_session(alice, "hello", "echo ready; sleep 100")
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        seen = b""
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                seen += message.data
                if b"ready" in seen:
                    await ws.send_bytes(b"\x03")
            elif message.type == aiohttp.WSMsgType.TEXT:
                assert message.json() == {"exit": 130}
                break
        else:
            pytest.fail("the socket closed without an exit frame")


async def test_an_attach_url_works_once(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """A second connection to the same URL is refused: the session id is single-use."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    _, url = await open_session(alice, "hello", "true")
    _, status = await converse(url, [])
    assert status == 0
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url)
    assert refused.value.status == 404


async def test_detached_run_is_stopped_at_its_time_to_live(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str, scope: Scope
) -> None:
    """A detached one-off runs in the background and is gone after time_to_live."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    dyno = await alice.ok(
        "POST", "/apps/hello/dynos", {"command": "sleep 600", "time_to_live": 2}, 201
    )
    assert dyno["attach_url"] is None and dyno["name"].startswith("run.")
    async with aiodocker.Docker() as docker:

        async def running() -> list[Any]:
            labels = [scope.managed_label, f"{sc.LABEL_DYNO}={dyno['name']}"]
            found = await docker.containers.list(all=True, filters={"label": labels})
            return list(found)

        assert await running()

        async def gone() -> None:
            assert not await running()

        await assert_eventually(gone, timeout=20)


async def test_bad_requests_are_refused_before_anything_runs(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """No release → 422; a viewer → 403; an empty command or a bad size → 422."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "bare")
    answer = await alice.post("/apps/bare/dynos", {"command": "bash"})
    assert answer.status == 422 and "push code first" in answer.body["message"]
    await released_app(stack, alice, "hello", image)
    for body in ({"command": " "}, {"command": "bash", "size": "huge"}):
        answer = await alice.post("/apps/hello/dynos", body)
        assert answer.status == 422, body
    bob = await stack.user("bob@example.com")
    team = (await alice.ok("GET", "/apps/hello"))["team"]["name"]
    await stack.join(alice, team, bob, "viewer")
    answer = await bob.post("/apps/hello/dynos", {"command": "bash"})
    assert answer.status == 403


async def test_cli_run_passes_input_output_and_exit_status(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str, tmp_path: Path
) -> None:
    """`slipway run` with piped stdin: the output comes back and the exit status is its own."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    env = {
        **os.environ,
        "SLIPWAY_API_URL": stack.url,
        "SLIPWAY_API_KEY": alice.token or "",
        "SLIPWAY_CONFIG_DIR": str(tmp_path / "cli"),
        "HOME": str(tmp_path),
    }
    cli = [sys.executable, "-m", "slipway.cli.main"]
    process = await asyncio.create_subprocess_exec(
        *cli,
        "run",
        "-a",
        "hello",
        "--",
        'read x; echo "echoed:$x"; exit 7',
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(process.communicate(b"piped line\n"), timeout=60)
    assert process.returncode == 7, err.decode()
    assert "echoed:piped line" in out.decode()
    assert "Running" in err.decode()
