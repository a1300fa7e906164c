"""The keyring's master key (platform admins only): rotate it — a Slipway extension.

The keyring does the work (`masterkey.rotate`: every team KEK, the audit signing key
and the backup identities re-wrapped under a new master key, the old key destroyed)
and records it in its own audit, naming the admin; the gateway checks the caller is a
platform admin and logs the change (the master key is the platform's, not a team's).
"""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from slipway.contracts import keyring
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import actor, require_admin
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("master-key")
log = structlog.get_logger("slipway.gateway.masterkey")

# Re-wrapping is one small transaction per 64 keys; a platform with thousands of teams
# takes seconds. A rotation that outlasts this keeps running; asking again finishes it.
ROTATE_TIMEOUT = 300.0


class MasterKeyRotation(msgspec.Struct, frozen=True, kw_only=True):
    """Slipway: a finished master key rotation."""

    previous_version: int
    version: int
    fingerprint: str
    rewrapped: int
    resumed: bool
    recovery_sealed: bool


@routes.post(
    "/platform/master-key/actions/rotate",
    summary="Rotate the keyring's master key (re-wrap every key under a new one)",
    response=MasterKeyRotation,
    extension=True,
)
async def rotate(request: web.Request) -> web.Response:
    require_admin(request)
    who = actor(request)
    answer = await request.app[GATEWAY].bus.call(
        keyring.MASTERKEY_ROTATE,
        keyring.RotateMasterKey(requested_by=who.email),
        timeout=ROTATE_TIMEOUT,
    )
    log.info(
        "master_key.rotate",
        actor=str(who),
        version=answer.version,
        previous_version=answer.previous_version,
        fingerprint=answer.fingerprint,
    )
    return reply(
        MasterKeyRotation(
            previous_version=answer.previous_version,
            version=answer.version,
            fingerprint=answer.fingerprint,
            rewrapped=answer.rewrapped,
            resumed=answer.resumed,
            recovery_sealed=answer.recovery_sealed,
        )
    )
