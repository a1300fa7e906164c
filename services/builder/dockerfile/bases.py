"""Which images a Dockerfile may start from (`FROM`) or copy from (`COPY --from`).

Only by repository name, and only names on an allow-list: the stack images, the
operator's `SLIPWAY_DOCKERFILE_BASE_IMAGES`, `scratch`, or an earlier stage. An
image id (full or any prefix, which the engine would resolve), a digest, and any
app's image (`slipway/app-*`, a registry's `.../apps/...`, or an image labelled
`slipway.app`) are refused whatever the list says: naming another app's image
would read its code and secrets. Nothing is ever pulled.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from slipway.services.builder.dockerfile.errors import BaseImageRefused

SCRATCH = "scratch"
_HEX = re.compile(r"(sha256:)?[0-9a-fA-F]+")


def normalise(name: str) -> str:
    """A repository name with its tag made explicit (`:latest`) and Docker Hub prefixes off."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def allowed_bases(run_image: str, build_image: str, extra: str) -> tuple[str, ...]:
    """The allow-list: stacks first, then the operator's comma-separated names."""
    names = [run_image, build_image, *(n.strip() for n in extra.split(",") if n.strip())]
    return tuple(dict.fromkeys(normalise(n) for n in names))


def check_name(name: str, allowed: Collection[str], what: str = "FROM") -> str:
    """The normalised name if a build may use it; else BaseImageRefused saying what may."""
    choices = ", ".join([*allowed, SCRATCH, "or an earlier stage"])
    if _HEX.fullmatch(name):
        raise BaseImageRefused(
            f"{what} {name}: an image ID is not allowed; start from a named base image: {choices}"
        )
    if "@" in name or "sha256:" in name:
        raise BaseImageRefused(
            f"{what} {name}: a digest reference is not allowed; use a name: {choices}"
        )
    if is_app_image(name):
        raise BaseImageRefused(
            f"{what} {name}: another app's image cannot be used in a build; use: {choices}"
        )
    if name == SCRATCH:
        return name
    normal = normalise(name)
    if normal not in allowed:
        raise BaseImageRefused(
            f"{what} {name}: not an allowed base image; use {choices}"
            " (an operator can allow more with SLIPWAY_DOCKERFILE_BASE_IMAGES)"
        )
    return normal


def is_app_image(name: str) -> bool:
    """Whether `name` is an app's image repository (local tag or registry repository)."""
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return repository.startswith("slipway/app-") or "/apps/" in f"/{repository}"


def check_inspected(name: str, info: Mapping[str, Any]) -> None:
    """Refuse an allowed name that turns out to hold an app's image (a label says so)."""
    labels = (info.get("Config") or {}).get("Labels") or {}
    if "slipway.app" in labels:
        raise BaseImageRefused(f"FROM {name}: this image was built for an app and cannot be a base")
