"""The monitor reads every consumer's position and every service's discovery, nothing else.

Its grant (libs/natsauth.py `monitor_read_subjects`) is read-only: a grant widened to
fetching, acking, creating, deleting or reading messages fails these tests.
"""

from __future__ import annotations

import json

import pytest

from slipway.contracts import subjects
from slipway.contracts.gateway import APP_CREATED
from slipway.contracts.subjects import OPERATOR, Service
from slipway.libs import natsauth
from slipway.libs.bus.provision import declared_consumers
from tests.conftest import assert_eventually
from tests.security.bus.conftest import Connect, lowered

pytestmark = pytest.mark.integration

MONITOR = str(Service.MONITOR)
STREAMS = (subjects.STREAM_CMD, subjects.STREAM_EVT, subjects.STREAM_DLQ)


def _changes_and_reads() -> set[str]:
    """Every JetStream call that changes a stream or consumer, takes or reads a message."""
    found = {"$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.NAMES"}
    for stream in STREAMS:
        for verb in ("CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE", "MSG.GET"):
            found.add(f"$JS.API.STREAM.{verb}.{stream}")
        found.add(f"$JS.API.DIRECT.GET.{stream}")
        found.add(f"$JS.API.CONSUMER.CREATE.{stream}")
        found.add(f"$JS.API.CONSUMER.LIST.{stream}")
    for stream, config in declared_consumers():
        durable = str(config.durable_name)
        for verb in ("DELETE", "DURABLE.CREATE", "CREATE"):
            found.add(f"$JS.API.CONSUMER.{verb}.{stream}.{durable}")
        if not durable.startswith(f"{MONITOR}-"):  # its own it fetches from and acks
            found.add(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")
            found.add(f"$JS.ACK.{stream}.{durable}.1.1.1.1.0")
    return found


async def test_the_monitor_reads_positions_but_cannot_take_or_change_anything(
    connect_as: Connect,
) -> None:
    """As monitor: consumer and stream info answer; pulls, acks, changes, reads are refused."""
    operator = await connect_as(OPERATOR)
    await operator.nc.jetstream().publish(APP_CREATED.subject, b"{}")
    monitor = await connect_as(MONITOR)
    stream, config = next(iter(declared_consumers()))
    names = await monitor.nc.request(f"$JS.API.CONSUMER.NAMES.{stream}", b"{}", timeout=5)
    assert config.durable_name in json.loads(names.data)["consumers"]
    info = await monitor.nc.request(
        f"$JS.API.CONSUMER.INFO.{stream}.{config.durable_name}", b"", timeout=5
    )
    assert "num_pending" in json.loads(info.data)
    attempts = _changes_and_reads()
    for subject in sorted(attempts):
        await monitor.nc.publish(subject, b"{}", reply=monitor.nc.new_inbox())

    def refused() -> None:
        assert monitor.refusals.published() == lowered(attempts)

    await assert_eventually(refused)
    evt = await operator.nc.jetstream().stream_info(subjects.STREAM_EVT)
    assert evt.state.messages == 1


async def test_services_answer_the_monitors_discovery_but_nobody_elses(
    connect_as: Connect,
) -> None:
    """A service may reply into the monitor's inbox (discovery), not into another service's."""
    keyring = await connect_as(str(Service.KEYRING))
    allowed = f"{subjects.inbox_prefix(Service.MONITOR)}.x"
    answers = natsauth.permissions(str(Service.KEYRING)).publish
    stranger = next(s for s in Service if f"{subjects.inbox_prefix(s)}.>" not in answers)
    denied = f"{subjects.inbox_prefix(stranger)}.x"
    await keyring.nc.publish(allowed, b"{}")
    await keyring.nc.publish(denied, b"{}")

    def refused() -> None:
        assert keyring.refusals.published() == lowered({denied})

    await assert_eventually(refused)
