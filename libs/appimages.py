"""An app's images on one Docker engine, found by exact name or label, and removed.

The builder tags what it builds `slipway/app-<app id>:<build id>` (and, before a
push, `<registry>/apps/<app id>:<build id>`); hosts pull releases as
`<registry>/apps/<app id>@<digest>`; every image the builder made carries the label
`slipway.app=<app id>`. When an app is destroyed, the builder and the scheduler
remove from their engines exactly those references (never a prefix match: app
`abc` must not catch `abcd`), and then any untagged image still labelled for the
app. Removal is by reference, not by id, so an image that also carries a name we do
not own keeps it (and its layers); an image a container still uses is left and
reported, for the caller to retry once the container is gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiodocker
import structlog

log = structlog.get_logger("slipway.appimages")

LABEL_APP = "slipway.app"  # on every image the builder builds (services/builder/image.py)
LOCAL_REPOSITORY_PREFIX = "slipway/app-"
_NONE = {"<none>:<none>", "<none>@<none>"}


@dataclass
class Removal:
    """What one pass removed (references) and what it had to leave (in use)."""

    removed: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)


def repository(ref: str) -> str:
    """`ref` without its tag or digest: `host:5000/apps/x:v1` → `host:5000/apps/x`."""
    name = ref.split("@", 1)[0]
    head, sep, tail = name.rpartition(":")
    # A colon followed by a slash belongs to a registry's port, not a tag.
    return head if sep and "/" not in tail else name


def is_app_repository(repo: str, app_id: str) -> bool:
    """Whether `repo` is one of the app's own repositories (exact, never a prefix)."""
    if repo == f"{LOCAL_REPOSITORY_PREFIX}{app_id.lower()}":
        return True
    parts = repo.split("/")
    # `<registry>/apps/<app id>`: the registry is the first part, with a port, dot or localhost.
    return (
        len(parts) == 3
        and parts[1:] == ["apps", app_id]
        and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost")
    )


def app_refs(images: Iterable[dict[str, Any]], app_id: str) -> list[str]:
    """The references to remove for `app_id` from an image listing (pure).

    Tags and digests in the app's repositories; for an image labelled for the app that
    has no name at all, its id.
    """
    refs: list[str] = []
    for image in images:
        names = [
            r for r in (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
            if r not in _NONE
        ]  # fmt: skip
        ours = [r for r in names if is_app_repository(repository(r), app_id)]
        refs += ours
        labelled = (image.get("Labels") or {}).get(LABEL_APP) == app_id
        if labelled and not names:
            refs.append(str(image["Id"]))
    return refs


async def remove_app_images(docker: aiodocker.Docker, app_id: str) -> Removal:
    """Remove the app's image references from this engine (missing ones are fine)."""
    result = Removal()
    for ref in app_refs(await docker.images.list(), app_id):
        try:
            await docker.images.delete(ref)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                continue  # gone already (the last tag took its digest with it)
            if exc.status == 409:
                result.in_use.append(ref)
                continue
            raise
        result.removed.append(ref)
    if result.removed or result.in_use:
        log.info("app.images_removed", app_id=app_id, removed=result.removed, in_use=result.in_use)
    return result
