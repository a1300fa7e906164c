"""The gateway above the disk's high-water mark: new builds, sources and add-ons refused
with 507 and what is full; everything else goes on; below the mark, all is accepted again.

The stack (keyring, gateway) runs in this process with its SLIPWAY_HOME on a small loop
file system that the test fills; nothing is faked.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from slipway.contracts import disk
from slipway.libs.bus import Bus
from slipway.libs.errors import InsufficientStorage
from slipway.libs.natsserver import NatsServer
from slipway.services.gateway.app import create_service
from slipway.services.gateway.http.diskpressure import DiskPressure
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from tests.conftest import assert_eventually
from tests.disk.loopfs import LoopFs, available
from tests.gateway.conftest import (
    Answer,
    Api,
    Stack,
    domain_events,
    gateway_settings,
    run_in_background,
    stop,
)
from tests.gateway.gitclient import git, push_url, work_tree

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]

INTERVAL = 0.2  # the watchers' pass, short so the test does not wait


@pytest.fixture
def loopfs(tmp_path: Path) -> Iterator[LoopFs]:
    with LoopFs(tmp_path, megabytes=64) as fs:
        yield fs


@pytest.fixture
async def stack_on_loopfs(
    nats_server: NatsServer,
    loopfs: LoopFs,
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> AsyncIterator[Stack]:
    """Keyring and gateway with their home on the loop file system, watching it often."""
    home = loopfs.mount / "home"
    home.mkdir()
    keyring = create_keyring(
        KeyringSettings(
            nats_url=nats_server.url, home=str(home), shutdown_grace=5.0, disk_interval=INTERVAL
        )
    )
    keyring_task = await run_in_background(keyring)
    gateway = create_service(gateway_settings(nats_server.url, home, disk_interval=INTERVAL))
    gateway_task = await run_in_background(gateway)
    try:
        bootstrap = json.loads((home / "gateway" / "bootstrap.json").read_text())
        async with aiohttp.ClientSession() as session:
            admin = Api(session, bootstrap["api_url"], bootstrap["token"], bootstrap["email"])
            yield Stack(
                home=home,
                nats=nats_server,
                gateway=gateway,
                keyring=keyring,
                bus=await bus_factory("operator"),
                admin=admin,
                session=session,
            )
    finally:
        loopfs.free()  # room to stop cleanly, whatever the test left
        await stop(gateway, gateway_task)
        await stop(keyring, keyring_task)


def tarball() -> bytes:
    """A source an app could build from: one Procfile, gzipped tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        data = b"web: python -m http.server $PORT\n"
        info = tarfile.TarInfo("Procfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


async def upload(stack: Stack, api: Api) -> str:
    """A source uploaded for app hello (while there is room): its get_url."""
    blob = (await api.ok("POST", "/apps/hello/sources", status=201))["source_blob"]
    async with stack.session.put(blob["put_url"], data=io.BytesIO(tarball())) as answer:
        assert answer.status == 200, await answer.text()
    return str(blob["get_url"])


async def new_work(api: Api, source_url: str) -> dict[str, Answer]:
    """Each kind of new work the mark guards, tried once: the answers by kind."""
    build = await api.post("/apps/hello/builds", {"source_blob": {"url": source_url}})
    return {
        "build": build,
        "source": await api.post("/sources"),
        "app source": await api.post("/apps/hello/sources"),
        "add-on": await api.post("/apps/hello/addons", {"plan": "postgresql"}),
    }


def refused_for_disk(answer: Answer, folder: Path) -> None:
    assert answer.status == 507, (answer.status, answer.body)
    assert answer.error_id == "insufficient_storage"
    message = answer.body["message"]
    assert "% full (mark 90 %)" in message, message
    assert "SLIPWAY_DISK_HIGH_WATER" in message and "nothing is pruned" in message
    assert str(folder.parent) in message  # names the folder that is full


async def test_new_work_refused_above_the_mark_and_accepted_below(
    stack_on_loopfs: Stack, loopfs: LoopFs
) -> None:
    """At ~93 % a build, a source and an add-on get 507 naming the folder; config and reads
    still work; once space is freed they are accepted again."""
    stack = stack_on_loopfs
    admin = stack.admin
    await stack.app(admin, "hello")
    await admin.ok("PATCH", "/apps/hello/config-vars", {"K": "before"})
    source_url = await upload(stack, admin)

    reached = loopfs.fill_to(93)
    assert reached >= 90

    async def refused() -> None:
        answers = await new_work(admin, source_url)
        for answer in answers.values():
            refused_for_disk(answer, stack.home / "x")

    await assert_eventually(refused, timeout=20)
    # Everything that is not new work keeps working above the mark.
    await admin.ok("PATCH", "/apps/hello/config-vars", {"K": "during"})
    assert (await admin.ok("GET", "/apps/hello/config-vars"))["K"] == "during"
    assert len(await admin.ok("GET", "/apps/hello/releases")) == 3

    loopfs.free()

    async def accepted() -> None:
        answer = await admin.post("/apps/hello/sources")
        assert answer.status == 201, answer.body

    await assert_eventually(accepted, timeout=20)
    answers = await new_work(admin, await upload(stack, admin))
    assert answers["build"].status == 201, answers["build"].body
    assert answers["source"].status == 201
    assert answers["add-on"].status == 202, answers["add-on"].body


async def test_git_push_refused_with_one_remote_line(
    stack_on_loopfs: Stack, loopfs: LoopFs, tmp_path: Path
) -> None:
    """Above the mark `git push` fails, and git shows why as a `remote:` line."""
    stack = stack_on_loopfs
    await stack.app(stack.admin, "hello")
    tree = await work_tree(tmp_path / "tree", {"Procfile": "web: python -m http.server\n"})
    loopfs.fill_to(93)

    async def gateway_knows() -> None:
        assert (await stack.admin.post("/apps/hello/sources")).status == 507

    await assert_eventually(gateway_knows, timeout=20)  # the watchers' readings are in
    run = await git(tree, "push", push_url(stack.url, "hello", stack.admin.token), "main")
    assert run.code != 0, run.out
    out = run.out
    assert "remote: Cannot push (a push starts a build):" in out, out
    remote = [line for line in out.splitlines() if line.startswith("remote:")]
    assert len(remote) == 1, out
    assert "% full (mark 90 %)" in remote[0] and "nothing is pruned" in remote[0]


async def test_crossing_the_mark_is_an_event_both_ways(
    stack_on_loopfs: Stack, loopfs: LoopFs
) -> None:
    """Going above the mark and back below each publish slipway.evt.disk.pressure.changed."""
    stack = stack_on_loopfs
    loopfs.fill_to(93)

    async def crossed(above: bool) -> list[dict[str, Any]]:
        events = await domain_events(stack.bus, "disk")
        mine = [e for e in events if e["path"] == str(stack.home / "gateway")]
        assert [e["above"] for e in mine][-1:] == [above], mine
        return mine

    up = (await assert_eventually(lambda: crossed(True), timeout=20))[-1]
    assert up["type"] == "disk.pressure.changed.v1"
    assert (up["service"], up["label"], up["mark"]) == ("gateway", "state folder", 90.0)
    assert up["used_percent"] >= 90
    loopfs.free()
    down = (await assert_eventually(lambda: crossed(False), timeout=20))[-1]
    assert down["used_percent"] < 90


def test_a_stale_reading_above_the_mark_still_refuses() -> None:
    """A reading that stopped coming is unknown, never taken for fine: still refused."""
    pressure = DiskPressure(mark=90)
    reading = disk.DiskReading(
        label="state folder", path="/srv/builder", total_bytes=100, free_bytes=5, used_percent=95
    )
    long_ago = time.time() - 60
    pressure.record(
        disk.DiskReadings(service="builder", instance="a", interval=1.0, readings=[reading]),
        now=long_ago,
    )
    assert [s.reading.path for s in pressure.unknown()] == ["/srv/builder"]
    with pytest.raises(InsufficientStorage, match=r"builder's state folder /srv/builder is 95 %"):
        pressure.refuse_new_work("start a build")
    with pytest.raises(InsufficientStorage, match=r"last reading \d+ s ago"):
        pressure.refuse_new_work("start a build")
