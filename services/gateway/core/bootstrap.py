"""First start: the platform admin, their personal team and a token, written once to a file.

On an empty database the gateway creates the admin user (`admin_email`), a
personal team and a token, and writes {"email", "token", "api_url"} to
`<SLIPWAY_HOME>/gateway/bootstrap.json`, mode 0600. `scripts/up` prints it once,
stores it for the CLI and deletes it. The token is never logged.

The file is written (atomically) inside the database transaction, before the
commit: if the process dies between the two, the database is still empty and
the next start bootstraps again, overwriting the file with a token that works.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

from slipway.services.gateway.api.account import create_user
from slipway.services.gateway.api.tokens import issue_token
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import Gateway
from slipway.services.gateway.outbox.changes import Actor, change

log = structlog.get_logger("slipway.gateway.bootstrap")

PLATFORM = Actor(email="service:gateway")


def write_secret(path: Path, data: dict[str, str]) -> None:
    """Write `data` as JSON readable by the owner only, replacing any older file whole."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or an older file's mode
        os.write(fd, json.dumps(data, indent=2).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)


async def bootstrap(gw: Gateway) -> bool:
    """Create the admin on an empty database; False when users exist already."""
    if await store.count_users(gw.reader) > 0:
        return False
    settings = gw.settings
    path = settings.bootstrap_path()
    async with change(gw, PLATFORM) as tx:
        user, team = await create_user(
            tx, settings.admin_email, "Platform admin", platform_admin=True
        )
        token, secret = await issue_token(
            tx, user, description="bootstrap", expires_in=settings.bootstrap_token_ttl
        )
        tx.audit(team.id, "token.create", details={"token_id": token.id})
        write_secret(path, {"email": user.email, "token": secret, "api_url": gw.api_url})
    log.info("bootstrap.admin_created", email=user.email, credentials=str(path))
    return True
