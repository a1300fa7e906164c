"""Fixtures shared by the whole suite: a real nats-server per test, unique names, waiting."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

import pytest

from slipway.contracts.scheduler import LABEL_MANAGED
from slipway.contracts.scope import Scope
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer

T = TypeVar("T")


# Every scope the suite runs an installation in starts with this (contracts/scope.py):
# what the suite made is told apart from `scripts/up`'s (the default scope) by it.
TEST_SCOPE_PREFIX = "tst"


# The scopes this pytest process handed out: its end-of-run sweep touches only their
# networks, so two pytest processes on one engine (parallel workers, a helper's targeted
# run beside CI) never remove each other's app networks between a create and a dyno.
MADE_SCOPES: set[str] = set()


def new_scope() -> Scope:
    """A scope of its own: its names, labels, chain and pool meet no other installation's."""
    scope = Scope(f"{TEST_SCOPE_PREFIX}{uuid.uuid4().hex[:7]}")
    MADE_SCOPES.add(scope.managed)
    return scope


@pytest.fixture
def scope() -> Scope:
    """This test's own scope (`new_scope`)."""
    return new_scope()


def remove_scope_objects(scope: Scope, url: str = "unix:///var/run/docker.sock") -> None:
    """Remove the containers, then the networks, of one test scope on one engine."""
    assert scope.name.startswith(TEST_SCOPE_PREFIX), scope  # never an installation's
    for kind, rm in ((["ps", "-aq"], ["rm", "-f"]), (["network", "ls", "-q"], ["network", "rm"])):
        ids = subprocess.run(
            ["docker", "-H", url, *kind, "--filter", f"label={scope.managed_label}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "-H", url, *rm, *ids], capture_output=True, check=False)


@pytest.fixture(scope="session", autouse=True)
def remove_empty_app_networks() -> Iterator[None]:
    """Empty app networks of the scopes this run made are removed at its end.

    Tests create apps whose dynos make app networks; each holds a subnet, and an engine
    has room for a limited number. Only networks of this process's scopes (`MADE_SCOPES`)
    are looked at: a `scripts/up` on the same engine, or another pytest run, keeps its own.
    """
    started = datetime.datetime.now(datetime.UTC)
    yield
    if shutil.which("docker") is None:
        return
    listed = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label={LABEL_MANAGED}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if not listed:
        return
    inspected = subprocess.run(
        ["docker", "network", "inspect", *listed], capture_output=True, text=True, check=False
    )
    for network in json.loads(inspected.stdout or "[]"):
        managed = (network.get("Labels") or {}).get(LABEL_MANAGED, "")
        created = datetime.datetime.fromisoformat(network["Created"][:26].rstrip("Z") + "+00:00")
        if managed in MADE_SCOPES and created >= started and not network.get("Containers"):
            subprocess.run(["docker", "network", "rm", network["Id"]], capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def dyno_init_built() -> None:
    """Every dyno starts through the init of this source tree: built once if missing."""
    from slipway.services.scheduler.settings import built_init

    if not built_init().exists() and shutil.which("docker") is not None:
        root = Path(__file__).resolve().parents[1]
        subprocess.run(["bash", str(root / "scripts" / "build-init")], check=True)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on disk, on a free loopback port, for one test."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def bus_factory(nats_server: NatsServer) -> AsyncIterator[Callable[[str], Awaitable[Bus]]]:
    """Connect buses as any service; all are closed at the end of the test."""
    buses: list[Bus] = []

    async def connect(service: str) -> Bus:
        bus = await Bus.connect(nats_server.url, service)
        await bus.ensure_streams()
        buses.append(bus)
        return bus

    yield connect
    for bus in buses:
        await bus.close()


@pytest.fixture
def unique() -> str:
    """A short unique token for subjects and names, so tests never collide."""
    return uuid.uuid4().hex[:10]


@overload
async def assert_eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05
) -> T: ...
@overload
async def assert_eventually(
    check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05
) -> T: ...
async def assert_eventually(
    check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Retry `check` until it stops raising AssertionError (no bare sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(interval)


@pytest.fixture
def hardened(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with one user per service, its streams and consumers provisioned."""
    server = NatsServer(tmp_path / "nats", hardened=True)
    server.start()
    yield server
    server.stop()
