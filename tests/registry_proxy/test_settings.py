"""Settings that would hand out unusable credentials, or cannot start, say so."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import msgspec
import pytest

from slipway.services.registry_proxy.client import docker_auth
from slipway.services.registry_proxy.errors import DistributionError, RegistryProxyError
from slipway.services.registry_proxy.settings import RegistryProxySettings
from tests.registry_proxy.conftest import BusFactory, start_registry


def test_listening_everywhere_needs_an_advertised_address() -> None:
    """0.0.0.0 is no address an engine can use: the operator must name one."""
    anywhere = "0.0.0.0"  # noqa: S104 - the setting under test, nothing binds here
    with pytest.raises(RegistryProxyError, match="SLIPWAY_REGISTRY_ADVERTISE"):
        RegistryProxySettings(registry_host=anywhere).advertised(5000)
    everywhere = RegistryProxySettings(registry_host=anywhere, registry_advertise="10.0.0.1:5000")
    assert everywhere.advertised(5000) == "10.0.0.1:5000"
    assert RegistryProxySettings().advertised(41000) == "127.0.0.1:41000"


def test_a_deep_home_still_gets_a_short_private_socket(tmp_path: Path) -> None:
    """A socket path must fit in sun_path; two homes never share one."""
    deep = tmp_path / ("d" * 90)
    first = RegistryProxySettings(home=str(deep / "a")).socket_path()
    second = RegistryProxySettings(home=str(deep / "b")).socket_path()
    assert len(str(first)) < 100
    assert first != second


async def test_a_missing_distribution_stops_the_start(
    registry_settings: RegistryProxySettings,
) -> None:
    """Without docker-registry the service refuses to start and says what to install."""
    settings = msgspec.structs.replace(
        registry_settings, registry_distribution_bin="/nonexistent/docker-registry"
    )
    with pytest.raises(DistributionError, match="apt-get install docker-registry"):
        await start_registry(settings)


async def test_the_proxy_listens_where_it_is_told_and_credentials_say_so(
    registry_settings: RegistryProxySettings, bus_factory: BusFactory, app_id: str
) -> None:
    """Another listen address (for engines elsewhere) is the one credentials carry."""
    settings = msgspec.structs.replace(registry_settings, registry_host="127.0.0.2")
    running = await start_registry(settings)
    try:
        auth = await docker_auth(await bus_factory("scheduler"), app_id, "pull")
        host, port = auth.auth["serveraddress"].rsplit(":", 1)
        assert host == "127.0.0.2"
        assert auth.repository == f"127.0.0.2:{port}/apps/{app_id}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.2:{port}/v2/") as resp:
                assert resp.status == 401
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{port}/v2/")
    finally:
        await running.stop()
