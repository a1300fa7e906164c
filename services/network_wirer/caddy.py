"""A small client of Caddy's admin API (aiohttp, loopback only).

Only two calls are needed: read the running configuration and load a new one.
`POST /load` replaces the configuration atomically (Caddy builds the new one
before it stops the old one, and keeps serving on a failed load), and answers
"config is unchanged" without a reload when nothing differs.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from slipway.services.network_wirer.errors import RouterRejected, RouterUnavailable


class CaddyAdmin:
    """Caddy's admin API at `base_url` (http://127.0.0.1:2019)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            # Caddy checks the Origin/Host of admin requests against its listen address.
            headers={"Origin": self.base_url},
        )

    async def close(self) -> None:
        await self._session.close()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            async with self._session.request(
                method, f"{self.base_url}{path}", data=data, headers=headers
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise RouterRejected(f"caddy {method} {path}: {response.status} {text[:500]}")
                return json.loads(text) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RouterUnavailable(f"caddy admin API at {self.base_url}: {exc!r}") from None

    async def config(self, path: str = "") -> Any:
        """The running configuration (or the part at `path`, e.g. "apps/http")."""
        return await self._request("GET", f"/config/{path}")

    async def by_id(self, ident: str) -> Any:
        """The configuration object carrying `"@id": ident`."""
        return await self._request("GET", f"/id/{ident}")

    async def load(self, config: dict[str, Any]) -> None:
        """Replace the whole configuration."""
        await self._request("POST", "/load", config)
