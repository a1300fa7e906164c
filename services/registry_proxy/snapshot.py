"""What registry-proxy puts in a platform snapshot: its state and the images it keeps.

Its database, its credential signing key and Distribution's HTTP secret (the configs are
written again at each start), and of Distribution's storage only what serves the images
garbage collection keeps (gc.py: the rollback window of each app, and recent pushes no
release uses yet): each kept manifest's blob, the blobs it references (config, layers,
an index's manifests), and the repository's link files for them and the tags naming
them. Storage is read with the collector's lock held, so nothing is deleted meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from slipway.libs.service import ServiceApp
from slipway.libs.snapshot.export import Database, File, Folder, Sources
from slipway.services.registry_proxy.gc import doomed
from slipway.services.registry_proxy.proxy import repository_name
from slipway.services.registry_proxy.settings import RegistryProxySettings
from slipway.services.registry_proxy.state import STATE
from slipway.services.registry_proxy.store import Store

V2 = "docker/registry/v2"
# Digests come from manifests, which customers push: checked before they name a path.
DIGEST = re.compile(r"(sha256):([0-9a-f]{64})\Z")
MANIFEST_MAX = 4 * 1024 * 1024  # Distribution's own limit on a manifest's size
LEFT_OUT = (
    "registry: images outside each app's rollback window (already collected, or due)",
    "registry: uploads in progress",
)


def sources(
    service: ServiceApp, settings: RegistryProxySettings
) -> Callable[[], Awaitable[Sources]]:
    """registry-proxy's Sources; the kept images are read from its database at each export."""

    async def declare() -> Sources:
        state = service[STATE]
        kept = await kept_images(
            state.store, keep=settings.rollback_window, grace=settings.registry_unreleased_grace_s
        )
        storage = settings.storage_path()
        selection = await asyncio.to_thread(Selection.of, storage, kept)
        folder = settings.proxy_dir()
        return Sources(
            databases=[Database(settings.db_path(), f"registry-proxy/{settings.db_path().name}")],
            files=[
                File(settings.signing_key_path(), "registry-proxy/signing.key"),
                File(folder / "distribution.secret", "registry-proxy/distribution.secret"),
            ],
            folders=[
                Folder(
                    storage,
                    "registry/",
                    filter=selection.wants,
                    lock=state.collector.holding_off,
                )
            ],
            left_out=LEFT_OUT,
        )

    return declare


async def kept_images(
    store: Store, *, keep: int, grace: float, now: float | None = None
) -> dict[str, set[str]]:
    """Per app, the digests garbage collection keeps (gc.doomed's complement)."""
    now = time.time() if now is None else now
    rows = await store.db.fetchall(
        "SELECT DISTINCT app_id FROM images WHERE deleted_at IS NULL ORDER BY app_id"
    )
    kept: dict[str, set[str]] = {}
    for row in rows:
        app_id = str(row["app_id"])
        images = await store.images(app_id)
        drop = doomed(images, await store.releases(app_id), keep=keep, now=now, grace=grace)
        digests = {image.digest for image in images} - drop
        if digests:
            kept[app_id] = digests
    return kept


class Selection:
    """The paths under Distribution's storage root a snapshot takes, and their folders."""

    def __init__(self, files: set[str]) -> None:
        self.files = files
        self.folders = {
            "/".join(parts[:i])
            for path in files
            for parts in [path.split("/")]
            for i in range(1, len(parts))
        }

    def wants(self, path: str, is_folder: bool) -> bool:
        """Whether the folder walk exports `path` (or descends into it)."""
        return path in (self.folders if is_folder else self.files)

    @classmethod
    def of(cls, storage: Path, kept: Mapping[str, set[str]]) -> Selection:
        """What serves the `kept` digests of each app from the registry in `storage`."""
        files: set[str] = set()
        for app_id, digests in kept.items():
            files |= _repository_paths(storage, repository_name(app_id), digests)
        return cls(files)


def _blob(digest: str) -> str:
    algorithm, hexa = _split(digest)
    return f"{V2}/blobs/{algorithm}/{hexa[:2]}/{hexa}/data"


def _split(digest: str) -> tuple[str, str]:
    match = DIGEST.match(digest)
    if match is None:
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
    return match.group(1), match.group(2)


def _repository_paths(storage: Path, repo: str, digests: set[str]) -> set[str]:
    base = f"{V2}/repositories/{repo}"
    manifests: set[str] = set()
    blobs: set[str] = set()
    queue = [d for d in digests if DIGEST.match(d)]
    while queue:
        digest = queue.pop()
        if digest in manifests:
            continue
        document = _read_json(storage / _blob(digest))
        if document is None:
            continue  # not in storage (collected meanwhile): nothing of it to keep
        manifests.add(digest)
        # An index lists manifests; an image manifest its config and layers.
        for child in _digests(document.get("manifests")):
            queue.append(child)
        blobs.update(_digests([document.get("config")]))
        blobs.update(_digests(document.get("layers")))
    files: set[str] = set()
    for digest in manifests:
        algorithm, hexa = _split(digest)
        files.add(_blob(digest))
        files.add(f"{base}/_manifests/revisions/{algorithm}/{hexa}/link")
    for digest in blobs:
        algorithm, hexa = _split(digest)
        files.add(_blob(digest))
        files.add(f"{base}/_layers/{algorithm}/{hexa}/link")
    files |= _tags(storage, base, manifests)
    return files


def _tags(storage: Path, base: str, manifests: set[str]) -> set[str]:
    """The link files of the tags that name a kept manifest."""
    found: set[str] = set()
    tags = storage / base / "_manifests" / "tags"
    try:
        names = sorted(os.listdir(tags))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for tag in names:
        current = f"{base}/_manifests/tags/{tag}/current/link"
        target = _read(storage / current, 200)
        digest = target.decode(errors="replace").strip() if target is not None else ""
        if digest in manifests:
            algorithm, hexa = _split(digest)
            found.add(current)
            found.add(f"{base}/_manifests/tags/{tag}/index/{algorithm}/{hexa}/link")
    return found


def _digests(items: object) -> list[str]:
    if not isinstance(items, list):
        return []
    found = []
    for item in items:
        digest = item.get("digest") if isinstance(item, dict) else None
        if isinstance(digest, str) and DIGEST.match(digest):
            found.append(digest)
    return found


def _read_json(path: Path) -> dict[str, object] | None:
    data = _read(path, MANIFEST_MAX)
    if data is None:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None  # a layer, not a manifest (never reached: only manifests are read)
    return document if isinstance(document, dict) else None


def _read(path: Path, limit: int) -> bytes | None:
    # Never through a link, though only Distribution writes here.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)
