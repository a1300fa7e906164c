"""Each service user, in turn, tries every subject it is not declared for: nats-server refuses.

The expectations are computed from the declarations in contracts/ directly, not from
libs/natsauth, so a permission widened there (by hand or by a bug) fails these tests.
"""

from __future__ import annotations

import pytest

from slipway.contracts import subjects
from slipway.contracts.catalog import catalog
from slipway.contracts.subjects import OPERATOR, Service
from tests.conftest import assert_eventually
from tests.security.bus.conftest import Connect, lowered

pytestmark = pytest.mark.integration

ALL = [str(s) for s in Service]


def _every_subject() -> set[str]:
    """One concrete subject for every declared endpoint, inbox, dead letter and $SRV name."""
    cat = catalog()
    found = {rpc.subject for rpc in cat.rpcs}
    found |= {cmd.subject for cmd in cat.commands}
    found |= {evt.subject for evt in cat.events}
    found |= {live.subject("x1") for live in cat.lives}
    for name in [*ALL, OPERATOR]:
        found.add(f"{subjects.inbox_prefix(name)}.x1.y")
    for service in Service:
        found.add(subjects.dead_letter(service, subjects.cmd(service, "x")))
        for verb in subjects.SRV_VERBS:
            found |= set(subjects.srv_subjects(verb, service, "x1")[1:])
    return found


def _may_publish(service: str) -> set[str]:
    cat = catalog()
    allowed = {rpc.subject for rpc in cat.rpcs if service in rpc.callers}
    allowed |= {cmd.subject for cmd in cat.commands if service in cmd.senders}
    allowed |= {evt.subject for evt in cat.events if service in evt.publishers}
    allowed |= {live.subject("x1") for live in cat.lives if service in live.writers}
    # Answers go to the inboxes of those who may ask it something, and discovery's (the
    # operator's tools and the monitor).
    askers = {c for rpc in cat.rpcs if rpc.service == service for c in rpc.callers}
    askers |= {OPERATOR, Service.MONITOR}
    allowed |= {f"{subjects.inbox_prefix(c)}.x1.y" for c in askers}
    consumes = any(c.service == service for c in cat.commands) or any(
        c.service == service for c in cat.consumers
    )
    if consumes:  # what its consumers cannot handle goes to its own dead letters
        allowed.add(subjects.dead_letter(Service(service), subjects.cmd(Service(service), "x")))
    return allowed


def _may_subscribe(service: str) -> set[str]:
    cat = catalog()
    allowed = {rpc.subject for rpc in cat.rpcs if rpc.service == service}
    allowed |= {live.subject("x1") for live in cat.lives if service in live.readers}
    allowed.add(f"{subjects.inbox_prefix(service)}.x1.y")
    for verb in subjects.SRV_VERBS:
        allowed |= set(subjects.srv_subjects(verb, service, "x1")[1:])
    return allowed


# Wildcards that would read everything of a kind.
WIDE = ["slipway.>", "slipway.rpc.>", "slipway.live.>", "_INBOX.>", "$SRV.>", "$JS.>", ">"]


@pytest.mark.parametrize("service", ALL)
async def test_publishing_any_undeclared_subject_is_refused(
    connect_as: Connect, service: str
) -> None:
    """Every request, command, event, live line or reply it is not declared for is refused."""
    client = await connect_as(service)
    forbidden = _every_subject() - _may_publish(service)
    for subject in sorted(forbidden):
        await client.nc.publish(subject, b"{}")

    def all_refused() -> None:
        assert client.refusals.published() == lowered(forbidden)

    await assert_eventually(all_refused)


@pytest.mark.parametrize("service", ALL)
async def test_subscribing_to_any_undeclared_subject_is_refused(
    connect_as: Connect, service: str
) -> None:
    """Every subject or wildcard it does not read by declaration is refused to it."""
    client = await connect_as(service)
    forbidden = (_every_subject() - _may_subscribe(service)) | set(WIDE)
    for subject in sorted(forbidden):
        await client.nc.subscribe(subject)

    def all_refused() -> None:
        assert client.refusals.subscribed() == lowered(forbidden)

    await assert_eventually(all_refused)


@pytest.mark.parametrize("service", ALL)
async def test_what_it_is_declared_for_is_allowed(connect_as: Connect, service: str) -> None:
    """The declared subjects are not refused (the deny side is not bought by breaking them)."""
    client = await connect_as(service)
    for subject in sorted(_may_subscribe(service)):
        await client.nc.subscribe(subject)
    for subject in sorted(_may_publish(service)):
        await client.nc.publish(subject, b"{}")
    await client.nc.flush()
    # A refusal is written before the PONG that ends the flush above.
    await client.nc.flush()
    assert client.refusals.seen == set() and client.refusals.other == []
