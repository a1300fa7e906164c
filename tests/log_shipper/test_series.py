"""Per-app metric series in log-shipper: the minute maths, and buckets that outlive a restart."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.base import encode
from slipway.contracts.log_shipper import (
    METRICS_SERIES_GET,
    RESPONSE_BASE,
    GetMetricSeries,
    SeriesPoint,
    add_counts,
    bucket_bound_ms,
    percentile_ms,
    response_bucket,
)
from slipway.contracts.logs import RouterAccess, router_subject
from slipway.libs.bus import Bus
from slipway.services.log_shipper.app import create_service
from slipway.services.log_shipper.series import Minute, decode_minute, encode_minute, steps
from tests.conftest import assert_eventually
from tests.gateway.conftest import run_in_background, stop
from tests.log_shipper.conftest import ShipperFactory, new_id


def histogram(times_ms: list[float]) -> list[int]:
    minute = Minute()
    for ms in times_ms:
        minute.add_request(200, ms)
    return minute.response_ms


def exact_percentile(times_ms: list[float], fraction: float) -> float:
    ordered = sorted(times_ms)
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


def test_a_response_time_lands_in_the_bucket_bounding_it() -> None:
    """Bucket i holds (BASE**(i-1), BASE**i] ms; up to 1 ms is bucket 0; the slowest stay in."""
    for ms in (1.5, 2.0, 7.0, 100.0, 999.0, 30_000.0):
        index = response_bucket(ms)
        assert bucket_bound_ms(index - 1) < ms <= bucket_bound_ms(index) * (1 + 1e-9)
    assert response_bucket(0) == response_bucket(1) == 0
    assert response_bucket(-5) == response_bucket(float("nan")) == 0
    assert response_bucket(10**9) == response_bucket(10**12)


def test_two_shippers_histograms_merge_to_the_p95_of_all_requests() -> None:
    """Adding two shippers' counts gives the p95 one shipper seeing every request would give."""
    fast = [float(ms) for ms in range(2, 200, 3)]  # what one shipper took
    slow = [float(ms) for ms in range(150, 2500, 40)]  # what the other took
    merged = add_counts(histogram(fast), histogram(slow))
    assert merged == histogram(fast + slow)
    p95 = percentile_ms(merged, 0.95)
    true_p95 = exact_percentile(fast + slow, 0.95)
    assert p95 is not None
    # The bound of the bucket holding the true value: never below it, under a bucket above it.
    assert true_p95 <= p95 < true_p95 * RESPONSE_BASE * 1.001
    # Not the p95 of either shipper alone, nor the mean of their two p95s.
    alone = [percentile_ms(histogram(part), 0.95) for part in (fast, slow)]
    assert p95 not in alone
    assert percentile_ms([], 0.95) is None


def test_cpu_is_each_dynos_mean_over_the_minute_summed_over_dynos() -> None:
    """web.1 at 10, 20, 30 % and web.2 at 50 % in each of three passes: the app used 70 %."""
    minute = Minute()
    for cpu, memory in ((10.0, 100.0), (20.0, 110.0), (30.0, 120.0)):
        minute.add_sample("container-1", cpu, memory, 512.0)
        minute.add_sample("container-2", 50.0, 200.0, 512.0)
        minute.passes += 1
    assert minute.resources() == (70.0, 310.0, 1024.0)


def test_containers_replacing_each_other_in_a_minute_count_as_one_dyno() -> None:
    """A rolling deploy: the old container for two passes, the new one for two: one dyno's quota."""
    minute = Minute()
    for container in ("old", "old", "new", "new"):
        minute.add_sample(container, 10.0, 100.0, 512.0)
        minute.passes += 1
    assert minute.resources() == (10.0, 100.0, 512.0)
    stored = decode_minute(encode_minute(minute))  # and so it stays across a restart
    assert stored.resources() == (10.0, 100.0, 512.0)


def test_a_step_averages_its_measured_minutes_and_adds_its_requests() -> None:
    """Five-minute steps: CPU is the mean of the minutes measured, empty minutes stay out."""
    base = 1_800_000_000  # a multiple of 300
    busy, quiet, only_requests = Minute(), Minute(), Minute()
    busy.add_sample("c", 60.0, 100.0, 512.0)
    busy.add_request(200, 5)
    quiet.add_sample("c", 20.0, 300.0, 512.0)
    quiet.add_request(503, 30_000)
    only_requests.add_request(404, 2)
    folded = steps(
        [(base, busy), (base + 120, quiet), (base + 240, only_requests), (base + 300, Minute())],
        since=base,
        step=300,
    )
    first, second = folded
    assert (first.at, first.cpu_percent, first.memory_mb) == (base, 40.0, 200.0)
    assert (first.requests, first.status_2xx, first.status_4xx, first.status_5xx) == (3, 1, 1, 1)
    assert sum(first.response_ms) == 3
    # A minute that measured nothing: null CPU and memory (not 0), no requests.
    assert second == SeriesPoint(at=base + 300)


def test_a_stored_minute_holds_numbers_only() -> None:
    """The stored form drops the dynos' container ids; decoded, it keeps every number."""
    minute = Minute()
    minute.add_sample("f" * 64, 12.5, 99.0, 512.0)
    minute.add_request(302, 12)
    data = encode_minute(minute)
    assert b"ffff" not in data
    again = decode_minute(data)
    assert again.resources() == minute.resources()
    assert (again.requests, again.status, again.response_ms) == (
        1,
        [0, 1, 0, 0],
        minute.response_ms,
    )


def test_a_reopened_minutes_dynos_count_until_a_new_sample_replaces_them() -> None:
    """After a restart the stored sums stand; the new process's samples then replace them."""
    before = Minute()
    before.add_sample("container-1", 40.0, 100.0, 512.0)
    before.add_request(200, 5)
    reopened = decode_minute(encode_minute(before))
    assert reopened.resources() == (40.0, 100.0, 512.0)
    reopened.add_sample("container-1", 10.0, 90.0, 512.0)
    reopened.add_request(200, 5)
    # Not 50 %: the stored sums have no id to join them with, so they are not added twice.
    assert reopened.resources() == (10.0, 90.0, 512.0)
    assert reopened.requests == 2


def access(app_id: str, at: float, status: int, connect_ms: int, service_ms: int) -> RouterAccess:
    return RouterAccess(
        app_id=app_id,
        timestamp=at,
        method="GET",
        path="/secret-path?token=abc",
        host="hello.example.test",
        request_id="req-7f3a",
        fwd="203.0.113.9",
        dyno="web.1",
        connect_ms=connect_ms,
        service_ms=service_ms,
        status=status,
        bytes=10,
    )


async def read_series(bus: Bus, app_id: str, since: int) -> list[SeriesPoint]:
    found = await bus.gather(
        METRICS_SERIES_GET, GetMetricSeries(app_id=app_id, since=since, step=60), timeout=5.0
    )
    return [p for reply in found.replies.values() for p in reply.points]


def stored_rows(db: Path) -> list[tuple[str, int, bytes]]:
    conn = sqlite3.connect(db)
    try:
        return [(str(a), int(m), bytes(d)) for a, m, d in conn.execute("SELECT * FROM series")]
    finally:
        conn.close()


@pytest.mark.integration
async def test_minutes_survive_a_restart_of_the_log_shipper(
    shipper_settings: ShipperFactory,
    start_shipper: Any,  # brings the keyring up
    bus_factory: Any,
    gateway_bus: Bus,
) -> None:
    """Router records taken before a stop are answered by the next process, stored on stop."""
    # A flush interval longer than the test: only the flush on stop can have stored them.
    settings = shipper_settings(series_flush_interval=3600.0)
    wirer: Bus = await bus_factory("network-wirer")
    app_id = new_id()
    now = time.time()
    last_minute = int(now // 60) * 60 - 60  # closed, but still open to late records
    first = create_service(settings)
    task = await run_in_background(first)
    try:
        for status, connect, service in ((200, 1, 40), (200, 2, 60), (500, 1, 3000)):
            await wirer.live_publish(
                router_subject(app_id),
                encode(access(app_id, last_minute + 5, status, connect, service)),
            )

        async def taken() -> None:
            points = await read_series(gateway_bus, app_id, last_minute)
            assert [p.requests for p in points] == [3], points

        await assert_eventually(taken, timeout=20)
    finally:
        await stop(first, task)
    db = settings.db_path()
    [(stored_app, minute, data)] = [r for r in stored_rows(db) if r[0] == app_id]
    assert (stored_app, minute) == (app_id, last_minute)
    for secret in (b"secret-path", b"hello.example", b"req-7f3a", b"203.0.113", b"web.1"):
        assert secret not in data  # numbers only

    second = create_service(settings)
    task = await run_in_background(second)
    try:
        [point] = await read_series(gateway_bus, app_id, last_minute)
        assert (point.at, point.requests, point.status_2xx, point.status_5xx) == (
            last_minute,
            3,
            2,
            1,
        )
        p50 = percentile_ms(point.response_ms, 0.5)  # of 41, 62 and 3001 ms: 62, bucket-bound
        assert p50 is not None and 62 <= p50 < 62 * RESPONSE_BASE
        assert point.cpu_percent is None  # no dyno of it was sampled here
    finally:
        await stop(second, task)


@pytest.mark.integration
async def test_open_minutes_are_written_every_flush_interval(
    shipper_settings: ShipperFactory, start_shipper: Any, bus_factory: Any
) -> None:
    """Without a stop, a record reaches the database within the flush interval (kill -9 safe)."""
    settings = shipper_settings(series_flush_interval=0.2)
    await start_shipper(settings)
    wirer: Bus = await bus_factory("network-wirer")
    app_id = new_id()
    await wirer.live_publish(router_subject(app_id), encode(access(app_id, time.time(), 204, 1, 1)))

    def stored() -> None:
        rows = [r for r in stored_rows(settings.db_path()) if r[0] == app_id]
        assert len(rows) == 1 and decode_minute(rows[0][2]).requests == 1, rows

    await assert_eventually(stored, timeout=20)


@pytest.mark.integration
async def test_a_record_minutes_late_is_left_out_and_a_day_old_row_pruned(
    shipper_settings: ShipperFactory, start_shipper: Any, bus_factory: Any
) -> None:
    """Memory stays bounded: late or future records find no bucket; rows past a day are pruned."""
    settings = shipper_settings(series_flush_interval=0.2)
    running = await start_shipper(settings)
    app_id = new_id()
    ancient = int(time.time() // 60) * 60 - 25 * 3600
    async with running.shipper.db.transaction() as conn:
        await conn.execute(
            "INSERT INTO series (app_id, minute, data) VALUES (?, ?, ?)",
            (app_id, ancient, encode_minute(Minute(requests=1))),
        )
    wirer: Bus = await bus_factory("network-wirer")
    late = access(app_id, time.time() - 600, 200, 1, 1)
    ahead = access(app_id, time.time() + 3600, 200, 1, 1)  # a clock an hour fast
    current = access(app_id, time.time(), 200, 1, 1)
    for record in (late, ahead, current):
        await wirer.live_publish(router_subject(app_id), encode(record))

    def pruned() -> None:
        rows = [r for r in stored_rows(settings.db_path()) if r[0] == app_id]
        found = [(minute, decode_minute(data).requests) for _, minute, data in rows]
        assert found == [(int(current.timestamp // 60) * 60, 1)], found

    await assert_eventually(pruned, timeout=20)
    assert all(key[1] > time.time() - 600 for key in running.shipper.series.open)


@pytest.mark.integration
async def test_a_destroyed_apps_series_goes_with_it(
    shipper_settings: ShipperFactory, start_shipper: Any, bus_factory: Any, gateway_bus: Bus
) -> None:
    """drop_app (APP_DESTROYED) deletes the app's stored minutes and its open buckets."""
    running = await start_shipper(shipper_settings(series_flush_interval=0.2))
    wirer: Bus = await bus_factory("network-wirer")
    app_id, other = new_id(), new_id()
    for app in (app_id, other):
        await wirer.live_publish(router_subject(app), encode(access(app, time.time(), 200, 1, 1)))
    db = running.shipper.settings.db_path()

    def stored() -> None:
        assert {r[0] for r in stored_rows(db)} >= {app_id, other}

    await assert_eventually(stored, timeout=20)
    await running.shipper.drop_app(app_id)
    assert app_id not in {r[0] for r in stored_rows(db)}
    assert other in {r[0] for r in stored_rows(db)}
    assert not [key for key in running.shipper.series.open if key[0] == app_id]
    # A record of the destroyed app still on its way does not bring a row back.
    for app in (app_id, other):
        await wirer.live_publish(router_subject(app), encode(access(app, time.time(), 200, 1, 1)))

    def other_counted_again() -> None:
        assert sum(decode_minute(d).requests for a, _, d in stored_rows(db) if a == other) == 2

    await assert_eventually(other_counted_again, timeout=20)
    assert app_id not in {r[0] for r in stored_rows(db)}
    assert await read_series(gateway_bus, app_id, int(time.time()) - 3600) == []
