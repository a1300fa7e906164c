"""The NATS micro-service discovery protocol (ADR-32): `$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`.

`nats micro ls` and health checks see every running instance, its endpoints and
their counters. Implemented here rather than with `nats.micro` because Slipway's
RPC endpoints run handlers concurrently, which nats.micro's endpoints do not.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from slipway.contracts import subjects
from slipway.libs.bus import Bus


class Discovery:
    """Answers discovery requests for one service instance."""

    def __init__(
        self,
        bus: Bus,
        *,
        name: str,
        version: str,
        description: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.bus = bus
        self.name = name
        self.version = version
        self.description = description
        self.metadata = metadata or {}
        self.started = datetime.now(UTC)
        self._subscriptions: list[Subscription] = []

    def _identity(self, kind: str) -> dict[str, Any]:
        return {
            "type": f"io.nats.micro.v1.{kind}_response",
            "name": self.name,
            "id": self.bus.instance,
            "version": self.version,
            "metadata": self.metadata,
        }

    def ping(self) -> dict[str, Any]:
        return self._identity("ping")

    def info(self) -> dict[str, Any]:
        body = self._identity("info")
        body["description"] = self.description
        body["endpoints"] = [
            {"name": s.name, "subject": s.subject, "queue_group": s.queue_group, "metadata": None}
            for s in self.bus.endpoint_stats()
        ]
        return body

    def stats(self) -> dict[str, Any]:
        body = self._identity("stats")
        body["started"] = self.started.isoformat()
        body["endpoints"] = [
            {
                "name": s.name,
                "subject": s.subject,
                "queue_group": s.queue_group,
                "num_requests": s.num_requests,
                "num_errors": s.num_errors,
                "last_error": s.last_error,
                "processing_time": s.processing_time_ns,
                "average_processing_time": s.processing_time_ns // max(s.num_requests, 1),
                "data": None,
            }
            for s in self.bus.endpoint_stats()
        ]
        return body

    async def start(self) -> None:
        answers = {"PING": self.ping, "INFO": self.info, "STATS": self.stats}
        for verb in subjects.SRV_VERBS:
            build = answers[verb]

            async def respond(msg: Msg, build: Any = build) -> None:
                await msg.respond(json.dumps(build()).encode())

            for subject in subjects.srv_subjects(verb, self.name, self.bus.instance):
                self._subscriptions.append(await self.bus.nc.subscribe(subject, cb=respond))

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()
