"""Consumers an upgrade left behind are deleted at start; nobody else's is touched."""

from __future__ import annotations

import nats
import pytest
from nats.js import api

from slipway.contracts import subjects
from slipway.contracts.subjects import OPERATOR
from slipway.libs.bus.provision import consumer_config, prune_undeclared, undeclared
from slipway.libs.natsserver import NatsServer

pytestmark = pytest.mark.integration


def test_only_the_platforms_own_undeclared_names_are_chosen() -> None:
    found = [
        ("EVT", "network-wirer-routes"),  # renamed to network-wirer-routes-<host>
        ("EVT", "gateway-retired-purpose"),  # a purpose a later catalog dropped
        ("EVT", "network-wirer-routes-local"),  # declared
        ("EVT", "log-shipper-host-h9"),  # another host's, unknown to these instances
        ("EVT", "monitor-dynos"),  # declared
        ("CMD", "builder-cmd"),  # declared
        ("EVT", "ops-dashboard"),  # not a service's name: someone else's tool
        ("DLQ", "gateway-x"),  # not a stream consumers are declared on
    ]
    assert undeclared(found) == [
        ("EVT", "network-wirer-routes"),
        ("EVT", "gateway-retired-purpose"),
    ]


async def test_an_orphan_consumer_is_deleted_and_the_rest_kept(hardened: NatsServer) -> None:
    nc = await nats.connect(
        hardened.url,
        user=OPERATOR,
        password=hardened.users[OPERATOR],
        inbox_prefix=subjects.inbox_prefix(OPERATOR),
    )
    try:
        js = nc.jetstream(timeout=10.0)
        evt = "slipway.evt.gateway.>"
        for name in ("network-wirer-routes", "ops-dashboard", "log-shipper-host-h9"):
            await js.add_consumer(subjects.STREAM_EVT, consumer_config(name, [evt]))
        before = await _names(js)

        gone = await prune_undeclared(js, hardened.instances)

        assert gone == [(subjects.STREAM_EVT, "network-wirer-routes")]
        after = await _names(js)
        assert after == before - {(subjects.STREAM_EVT, "network-wirer-routes")}
        assert (subjects.STREAM_EVT, "ops-dashboard") in after
        assert (subjects.STREAM_EVT, "log-shipper-host-h9") in after
        assert await prune_undeclared(js, hardened.instances) == []  # nothing more
    finally:
        await nc.close()


async def _names(js: nats.js.JetStreamContext) -> set[tuple[str, str]]:
    found = set()
    for stream in (subjects.STREAM_CMD, subjects.STREAM_EVT):
        infos: list[api.ConsumerInfo] = await js.consumers_info(stream)
        found |= {(stream, i.name) for i in infos}
    return found
