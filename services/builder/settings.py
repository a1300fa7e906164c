"""The builder's settings (`SLIPWAY_<FIELD>` environment variables)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

import msgspec

from slipway.libs.service import Settings


class BuilderSettings(Settings, frozen=True, kw_only=True):
    """Where images go, what a build may use, and how long it may take."""

    def __post_init__(self) -> None:
        if not self.build_network:
            msgspec.structs.force_setattr(self, "build_network", self.scoped.build_network)

    # "registry": push to registry-proxy with push credentials (production);
    # "local": keep the image on this engine, digest = image id (single host, tests).
    registry_mode: Literal["registry", "local"] = "registry"
    # The CA bundle mounted read-only into build containers (a TLS-inspecting proxy's CA
    # must be in it for package installs to work).
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    build_image: str = "slipway/stack-build:bookworm"
    run_image: str = "slipway/stack-run:bookworm"
    # The docker network build containers join: a bridge of their own, no inter-container
    # traffic, fenced by firewall.py. Empty: the scope's (`slipway-builds` in the default
    # scope), so a second installation on the machine never shares it or its chains.
    build_network: str = ""
    # iptables rules fencing the build network (services/builder/firewall.py; needs root).
    # Off only where builds run trusted code (a developer's laptop without root).
    build_firewall: bool = True
    # Base images a Dockerfile may name in FROM besides the two stacks (comma-separated
    # repository names with tags, loaded on the engine by the operator; never pulled).
    dockerfile_base_images: str = ""
    build_timeout: float = 900.0  # seconds for all buildpacks' compile steps together
    build_memory_mb: int = 2048
    build_cpus: float = 1.0
    build_pids: int = 1024
    build_uid: int = 10000
    source_max_bytes: int = 200 * 1024 * 1024  # the gzipped tarball as downloaded
    extracted_max_bytes: int = 1024 * 1024 * 1024  # the source unpacked (also the Docker context)
    # Checked while streaming, before anything is unpacked (services/builder/untar.py).
    extracted_max_entries: int = 100_000
    extracted_max_ratio: float = 100.0  # unpacked / compressed, past the first 16 MiB
    fetch_timeout: float = 120.0
    # A buildpack named by https:// URL is fetched in a container within this time, and
    # unpacks to at most this many bytes (a tmpfs of that size).
    buildpack_fetch_timeout: float = 120.0
    buildpack_max_bytes: int = 100 * 1024 * 1024
    # The egress guard (libs/egress.py) for customer URLs: CIDRs allowed despite the
    # default deny (SLIPWAY_EGRESS_ALLOW) and more to refuse (SLIPWAY_EGRESS_DENY).
    egress_allow: str = ""
    egress_deny: str = ""
    # The gateway's API URL: the only place the gateway's own signed source URLs are
    # fetched from. Empty: any loopback address (the gateway binds to loopback).
    gateway_url: str = ""
    # A build's output (services/builder/output.py): lines kept and sent live, then only
    # the last output_tail_lines, after a `[... N lines dropped]` marker.
    output_max_lines: int = 10_000
    output_max_bytes: int = 4 * 1024 * 1024
    output_tail_lines: int = 200
    config_timeout: float = 5.0  # waiting for gateway.CONFIG_SEALED_GET
    concurrency: int = 2  # builds at once in this builder
    # Builds (and their sealed output) are kept this long for BUILD_OUTPUT_GET and for
    # recognising redelivered commands; older ones are forgotten at start.
    keep_builds_days: float = 30.0
    docker_url: str | None = None  # None: the engine's usual socket

    # Where build folders go instead of <home>/builder/builds. Build containers mount them
    # by path, and the engine reads that path on *its* machine: a builder in a container
    # names here a host folder mounted at the same path (compose/docker-compose.yml). Each
    # builder takes a subfolder of its own (its instance, else its host name), since each
    # empties its folder at start.
    builds_root: str = ""

    def builds_dir(self) -> Path:
        """Scratch space for builds in progress (removed after each build)."""
        if self.builds_root:
            path = Path(self.builds_root) / (self.instance or socket.gethostname())
        else:
            path = self.state_dir("builder") / "builds"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def db_path(self) -> Path:
        return self.state_dir("builder") / "builder.db"
