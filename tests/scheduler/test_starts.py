"""Dynos a host would not start (starts.py): counts, cool-off, backoff, and placement's avoid.

Pure values, no servers: `StartTrouble` with a clock the test moves, and
`placement.plan` with a formation that avoids hosts.
"""

from __future__ import annotations

import msgspec

from slipway.contracts.gateway import DYNO_SIZES
from slipway.services.scheduler import starts
from slipway.services.scheduler.containers import DynoSpec
from slipway.services.scheduler.model import (
    ClusterState,
    DesiredFormation,
    Dyno,
    Host,
    HostState,
    ProcessSpec,
)
from slipway.services.scheduler.placement import plan
from slipway.services.scheduler.starts import PULL, StartTrouble

SMALL = DYNO_SIZES["standard-1x"]


def spec(host_id: str, name: str = "web.4", app: str = "a1") -> DynoSpec:
    kind, index = name.split(".")
    return DynoSpec(
        app_id=app,
        app_name="hello",
        team_id="t",
        release=3,
        process_type=kind,
        index=int(index),
        size="standard-1x",
        image="registry.test:5000/apps/a1@sha256:00",
        command="python3 app.py",
        host_id=host_id,
    )


def trouble() -> StartTrouble:
    return StartTrouble(move_after=3, cooloff=600.0, backoff_base=1.0, backoff_cap=8.0)


def test_a_host_is_avoided_after_three_failed_starts_and_the_move_is_at_once() -> None:
    """Two failures keep the host with a backoff; the third avoids it and moves at once."""
    t = trouble()
    first = t.failed(spec("h2"), PULL, 100.0, elsewhere=True)
    assert first.reason == (
        "Could not start on host h2: its image could not be pulled there"
        " (attempt 1 of 3 there); next attempt in 1 s"
    )
    assert t.wait("a1", "web.4", "h2", 100.0) == 1.0
    assert t.avoided("a1", 100.0) == frozenset()
    second = t.failed(spec("h2"), PULL, 101.0, elsewhere=True)
    assert second.next_attempt == 103.0  # 2 s: the backoff doubles
    third = t.failed(spec("h2"), PULL, 103.0, elsewhere=True)
    assert third.reason == (
        "Could not start on host h2: its image could not be pulled there (3 attempts);"
        " moving it to another host"
    )
    assert t.avoided("a1", 103.0) == {"h2"}
    assert t.wait("a1", "web.4", "main", 103.0) == 0.0
    assert t.moving("a1", "web.4", "main") == (
        "Starting on host main (could not start on host h2: its image could not be pulled there)"
    )


def test_the_cool_off_ends_and_only_that_app_avoids_the_host() -> None:
    """Another app still uses the host; after the cool-off the app may use it again."""
    t = trouble()
    for at in (0.0, 1.0, 2.0):
        t.failed(spec("h2"), PULL, at, elsewhere=True)
    assert t.avoided("a1", 601.0) == {"h2"}
    assert t.avoided("other", 601.0) == frozenset()
    assert t.avoided("a1", 602.0) == frozenset()


def test_with_no_other_host_it_stays_failed_and_retries_with_a_growing_capped_backoff() -> None:
    """No other host: every later failure says so, waits longer, up to the cap."""
    t = trouble()
    waits = []
    now = 0.0
    for _ in range(6):
        record = t.failed(spec("h2"), PULL, now, elsewhere=False)
        waits.append(record.next_attempt - now)
        now = record.next_attempt
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert record.reason == (
        "Could not start on host h2: its image could not be pulled there;"
        " no other host can take it, next attempt in 8 s"
    )
    assert [r.contract().state for r in t.unstarted("a1")] == ["crashed"]
    assert t.unstarted("a1")[0].contract().container_id is None


def test_a_start_that_works_resets_the_count_and_forgets_the_dyno() -> None:
    """Two failures then a success: the next failure there counts from one again."""
    t = trouble()
    t.failed(spec("h2"), PULL, 0.0, elsewhere=True)
    t.failed(spec("h2"), PULL, 1.0, elsewhere=True)
    t.started(spec("h2"))
    assert t.unstarted("a1") == []
    again = t.failed(spec("h2", "web.5"), PULL, 10.0, elsewhere=True)
    assert "(attempt 1 of 3 there)" in again.reason


def test_dynos_scaled_away_are_dropped() -> None:
    """A record whose dyno the formation no longer wants is returned once and gone."""
    t = trouble()
    t.failed(spec("h2", "web.4"), PULL, 0.0, elsewhere=True)
    t.failed(spec("h2", "web.2"), PULL, 0.0, elsewhere=True)
    dropped = t.keep("a1", {"web.1", "web.2", "web.3"})
    assert [r.spec.name for r in dropped] == ["web.4"]
    assert [r.spec.name for r in t.unstarted("a1")] == ["web.2"]


def test_what_the_user_reads_never_holds_the_engine_s_error() -> None:
    """The engine's message (addresses, paths) stays out of the reason and the line."""
    t = trouble()
    refused = starts.StartRefused(PULL, 'Get "https://127.0.0.1:5000/v2/": connection refused')
    record = t.failed(spec("h2"), starts.step_of(refused), 0.0, elsewhere=True)
    assert "127.0.0.1" not in record.reason and "5000" not in record.reason


def _state(*hosts: str, running: tuple[Dyno, ...] = ()) -> ClusterState:
    return ClusterState(
        hosts=tuple(Host(id=h, memory_mb=4096, state=HostState.UP) for h in hosts), dynos=running
    )


def _web(quantity: int, avoid: frozenset[str] = frozenset()) -> DesiredFormation:
    processes = {"web": ProcessSpec(quantity=quantity, size=SMALL)}
    return DesiredFormation(app="a1", release=1, processes=processes, avoid=avoid)


def test_placement_puts_no_new_dyno_on_an_avoided_host_while_another_has_room() -> None:
    """Spread would send web.2 to the empty h2; avoided, it joins web.1 on main."""
    running = (Dyno(app="a1", release=1, process_type="web", index=1, size=SMALL, host_id="main"),)
    planned = plan(_state("h2", "main", running=running), [_web(2, frozenset({"h2"}))])
    assert [(s.dyno.name, s.dyno.host_id) for s in planned.starts] == [("web.2", "main")]
    unavoided = plan(_state("h2", "main", running=running), [_web(2)])
    assert [(s.dyno.name, s.dyno.host_id) for s in unavoided.starts] == [("web.2", "h2")]


def test_placement_falls_back_to_an_avoided_host_when_no_other_has_room() -> None:
    """Only avoided hosts have room: the dyno goes there rather than nowhere."""
    full = Host(id="main", memory_mb=512, state=HostState.UP)
    state = ClusterState(
        hosts=(full, Host(id="h2", memory_mb=4096, state=HostState.UP)),
        dynos=(Dyno(app="b", release=1, process_type="web", index=1, size=SMALL, host_id="main"),),
    )
    planned = plan(state, [_web(1, frozenset({"h2"}))])
    assert [(s.dyno.name, s.dyno.host_id) for s in planned.starts] == [("web.1", "h2")]
    assert planned.unplaceable == ()


def test_avoid_is_a_new_field_with_a_default() -> None:
    """A formation encoded before `avoid` existed still decodes (schema evolution)."""
    old = msgspec.json.encode({"app": "a1", "release": 1, "processes": {}})
    assert msgspec.json.decode(old, type=DesiredFormation).avoid == frozenset()


def test_starts_in_their_backoff_are_held_back_and_a_move_is_not() -> None:
    """On the refusing host web.4 waits its backoff; planned elsewhere it goes at once."""
    t = trouble()
    t.failed(spec("h2"), PULL, 100.0, elsewhere=True)
    on_h2 = plan(_state("h2"), [_web(4)])
    held, due = starts.hold_back(t, "a1", on_h2, 100.5)
    assert sorted(s.dyno.name for s in held.starts) == ["web.1", "web.2", "web.3"]
    assert due == 0.5
    elsewhere = plan(_state("h2", "main"), [_web(4, frozenset({"h2"}))])
    assert starts.hold_back(t, "a1", elsewhere, 100.5) == (elsewhere, None)


def test_the_names_a_formation_wants() -> None:
    """web=2 worker=1: web.1, web.2, worker.1."""
    formation = DesiredFormation(
        app="a1",
        release=1,
        processes={
            "web": ProcessSpec(quantity=2, size=SMALL),
            "worker": ProcessSpec(quantity=1, size=SMALL),
        },
    )
    assert starts.names(formation) == {"web.1", "web.2", "worker.1"}
