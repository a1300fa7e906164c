"""The additive settings compose/ relies on: stream replicas and a cluster node's config."""

from __future__ import annotations

import pytest

from slipway.libs.bus.provision import stream_configs
from slipway.libs.natsserver import cluster_node_config

NODES = ("nats-1", "nats-2", "nats-3")


def _config(name: str) -> str:
    return cluster_node_config(
        name,
        NODES,
        users={"gateway": "pw-gateway", "provisioner": "pw-prov"},
        route_password="route-secret",
        store_dir="/data/js",
        tls_dir="/etc/nats/tls",
    )


def test_streams_keep_the_servers_default_unless_replicas_are_asked() -> None:
    """Without a replica count nothing changes for scripts/up; with 3, every stream has 3."""
    assert {c.num_replicas for c in stream_configs()} == {None}
    assert {c.num_replicas for c in stream_configs(replicas=3)} == {3}


def test_zero_replicas_is_refused() -> None:
    """A stream needs at least one server."""
    with pytest.raises(ValueError, match="at least one replica"):
        stream_configs(replicas=0)


def test_a_node_routes_to_the_others_and_not_to_itself() -> None:
    """Routes name the two other nodes, with the route password; the node advertises its name."""
    config = _config("nats-2")
    assert "route:route-secret@nats-1:6222" in config
    assert "route:route-secret@nats-3:6222" in config
    assert "@nats-2:" not in config
    assert 'server_name: "nats-2"' in config
    assert 'client_advertise: "nats-2:4222"' in config


def test_a_node_keeps_every_hardened_setting() -> None:
    """Users with generated permissions, client TLS verified, routes verified, synced store."""
    config = _config("nats-1")
    assert '"user": "gateway"' in config and '"permissions"' in config
    assert config.count("verify: true") == 2  # clients and routes
    assert "sync_interval: always" in config
    assert '"/etc/nats/tls/route.pem"' in config


def test_a_node_outside_the_peers_is_refused() -> None:
    """A name not among the peers would route to nobody it knows."""
    with pytest.raises(ValueError, match="not among the peers"):
        _config("nats-9")
