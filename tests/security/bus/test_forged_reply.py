"""A forged `_INBOX.gateway.*` reply subject against the keyring gains the forger nothing.

NATS cannot check the reply subject a client writes on a request. What makes it safe:
each user may subscribe only under its own inbox (so an answer sent to the gateway's
inbox never reaches the forger), only declared callers may publish a request at all
(so `team.shred` from anyone but the gateway never reaches the keyring), and the
keyring never answers to a reply subject that is not an inbox (so an answer cannot be
steered onto a subject the forger does read).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from slipway.contracts import keyring
from slipway.contracts.base import ErrorReply, decoder, encode
from slipway.contracts.keyring import Purpose
from slipway.contracts.subjects import Service, inbox_prefix
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from tests.conftest import assert_eventually
from tests.gateway.conftest import run_in_background, stop
from tests.security.bus.conftest import Connect, lowered

pytestmark = pytest.mark.integration

TEAM = uuid.uuid4().hex


@pytest.fixture
async def keyring_service(hardened: NatsServer, tmp_path: Path) -> AsyncIterator[ServiceApp]:
    """The real keyring, connected as its own user."""
    service = create_keyring(
        KeyringSettings(
            nats_url=hardened.url,
            nats_user="keyring",
            nats_password=hardened.users["keyring"],
            home=str(tmp_path / "home"),
            shutdown_grace=5.0,
        )
    )
    task = await run_in_background(service)
    yield service
    await stop(service, task)


@pytest.fixture
async def gateway(hardened: NatsServer, keyring_service: ServiceApp) -> AsyncIterator[Bus]:
    """A bus connected as the gateway, the only service allowed build-source keys and shreds."""
    bus = await Bus.connect(
        hardened.url, "gateway", user="gateway", password=hardened.users["gateway"]
    )
    yield bus
    await bus.close()


async def _source_key(gateway: Bus) -> keyring.DataKey:
    request = keyring.GenerateDataKey(team_id=TEAM, purpose=Purpose.BUILD_SOURCE)
    return await gateway.call(keyring.DATAKEY_GENERATE, request)


async def test_a_decrypt_with_the_gateways_inbox_answers_the_gateway_not_the_forger(
    gateway: Bus, connect_as: Connect
) -> None:
    """The scheduler, posing as the gateway, never sees the build-source key it asked for."""
    key = await _source_key(gateway)
    forged_reply = f"{inbox_prefix(Service.GATEWAY)}.forged.1"
    spy = await gateway.nc.subscribe(forged_reply)  # the gateway's own inbox space
    await gateway.nc.flush()
    forger = await connect_as("scheduler")
    own = await forger.nc.subscribe(f"{inbox_prefix(Service.SCHEDULER)}.>")
    stolen = await forger.nc.subscribe(f"{inbox_prefix(Service.GATEWAY)}.>")
    ask = keyring.DecryptDataKey(team_id=TEAM, purpose=Purpose.BUILD_SOURCE, wrapped=key.wrapped)
    await forger.nc.publish(keyring.DATAKEY_DECRYPT.subject, encode(ask), reply=forged_reply)

    answer = await spy.next_msg(timeout=10)
    plain = decoder(keyring.PlainDataKey | ErrorReply).decode(answer.data)
    assert isinstance(plain, keyring.PlainDataKey) and plain.plaintext == key.plaintext
    await forger.nc.flush()
    # The one answer went to the gateway; the forger's inbox got nothing, and it may not
    # listen on the gateway's.
    assert own.pending_msgs == 0 and stolen.pending_msgs == 0
    assert lowered({f"{inbox_prefix(Service.GATEWAY)}.>"}) <= forger.refusals.subscribed()


async def test_a_forged_team_shred_never_reaches_the_keyring(
    gateway: Bus, connect_as: Connect
) -> None:
    """team.shred from the builder, with the gateway's inbox, is refused by nats-server."""
    key = await _source_key(gateway)
    forger = await connect_as("builder")
    shred = keyring.ShredTeam(team_id=TEAM, reason="forged")
    forged_reply = f"{inbox_prefix(Service.GATEWAY)}.forged.2"
    await forger.nc.publish(keyring.TEAM_SHRED.subject, encode(shred), reply=forged_reply)

    def refused() -> None:
        assert lowered({keyring.TEAM_SHRED.subject}) <= forger.refusals.published()

    await assert_eventually(refused)
    # The team's key still opens its data: nothing was shredded.
    ask = keyring.DecryptDataKey(team_id=TEAM, purpose=Purpose.BUILD_SOURCE, wrapped=key.wrapped)
    assert (await gateway.call(keyring.DATAKEY_DECRYPT, ask)).plaintext == key.plaintext


async def test_the_keyring_never_answers_onto_a_subject_the_forger_reads(
    gateway: Bus, connect_as: Connect
) -> None:
    """A reply subject that is not an inbox (one the builder serves) gets no answer."""
    key = await _source_key(gateway)
    forger = await connect_as("builder")
    readable = "slipway.rpc.builder.output.get"
    trap = await forger.nc.subscribe(readable)
    await forger.nc.flush()
    ask = keyring.DecryptDataKey(team_id=TEAM, purpose=Purpose.BUILD_SOURCE, wrapped=key.wrapped)
    with capture_logs() as logs:
        await forger.nc.publish(keyring.DATAKEY_DECRYPT.subject, encode(ask), reply=readable)

        def refused() -> None:
            assert any(e["event"] == "rpc.refused" for e in logs)

        await assert_eventually(refused)
    await forger.nc.flush()
    assert trap.pending_msgs == 0
