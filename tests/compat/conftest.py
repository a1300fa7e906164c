"""Heroku's clients as they call the API, over the gateway harness of tests/gateway.

    async def test_x(stack: Stack) -> None:
        alice = await stack.user("alice@example.com")
        for client in clients(alice):
            answer = await client.get("/apps")

Each `Client` sends exactly the headers one of Heroku's clients sends: the heroku CLI
(`version=3`), its platform-api SDK (`version=3.sdk`), heroku-go and the Ruby
platform-api gem, each with its own User-Agent; JSON bodies go out with
`Content-Type: application/json` as they send them. The stack is tests/gateway's:
a real nats-server, keyring and gateway in this process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.gateway.conftest import (  # noqa: F401 - fixtures
    Answer,
    Api,
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)

V3 = "application/vnd.heroku+json; version=3"


@dataclass(frozen=True)
class Client:
    """One of Heroku's clients, logged in as `api`'s user."""

    name: str
    accept: str
    user_agent: str
    api: Api

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        sent = {"Accept": self.accept, "User-Agent": self.user_agent}
        if self.api.token:
            sent["Authorization"] = f"Bearer {self.api.token}"
        return {**sent, **(extra or {})}

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        sent = self.headers(headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        return await self.api.request(method, path, data=data, headers=sent)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("GET", path, headers=headers)


def clients(api: Api) -> list[Client]:
    """Heroku's clients, each logged in as `api`'s user."""
    return [
        Client("heroku CLI", V3, "heroku/10.0.2 linux-x64 node-v20.18.1", api),
        Client("platform-api SDK", f"{V3}.sdk", "@heroku-cli/command/11.3.0 node-v20.18.1", api),
        Client("heroku-go", V3, "heroku/v5 (linux; amd64)", api),
        Client("platform-api gem", V3, "platform-api/3.8.0", api),
    ]


def cli(api: Api) -> Client:
    """The heroku CLI as `api`'s user."""
    return clients(api)[0]
