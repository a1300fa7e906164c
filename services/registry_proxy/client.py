"""What the builder and the scheduler call to talk to the app image registry.

auth = await docker_auth(bus, app_id, "push")
await docker.images.tag(image_id, auth.repository, tag="v7")
await docker.images.push(auth.repository, tag="v7", auth=auth.auth)

auth = await docker_auth(bus, app_id, "pull")      # the scheduler, for a host
await docker.images.pull(f"{auth.repository}@{digest}", auth=auth.auth)
"""

from __future__ import annotations

from typing import NamedTuple

from slipway.contracts.registry import CREDENTIALS_ISSUE, Access, IssueCredentials
from slipway.libs.bus import Bus


class DockerAuth(NamedTuple):
    """aiodocker's `auth` dict, the repository to tag and push/pull, and when it expires."""

    auth: dict[str, str]
    repository: str
    expires_at: float


async def docker_auth(bus: Bus, app_id: str, access: Access, *, ttl_s: int = 900) -> DockerAuth:
    """Ask registry-proxy for a credential for `app_id`'s repository (pull or push)."""
    creds = await bus.call(
        CREDENTIALS_ISSUE, IssueCredentials(app_id=app_id, access=access, ttl_s=ttl_s)
    )
    auth = {
        "username": creds.username,
        "password": creds.password,
        "serveraddress": creds.registry,
    }
    return DockerAuth(auth, creds.repository, creds.expires_at)
