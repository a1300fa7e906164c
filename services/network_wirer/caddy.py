"""A small client of Caddy's admin API (aiohttp over the router's unix socket).

Only two calls are needed: read the running configuration and load a new one.
`POST /load` replaces the configuration atomically (Caddy builds the new one
before it stops the old one, and keeps serving on a failed load), and answers
"config is unchanged" without a reload when nothing differs. The API has no
authentication: the socket's folder (0700, libs/caddy.py) is what keeps others out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from slipway.services.network_wirer.errors import RouterRejected, RouterUnavailable

# The socket is the address; the URL's host only fills the request line.
_BASE_URL = "http://caddy-admin"


class CaddyAdmin:
    """Caddy's admin API on the unix socket `socket_path`."""

    def __init__(self, socket_path: Path | str, *, timeout: float = 10.0) -> None:
        self.socket_path = str(socket_path)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.socket_path),
            timeout=aiohttp.ClientTimeout(total=timeout),
            # Caddy 2.6 accepts only an empty Host on a unix socket (there is no host to name).
            headers={"Host": ""},
        )

    async def close(self) -> None:
        await self._session.close()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            async with self._session.request(
                method, f"{_BASE_URL}{path}", data=data, headers=headers
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise RouterRejected(f"caddy {method} {path}: {response.status} {text[:500]}")
                return json.loads(text) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RouterUnavailable(f"caddy admin API at {self.socket_path}: {exc!r}") from None

    async def config(self, path: str = "") -> Any:
        """The running configuration (or the part at `path`, e.g. "apps/http")."""
        return await self._request("GET", f"/config/{path}")

    async def by_id(self, ident: str) -> Any:
        """The configuration object carrying `"@id": ident`."""
        return await self._request("GET", f"/id/{ident}")

    async def load(self, config: dict[str, Any]) -> None:
        """Replace the whole configuration."""
        await self._request("POST", "/load", config)
