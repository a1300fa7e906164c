"""The backup service reads the streams for a snapshot, and can do nothing else to them.

Its grant (libs/natsauth.py SNAPSHOT_READS) is read-only; a grant widened to changing,
deleting or purging streams or consumers, or to every service, fails these tests.
"""

from __future__ import annotations

import pytest

from slipway.contracts import subjects
from slipway.contracts.gateway import APP_CREATED
from slipway.contracts.subjects import OPERATOR, Service
from slipway.libs.bus.provision import declared_consumers
from slipway.libs.snapshot import streams
from tests.conftest import assert_eventually
from tests.security.bus.conftest import Connect, lowered

pytestmark = pytest.mark.integration

BACKUP = str(Service.BACKUP)
STREAMS = (subjects.STREAM_CMD, subjects.STREAM_EVT, subjects.STREAM_DLQ)
READS = {
    f"$JS.API.{verb}.{stream}"
    for stream in (subjects.STREAM_CMD, subjects.STREAM_EVT)
    for verb in ("STREAM.INFO", "CONSUMER.LIST", "STREAM.MSG.GET")
}


def _changes() -> set[str]:
    """Every JetStream API call that would change a stream or a consumer, or read around them."""
    found = {"$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.NAMES"}
    found.add("$JS.API.STREAM.CREATE.MINE")
    for stream in STREAMS:
        for verb in ("CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE"):
            found.add(f"$JS.API.STREAM.{verb}.{stream}")
        found.add(f"$JS.API.DIRECT.GET.{stream}")
        found.add(f"$JS.API.CONSUMER.CREATE.{stream}")
        found.add(f"$JS.API.CONSUMER.CREATE.{stream}.mine")
        found.add(f"$JS.API.CONSUMER.NAMES.{stream}")
    # The dead letters are not part of a snapshot: not even read.
    for verb in ("INFO", "MSG.GET"):
        found.add(f"$JS.API.STREAM.{verb}.{subjects.STREAM_DLQ}")
    found.add(f"$JS.API.CONSUMER.LIST.{subjects.STREAM_DLQ}")
    for stream, config in declared_consumers():
        durable = config.durable_name
        found.add(f"$JS.API.CONSUMER.DELETE.{stream}.{durable}")
        found.add(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}")
        found.add(f"$JS.API.CONSUMER.CREATE.{stream}.{durable}")
    return found


async def test_the_backup_user_reads_the_streams_but_cannot_change_them(
    connect_as: Connect,
) -> None:
    """As backup: a dump works; create, update, delete, purge, consumer changes are refused."""
    operator = await connect_as(OPERATOR)
    await operator.nc.jetstream().publish(APP_CREATED.subject, b"{}")
    await operator.nc.jetstream().publish(subjects.cmd(Service.BUILDER, "build"), b"{}")
    backup = await connect_as(BACKUP)
    attempts = _changes()
    for subject in sorted(attempts):
        await backup.nc.publish(subject, b"{}", reply=backup.nc.new_inbox())

    def refused() -> None:
        assert backup.refusals.published() == lowered(attempts)

    await assert_eventually(refused)
    data = await streams.dump(backup.nc)
    assert len(data.splitlines()) == 3  # the header, the event, the command
    for stream in (subjects.STREAM_CMD, subjects.STREAM_EVT):
        assert (await operator.nc.jetstream().stream_info(stream)).state.messages == 1
    assert len(await operator.nc.jetstream().consumers_info(subjects.STREAM_EVT)) == len(
        [c for s, c in declared_consumers() if s == subjects.STREAM_EVT]
    )


@pytest.mark.parametrize("service", [str(s) for s in Service if s != Service.BACKUP])
async def test_no_other_service_reads_the_streams_directly(
    connect_as: Connect, service: str
) -> None:
    """Reading messages by sequence, stream state or consumer lists: refused to all but backup.

    The monitor alone may read a stream's state (its counts, test_monitor_grants.py)."""
    client = await connect_as(service)
    reads = READS
    if service == Service.MONITOR:
        reads = {r for r in READS if ".STREAM.INFO." not in r}
    for subject in sorted(reads):
        await client.nc.publish(subject, b'{"seq": 1}', reply=client.nc.new_inbox())

    def refused() -> None:
        assert client.refusals.published() == lowered(reads)

    await assert_eventually(refused)
