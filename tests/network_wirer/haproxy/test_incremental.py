"""A pass over the changed apps only ends where a whole pass would, through a real HAProxy."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from slipway.services.network_wirer.haproxy.reconcile import (
    Running,
    desired_layout,
    plan_changes,
)
from slipway.services.network_wirer.routes import AppRoute, Upstream
from tests.conftest import assert_eventually
from tests.network_wirer.haproxy.conftest import Dynos, HAProxyRouter, route

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pool_size() -> int:
    return 64  # room for every app of the test: no reload, so every pass may be incremental


def _change(rng: random.Random, apps: dict[str, AppRoute], web: list[Upstream], step: int) -> None:
    """One random change like network-wirer sees: an app created, destroyed, scaled, its
    release replaced, a domain added, moved to another app or removed, maintenance."""
    names = sorted(apps)
    name = rng.choice(names) if names else ""
    kind = rng.choice(["create", "destroy", "scale", "release", "domain", "move", "maint"])
    if kind == "create" or not names:
        new = f"app{step}"
        apps[new] = route(new, rng.choice(web))
    elif kind == "destroy":
        del apps[name]
    elif kind == "scale":
        apps[name] = route(name, *rng.sample(web, rng.randint(0, 2)), hosts=apps[name].hosts[1:])
    elif kind == "release":
        apps[name] = route(name, rng.choice(web), hosts=apps[name].hosts[1:])
    elif kind == "domain":
        apps[name] = route(name, *apps[name].upstreams, hosts=(f"www{step}.example.com",))
    elif kind == "move" and len(names) > 1:
        # A custom domain leaves one app for another (both change in one pass).
        other = rng.choice([n for n in names if n != name])
        domains = apps[name].hosts[1:]
        apps[name] = route(name, *apps[name].upstreams)
        apps[other] = route(other, *apps[other].upstreams, hosts=(*apps[other].hosts[1:], *domains))
    else:
        apps[name] = route(
            name, *apps[name].upstreams, hosts=apps[name].hosts[1:], maintenance=True
        )


async def _busy(haproxy: HAProxyRouter) -> None:
    servers = await haproxy.reconciler.runtime.show_servers()
    assert any(s.sessions for s in servers)


def _servers(running: Running) -> set[tuple[str, str, bool]]:
    return {(s.backend, s.name, s.in_maintenance) for s in running.servers}


async def test_each_changed_only_pass_leaves_nothing_for_a_whole_pass(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """After each of 120 random changes, HAProxy read back in full holds what a whole pass
    wants and what the reconciler believes; the last apps answer from the right dyno."""
    rng = random.Random(16)
    web = [await dynos.start(f"web.{i}") for i in range(1, 4)]
    apps = {f"base{i}": route(f"base{i}", web[i % 3]) for i in range(20)}
    reconciler = haproxy.reconciler
    await reconciler.reconcile(apps.values())
    in_flight: list[asyncio.Task[Any]] = []
    for step in range(120):
        if step % 15 == 0:
            # A slow request on an app whose release is then replaced: its old server
            # drains across the next passes, most of which are about other apps.
            up = next(a for a in apps.values() if a.upstreams and not a.maintenance)
            in_flight.append(asyncio.create_task(haproxy.get(up.hosts[0], "/sleep?s=0.3")))
            await assert_eventually(partial(_busy, haproxy))
            apps[up.app_name] = route(up.app_name, rng.choice(web), hosts=up.hosts[1:])
        else:
            _change(rng, apps, web, step)
        outcome = await reconciler.reconcile(apps.values())
        actual = await reconciler.read()
        # HAProxy holds what a whole pass wants, and the reconciler knows it (its next
        # pass starts from that knowledge, not from a read-back); a whole pass would
        # only retry deleting the servers still draining.
        plan = plan_changes(desired_layout(apps.values(), actual), actual)
        assert replace(plan, remove=()).empty, step
        assert set(plan.remove) == set(outcome.draining), step
        view = reconciler.view
        assert view is not None
        assert view.hosts == actual.hosts, step
        assert _servers(view) == _servers(actual), (step, outcome)
    for app in list(apps.values())[-5:]:
        status, body, _ = await haproxy.get(app.hosts[0])
        if app.maintenance or not app.upstreams:
            assert status == 503
        else:
            assert status == 200
            assert json.loads(body)["dyno"] in {u.dyno for u in app.upstreams}
    assert [(await task)[0] for task in in_flight] == [200] * len(in_flight)
    assert reconciler.reloads == 0
    # Most passes took the short way (the rest were cases it leaves to a whole pass).
    assert reconciler.partial_passes > 60, reconciler.partial_passes
