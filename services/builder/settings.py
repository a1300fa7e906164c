"""The builder's settings (`SLIPWAY_<FIELD>` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from slipway.libs.service import Settings


class BuilderSettings(Settings, frozen=True, kw_only=True):
    """Where images go, what a build may use, and how long it may take."""

    # "registry": push to registry-proxy with push credentials (production);
    # "local": keep the image on this engine, digest = image id (single host, tests).
    registry_mode: Literal["registry", "local"] = "registry"
    # The CA bundle mounted read-only into build containers (a TLS-inspecting proxy's CA
    # must be in it for package installs to work).
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    build_image: str = "slipway/stack-build:bookworm"
    run_image: str = "slipway/stack-run:bookworm"
    # The docker network build containers join: a bridge of their own, no inter-container
    # traffic. Platform services bind to loopback only, so a build cannot reach them.
    build_network: str = "slipway-builds"
    build_timeout: float = 900.0  # seconds for all buildpacks' compile steps together
    build_memory_mb: int = 2048
    build_cpus: float = 1.0
    build_pids: int = 1024
    build_uid: int = 10000
    source_max_bytes: int = 200 * 1024 * 1024  # the gzipped tarball as downloaded
    extracted_max_bytes: int = 1024 * 1024 * 1024  # the source unpacked (also the Docker context)
    fetch_timeout: float = 120.0
    config_timeout: float = 5.0  # waiting for gateway.CONFIG_SEALED_GET
    concurrency: int = 2  # builds at once in this builder
    # Builds (and their sealed output) are kept this long for BUILD_OUTPUT_GET and for
    # recognising redelivered commands; older ones are forgotten at start.
    keep_builds_days: float = 30.0
    docker_url: str | None = None  # None: the engine's usual socket

    def builds_dir(self) -> Path:
        """Scratch space for builds in progress (removed after each build)."""
        path = self.state_dir("builder") / "builds"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def db_path(self) -> Path:
        return self.state_dir("builder") / "builder.db"
