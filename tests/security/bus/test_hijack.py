"""Reading another service's inbox, or answering discovery in its name, is refused."""

from __future__ import annotations

import nats.errors
import pytest
from nats.aio.msg import Msg

from slipway.contracts import subjects
from slipway.contracts.subjects import OPERATOR, Service
from tests.conftest import assert_eventually
from tests.security.bus.conftest import Connect, lowered

pytestmark = pytest.mark.integration

ALL = [str(s) for s in Service]


@pytest.mark.parametrize("service", ALL)
async def test_no_service_may_read_another_services_inbox(
    connect_as: Connect, service: str
) -> None:
    """Subscribing to any other service's (or the operator's) reply inbox is refused."""
    client = await connect_as(service)
    others = [f"{subjects.inbox_prefix(o)}.>" for o in [*ALL, OPERATOR] if o != service]
    for inbox in others:
        await client.nc.subscribe(inbox)

    def refused() -> None:
        assert client.refusals.subscribed() == lowered(set(others))

    await assert_eventually(refused)


@pytest.mark.parametrize("service", [s for s in ALL if s != Service.KEYRING])
async def test_a_service_cannot_answer_discovery_as_the_keyring(
    connect_as: Connect, service: str
) -> None:
    """$SRV subjects naming the keyring are refused to others: a ping finds no impostor."""
    impostor = await connect_as(service)
    hijacked = set()
    for verb in subjects.SRV_VERBS:
        named = subjects.srv_subjects(verb, Service.KEYRING, "x1")[1]
        hijacked |= {named, f"{named}.*"}
    for subject in sorted(hijacked):
        await impostor.nc.subscribe(subject, cb=_answer_as_keyring)

    def refused() -> None:
        assert impostor.refusals.subscribed() == lowered(hijacked)

    await assert_eventually(refused)
    operator = await connect_as(OPERATOR)
    ping = subjects.srv_subjects("PING", Service.KEYRING, "")[1]
    with pytest.raises(nats.errors.NoRespondersError):
        await operator.nc.request(ping, b"", timeout=5)


async def _answer_as_keyring(msg: Msg) -> None:
    await msg.respond(b'{"name": "keyring", "id": "impostor"}')
