"""No service user administers JetStream, or reads another service's consumer."""

from __future__ import annotations

import pytest

from slipway.contracts import subjects
from slipway.contracts.gateway import APP_CREATED
from slipway.contracts.subjects import OPERATOR, PROVISIONER, Service
from slipway.libs import natsauth
from tests.conftest import assert_eventually
from tests.security.bus.conftest import Connect, lowered

pytestmark = pytest.mark.integration

ALL = [str(s) for s in Service]
STREAMS = (subjects.STREAM_CMD, subjects.STREAM_EVT, subjects.STREAM_DLQ)


def _admin_subjects() -> set[str]:
    """The JetStream API calls that create, change, delete, purge or read streams directly."""
    found = {"$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.NAMES"}
    found.add("$JS.API.STREAM.CREATE.MINE")
    for stream in STREAMS:
        for verb in ("CREATE", "UPDATE", "DELETE", "PURGE", "INFO", "MSG.GET", "MSG.DELETE"):
            found.add(f"$JS.API.STREAM.{verb}.{stream}")
        found.add(f"$JS.API.DIRECT.GET.{stream}")
        found.add(f"$JS.API.CONSUMER.CREATE.{stream}")
        found.add(f"$JS.API.CONSUMER.LIST.{stream}")
    return found


def _matches(subject: str, grant: str) -> bool:
    """Whether a NATS permission subject (`*` a token, `>` the rest) covers `subject`."""
    have, want = subject.split("."), grant.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(have) == len(want)


def _granted_reads(service: str, attempts: set[str]) -> set[str]:
    """The attempts a service's declared read-only grant allows (test_*_grants.py check them)."""
    if service == natsauth.SNAPSHOT_READER:
        grants = natsauth.snapshot_read_subjects()
    elif service == natsauth.MONITOR:
        grants = natsauth.monitor_read_subjects()
    else:
        return set()
    return {a for a in attempts if any(_matches(a, g) for g in grants)}


def _foreign_consumer_subjects(service: str) -> set[str]:
    """Fetching from, acking, creating or deleting the durable consumers of other services."""
    found = set()
    for other in Service:
        if other == service:
            continue
        for stream, durable in ((subjects.STREAM_CMD, subjects.durable(other, "cmd")),):
            found.add(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}")
            found.add(f"$JS.ACK.{stream}.{durable}.1.1.1.1.0")
            found.add(f"$JS.API.CONSUMER.DELETE.{stream}.{durable}")
            found.add(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}")
            found.add(f"$JS.API.CONSUMER.INFO.{stream}.{durable}")
    # Its own consumers may be fetched from, never deleted or redefined.
    own = subjects.durable(Service(service), "cmd")
    found.add(f"$JS.API.CONSUMER.DELETE.{subjects.STREAM_CMD}.{own}")
    found.add(f"$JS.API.CONSUMER.DURABLE.CREATE.{subjects.STREAM_CMD}.{own}")
    return found


@pytest.mark.parametrize("service", ALL)
async def test_stream_create_delete_purge_and_direct_reads_are_refused(
    connect_as: Connect, service: str
) -> None:
    """Creating, deleting, purging or reading a stream as a service is refused; data stays."""
    operator = await connect_as(OPERATOR)
    await operator.nc.jetstream().publish(APP_CREATED.subject, b"{}")
    client = await connect_as(service)
    attempts = _admin_subjects()
    # A read-only grant (the backup's snapshots, the monitor's positions) is held to being
    # read-only by test_snapshot_grants.py and test_monitor_grants.py.
    attempts -= _granted_reads(service, attempts)
    for subject in sorted(attempts):
        await client.nc.publish(subject, b"{}", reply=client.nc.new_inbox())

    def refused() -> None:
        assert client.refusals.published() == lowered(attempts)

    await assert_eventually(refused)
    info = await operator.nc.jetstream().stream_info(subjects.STREAM_EVT)
    assert info.state.messages == 1


@pytest.mark.parametrize("service", ALL)
async def test_another_services_consumer_cannot_be_read_acked_or_changed(
    connect_as: Connect, service: str
) -> None:
    """Pulling from, acking, creating or deleting another service's durable is refused."""
    client = await connect_as(service)
    attempts = _foreign_consumer_subjects(service)
    attempts -= _granted_reads(service, attempts)
    for subject in sorted(attempts):
        await client.nc.publish(subject, b"{}", reply=client.nc.new_inbox())

    def refused() -> None:
        assert client.refusals.published() == lowered(attempts)

    await assert_eventually(refused)


async def test_a_command_stays_queued_for_its_owner_when_another_service_pulls(
    connect_as: Connect,
) -> None:
    """The scheduler's pull on the builder's consumer gets nothing; the build waits for it."""
    gateway = await connect_as("gateway")
    await gateway.nc.jetstream().publish(subjects.cmd(Service.BUILDER, "build"), b"{}")
    thief = await connect_as("scheduler")
    pull = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.STREAM_CMD}.{subjects.durable(Service.BUILDER)}"
    inbox = thief.nc.new_inbox()
    got = await thief.nc.subscribe(inbox)
    await thief.nc.publish(pull, b'{"batch": 1}', reply=inbox)

    def refused() -> None:
        assert lowered({pull}) <= thief.refusals.published()

    await assert_eventually(refused)
    await thief.nc.flush()
    assert got.pending_msgs == 0
    owner = await connect_as("builder")
    taken = await owner.nc.jetstream().pull_subscribe_bind(
        subjects.durable(Service.BUILDER), stream=subjects.STREAM_CMD
    )
    assert len(await taken.fetch(1, timeout=5)) == 1


async def test_the_provisioner_may_create_but_never_delete_purge_or_read(
    connect_as: Connect,
) -> None:
    """The provisioning user is refused deleting, purging or reading streams and consumers."""
    client = await connect_as(PROVISIONER)
    attempts = {"$JS.API.STREAM.CREATE.MINE", "$JS.API.CONSUMER.MSG.NEXT.CMD.builder-cmd"}
    for stream in STREAMS:
        for verb in ("DELETE", "PURGE", "MSG.GET", "MSG.DELETE"):
            attempts.add(f"$JS.API.STREAM.{verb}.{stream}")
        attempts.add(f"$JS.API.DIRECT.GET.{stream}")
    attempts.add(f"$JS.API.CONSUMER.DELETE.{subjects.STREAM_CMD}.builder-cmd")
    attempts.add(subjects.cmd(Service.BUILDER, "build"))
    for subject in sorted(attempts):
        await client.nc.publish(subject, b"{}", reply=client.nc.new_inbox())

    def refused() -> None:
        assert client.refusals.published() == lowered(attempts)

    await assert_eventually(refused)
