"""The host registry: one `Engine` per Docker endpoint, and whether it still answers.

An endpoint is a unix socket (`unix:///var/run/docker.sock`) or TCP with TLS
(`tcp://10.0.0.5:2376` plus CA, certificate and key files). Each engine is listed
every poll; one that has not answered for `host_down_grace` seconds is down.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiodocker
import aiohttp

from slipway.contracts.addons import LABEL_ADDON
from slipway.contracts.scheduler import AddHost, HostInfo
from slipway.contracts.scope import Scope
from slipway.services.scheduler import model
from slipway.services.scheduler.errors import EngineUnavailable, InvalidRequest
from slipway.services.scheduler.store import HostRow


def connect(row: HostRow, timeout: float) -> aiodocker.Docker:
    """An aiodocker client for the host's endpoint (TLS for tcp://)."""
    endpoint = row.info.endpoint
    client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout)
    if endpoint.startswith("unix://"):
        return aiodocker.Docker(url=endpoint, timeout=client_timeout)
    if endpoint.startswith("tcp://"):
        if not (row.tls_ca and row.tls_cert and row.tls_key):
            raise InvalidRequest("A tcp:// engine needs tls_ca, tls_cert and tls_key.")
        try:
            context = ssl.create_default_context(cafile=row.tls_ca)
            context.load_cert_chain(row.tls_cert, row.tls_key)
        except (OSError, ssl.SSLError) as exc:
            # Paths on the scheduler's machine, given by an admin: say which pair failed.
            raise InvalidRequest(
                f"The TLS files of {endpoint} cannot be used (CA {row.tls_ca}, certificate"
                f" {row.tls_cert}, key {row.tls_key}): {exc.strerror or exc}."
            ) from None
        url = "https://" + endpoint.removeprefix("tcp://")
        # aiodocker makes (and so closes) the connector itself; one passed in would be
        # the caller's to close, and every probe and engine close would leak it.
        return aiodocker.Docker(url=url, ssl_context=context, timeout=client_timeout)
    raise InvalidRequest(f"Unsupported engine endpoint {endpoint!r}: use unix:// or tcp://.")


@dataclass
class Container:
    """One managed container as the last listing saw it."""

    id: str
    name: str
    state: str  # Docker's: created, running, exited, dead, ...
    status: str  # "Exited (137) 2 seconds ago"
    labels: dict[str, str]
    image: str
    created: float


@dataclass
class Engine:
    """A registered host, its client and what it last reported."""

    row: HostRow
    docker: aiodocker.Docker
    last_ok: float = field(default_factory=time.monotonic)
    containers: dict[str, Container] = field(default_factory=dict)
    answered: bool = False  # at least once since the scheduler started

    @property
    def id(self) -> str:
        return self.row.info.id

    @property
    def state(self) -> str:
        return self.row.info.state

    @property
    def address(self) -> str:
        return self.row.info.address

    def model(self) -> model.Host:
        """The host as placement sees it."""
        info = self.row.info
        return model.Host(
            id=info.id,
            memory_mb=info.memory_mb,
            max_dynos=info.max_dynos,
            state=model.HostState(info.state),
        )

    async def poll(self, timeout: float, scope: Scope) -> dict[str, Container]:
        """List every container of `scope` (running or not); raise EngineUnavailable if silent."""
        # The exact managed value: another installation's dynos are never seen, so never
        # adopted, restarted or removed.
        wanted = [scope.managed_label]
        try:
            async with asyncio.timeout(timeout):
                found = await self.docker.containers.list(all=True, filters={"label": wanted})
        except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            raise EngineUnavailable(f"{self.id}: {exc!r}") from exc
        listing: dict[str, Container] = {}
        for item in found:
            raw: dict[str, Any] = item._container
            if LABEL_ADDON in (raw.get("Labels") or {}):
                continue  # a database, run by addons.py: never adopted or removed as a dyno
            names = raw.get("Names") or [""]
            listing[item.id] = Container(
                id=item.id,
                name=names[0].lstrip("/"),
                state=raw.get("State", ""),
                status=raw.get("Status", ""),
                labels=raw.get("Labels") or {},
                image=raw.get("Image", ""),
                created=float(raw.get("Created", 0)),
            )
        self.containers = listing
        self.last_ok = time.monotonic()
        self.answered = True
        return listing

    async def close(self) -> None:
        await self.docker.close()


async def probe(request: AddHost, timeout: float) -> HostRow:
    """Check a new engine answers; fill in its memory from `docker info` when not given."""
    info = HostInfo(
        id=request.id,
        endpoint=request.endpoint,
        address=request.address,
        memory_mb=request.memory_mb or 0,
        max_dynos=request.max_dynos,
    )
    row = HostRow(
        info=info, tls_ca=request.tls_ca, tls_cert=request.tls_cert, tls_key=request.tls_key
    )
    docker = connect(row, timeout)
    try:
        async with asyncio.timeout(timeout):
            system = await docker.system.info()
    except (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
        raise InvalidRequest(f"Engine {request.endpoint} does not answer: {exc}") from None
    finally:
        await docker.close()
    if not request.memory_mb:
        memory = int(system.get("MemTotal", 0)) // (1024 * 1024)
        row = HostRow(
            info=HostInfo(
                id=info.id,
                endpoint=info.endpoint,
                address=info.address,
                memory_mb=memory,
                max_dynos=info.max_dynos,
            ),
            tls_ca=row.tls_ca,
            tls_cert=row.tls_cert,
            tls_key=row.tls_key,
        )
    return row
