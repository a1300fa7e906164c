"""The must-show test of issue #18: the compose deployment with no single instance (two
gateways behind the API's load balancer, two keyrings, two schedulers, three builders,
three nats-server nodes) keeps its promises while a node and the leading gateway die.

- an app keeps answering 200 through the router from its first deploy to the end;
- three pushes at once are built by three different builders;
- a push during which a nats-server node and the leading gateway are killed completes or
  fails as git says, and a retry deploys the new version;
- every config change the API acknowledged meanwhile is there afterwards, with its release
  and its `release.created` event in the EVT stream: counted and printed.

It also prints how long the API was out through the load balancer after the leader died.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from slipway.contracts.builder import BuildFinished
from slipway.contracts.gateway import ReleaseCreated
from slipway.contracts.subjects import STREAM_EVT, evt
from tests.compose.deployed import (
    NODES,
    Deployment,
    deployed,
    destroy_apps,
    gateway_roles,
    instances,
    status,
)
from tests.conftest import assert_eventually
from tests.gateway.gitclient import git, git_env, push_url

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.docker,
    # Five builds (three at once) on two cores, a failover and the recovery.
    pytest.mark.timeout(1500),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node-hello"
# A push that has not ended by then hangs: that is a failure, not a slow build.
PUSH_TIMEOUT = 420.0
# Answers that say "retry": the balancer with no leader to send to (503), a gateway that
# died under a request (502), a timeout (504); connection errors likewise.
RETRYABLE = {502, 503, 504}
KILLED_NODE = NODES[1]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Three builders from the first start, each taking one build at a time, so that
    three builds at once need all three."""
    with deployed(tmp_path_factory, "--scale", "builder=3", BUILDER_CONCURRENCY="1") as made:
        yield made


@dataclass
class Prober:
    """Asks the router for an app every ~100 ms and counts the answers that are not 200."""

    deployment: Deployment
    app: str
    total: int = 0
    failures: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prober")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        headers = {"Host": f"{self.app}.localhost"}
        async with aiohttp.ClientSession(timeout=timeout) as anonymous:
            while not self._stop.is_set():
                self.total += 1
                try:
                    async with anonymous.get(self.deployment.router, headers=headers) as answer:
                        if answer.status != 200:
                            text = (await answer.text())[:120]
                            self.failures.append(f"{time.strftime('%T')} {answer.status} {text}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.failures.append(f"{time.strftime('%T')} {exc!r}")
                await asyncio.sleep(0.1)


@dataclass
class ConfigClient:
    """Sets config vars one change after another, as a client would: each change retried
    with the same value while the API says to retry, until it is acknowledged (2xx)."""

    session: aiohttp.ClientSession
    url: str
    sent: int = 0  # requests made, retries included
    acked: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # answers that are not "retry"
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="config-client")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop after the change in flight is acknowledged."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def wait_acked(self, count: int, timeout: float = 120.0) -> None:
        async def enough() -> None:
            assert self._task is not None and not self._task.done(), self.refused
            assert len(self.acked) >= count, (len(self.acked), self.refused)

        await assert_eventually(enough, timeout=timeout, interval=0.2)

    async def _run(self) -> None:
        change = 0
        while not self._stop.is_set():
            change += 1
            await self._until_acked(change)
            await asyncio.sleep(0.2)

    async def _until_acked(self, change: int) -> None:
        # A key of its own per change (each must survive) and LAST (the latest must win).
        body = {f"C{change}": str(change), "LAST": str(change)}
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline:
            self.sent += 1
            try:
                async with self.session.patch(self.url, json=body) as answer:
                    if 200 <= answer.status < 300:
                        self.acked.append(change)
                        return
                    if answer.status not in RETRYABLE:
                        self.refused.append(f"C{change}: {answer.status} {await answer.text()}")
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass  # no answer: it may or may not have happened; the same value again
            await asyncio.sleep(0.2)
        self.refused.append(f"C{change}: no acknowledgement within 120 s")


async def _bounded_git(cwd: Path, *args: str) -> tuple[int, str]:
    """git `args` in `cwd`; killed, and the test failed, if it has not ended in PUSH_TIMEOUT."""
    process = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "credential.helper=",
        *args,
        cwd=cwd,
        env=git_env(cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), PUSH_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"git {args[0]} in {cwd} hung for {PUSH_TIMEOUT} s") from None
    return process.returncode or 0, out.decode(errors="replace")


async def _new_app(session: aiohttp.ClientSession, deployment: Deployment) -> tuple[str, str]:
    name = f"x{uuid.uuid4().hex[:10]}"
    async with session.post(f"{deployment.api}/apps", json={"name": name}) as response:
        assert response.status == 201, await response.text()
        return name, (await response.json())["id"]


async def _work_tree(path: Path) -> Path:
    shutil.copytree(EXAMPLE, path)
    await git(path, "init", "-q", "-b", "main")
    await git(path, "add", "-A")
    assert (await git(path, "commit", "-q", "-m", "hello")).code == 0
    return path


async def _push(deployment: Deployment, tree: Path, app: str) -> tuple[int, str]:
    return await _bounded_git(tree, "push", push_url(deployment.api, app, deployment.token), "main")


async def _serves(deployment: Deployment, app: str, text: str) -> None:
    async def answers() -> None:
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.get(deployment.router, headers={"Host": f"{app}.localhost"}) as answer,
        ):
            assert answer.status == 200, (answer.status, await answer.text())
            assert text in await answer.text()

    await assert_eventually(answers, timeout=180, interval=1.0)


async def _builds(session: aiohttp.ClientSession, deployment: Deployment, app: str) -> list[Any]:
    async with session.get(f"{deployment.api}/apps/{app}/builds") as response:
        assert response.status == 200, await response.text()
        builds: list[Any] = await response.json()
        return builds


async def _docker(*args: str) -> None:
    done = await asyncio.to_thread(
        subprocess.run, ["docker", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, (args, done.stderr)


async def _first_api_answer(session: aiohttp.ClientSession, deployment: Deployment) -> float:
    """Seconds until the API answers a request with 2xx (through the load balancer)."""
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=5)
    while time.monotonic() - started < 120:
        try:
            async with session.get(f"{deployment.api}/account", timeout=timeout) as answer:
                if 200 <= answer.status < 300:
                    return time.monotonic() - started
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the API did not answer 2xx within 120 s of the leader's death")


async def _events(deployment: Deployment, subject: str) -> list[bytes]:
    """Every event on `subject` in the EVT stream, read as the operator."""
    bus = await deployment.operator_bus()
    try:
        js = bus.jetstream()
        info = await js.stream_info(STREAM_EVT)
        subscription = await js.subscribe(subject, ordered_consumer=True, stream=STREAM_EVT)
        found: list[bytes] = []
        # Read to the stream's last sequence as it was when we looked: all there is.
        while True:
            try:
                msg = await subscription.next_msg(timeout=3)
            except TimeoutError:
                break
            found.append(msg.data)
            if msg.metadata.sequence.stream >= info.state.last_seq:
                break
        await subscription.unsubscribe()
        return found
    finally:
        await bus.close()


async def _releases(
    session: aiohttp.ClientSession, deployment: Deployment, app: str
) -> list[dict[str, Any]]:
    headers = {"Range": "version ..; max=1000"}
    async with session.get(f"{deployment.api}/apps/{app}/releases", headers=headers) as response:
        assert response.status in (200, 206), await response.text()
        releases: list[dict[str, Any]] = await response.json()
        assert "Next-Range" not in response.headers
        return releases


async def test_no_acknowledged_change_is_lost_and_the_app_keeps_answering_through_chaos(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A node and the leading gateway killed during a push: the app answers throughout,
    three builds run on three builders, the push fails cleanly or completes and a retry
    deploys, and every acknowledged config change has its value, release and event."""
    made: dict[str, str] = {}
    prober: Prober | None = None
    client: ConfigClient | None = None
    stopped: list[str] = []
    try:
        async with deployment.session() as session:

            async def ready() -> None:
                seen = await status(session, deployment)
                assert instances(seen, "builder") == 3, seen["instances"]
                roles = sorted(role for role, _ in (await gateway_roles(deployment)).values())
                assert roles == ["leader", "standby"], roles

            await assert_eventually(ready, timeout=120, interval=1.0)
            for service in ("keyring", "scheduler"):
                assert len(await asyncio.to_thread(deployment.containers, service)) == 2

            # An app, deployed and answering; probed from now on.
            app, app_id = await _new_app(session, deployment)
            made[app] = app_id
            tree = await _work_tree(tmp_path / app)
            code, out = await _push(deployment, tree, app)
            assert code == 0, out
            await _serves(deployment, app, "Hello from node-hello")
            prober = Prober(deployment, app)
            prober.start()

            # Three pushes at once.
            three = [await _new_app(session, deployment) for _ in range(3)]
            made.update(three)
            trees = [await _work_tree(tmp_path / name) for name, _ in three]
            pushes = await asyncio.gather(
                *(_push(deployment, t, name) for t, (name, _) in zip(trees, three, strict=True))
            )
            for code, out in pushes:
                assert code == 0, out
                assert "remote: -----> Released v2" in out, out

            # Config changes through the load balancer, from now to the end.
            config_app, config_app_id = await _new_app(session, deployment)
            made[config_app] = config_app_id
            releases_before = len(await _releases(session, deployment, config_app))
            client = ConfigClient(session, f"{deployment.api}/apps/{config_app}/config-vars")
            client.start()
            await client.wait_acked(3)

            # A new version pushed; while it builds, a node and the leading gateway die.
            server = tree / "server.js"
            server.write_text(server.read_text().replace("Hello from", "Hello v2 from"))
            assert (await git(tree, "commit", "-q", "-am", "v2")).code == 0
            before = {build["id"] for build in await _builds(session, deployment, app)}
            roles = await gateway_roles(deployment)
            leader = next(c for c, (role, _) in roles.items() if role == "leader")
            node = (await asyncio.to_thread(deployment.containers, KILLED_NODE))[0]
            push = asyncio.create_task(_push(deployment, tree, app))

            async def building() -> None:
                builds = await _builds(session, deployment, app)
                assert any(b["id"] not in before and b["status"] == "pending" for b in builds)

            await assert_eventually(building, timeout=120, interval=0.2)
            # Both at once: a cached build takes seconds.
            assert not push.done(), "the push ended before the kill: the chaos would miss it"
            stopped.extend([node, leader])
            await _docker("kill", node, leader)
            failover = await _first_api_answer(session, deployment)
            print(f"\nfailover through the load balancer: first 2xx {failover:.2f} s after kill")

            code, out = await push
            retried = code != 0
            if retried:
                # Cut off with the gateway that received it: git says so and ends.
                assert "error" in out or "fatal" in out, out
                print("the push under chaos failed cleanly:", *out.splitlines()[-6:], sep="\n  ")
                assert (await git(tree, "commit", "-q", "--allow-empty", "-m", "retry")).code == 0
                code, out = await _push(deployment, tree, app)
                assert code == 0, out
            await _serves(deployment, app, "Hello v2 from node-hello")

            # Whole again: the node and the gateway back (the gateway as standby).
            for container in stopped:
                await _docker("start", container)

            async def whole() -> None:
                roles = sorted(role for role, _ in (await gateway_roles(deployment)).values())
                assert roles == ["leader", "standby"], roles

            await assert_eventually(whole, timeout=120, interval=1.0)
            await client.wait_acked(len(client.acked) + 3)
            await client.stop()
            await prober.stop()

            # Count: every acknowledged change, its release and its event.
            async with session.get(client.url) as response:
                config: dict[str, str] = await response.json()
            releases = await _releases(session, deployment, config_app)
            created = [
                msgspec.json.decode(data, type=ReleaseCreated)
                for data in await _events(deployment, evt("release", "created"))
            ]
            finished = [
                msgspec.json.decode(data, type=BuildFinished)
                for data in await _events(deployment, evt("build", "finished"))
            ]
    finally:
        # Stopped before their session closes (a failure above leaves them running).
        if client is not None:
            client.cancel()
        if prober is not None:
            await prober.stop()
        for container in stopped:
            await asyncio.to_thread(
                subprocess.run, ["docker", "start", container], capture_output=True, check=False
            )
        await destroy_apps(deployment, made)

    acked = client.acked
    present = [c for c in acked if config.get(f"C{c}") == str(c)]
    descriptions = [r["description"] for r in releases[releases_before:]]
    with_release = [c for c in acked if f"Set C{c}, LAST config vars" in descriptions]
    versions = sorted(r["version"] for r in releases)
    event_versions = sorted(e.version for e in created if e.app_id == config_app_id)
    builders = {e.app_id: e.builder for e in finished if e.status == "succeeded"}
    three_builders = {builders.get(app_id, "") for _, app_id in three}
    print(
        f"prober: {prober.total} requests to the app through the router,"
        f" {len(prober.failures)} not 200"
    )
    print(f"three pushes at once built by: {sorted(three_builders)}")
    print(f"push under chaos: {'failed, retried and deployed' if retried else 'completed'}")
    print(
        f"config changes: {client.sent} requests, {len(acked)} acknowledged,"
        f" {len(present)} present, last acknowledged C{acked[-1]} LAST={config.get('LAST')},"
        f" {len(with_release)} with their release ({len(descriptions)} releases made),"
        f" {len(event_versions)} release.created events for {len(versions)} releases"
    )
    assert prober.failures == [], prober.failures[:20]
    assert client.refused == []
    assert len(three_builders) == 3 and "" not in three_builders, builders
    assert present == acked
    assert config["LAST"] == str(acked[-1])
    assert with_release == acked
    assert event_versions == versions
