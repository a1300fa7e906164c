"""The image config a Dockerfile describes, kept by us rather than read back from the engine.

The engine's commit merges the step container's own config into the image (its
Env, and its Cmd when the image has none), so every commit sends this whole config:
what the Dockerfile says, and nothing of the step that made the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_SHELL = ["/bin/sh", "-c"]
# An image whose Dockerfile sets neither CMD nor ENTRYPOINT still gets a command from the
# engine's commit (the step container's); this one says what is missing instead.
NO_COMMAND = ["/bin/sh", "-c", "echo 'the Dockerfile sets no CMD or ENTRYPOINT' >&2; exit 64"]


@dataclass
class ImageConfig:
    """The fields of an image's config a Dockerfile sets."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    exposed: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    stop_signal: str = ""
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    healthcheck: dict[str, Any] | None = None

    @classmethod
    def of_image(cls, info: dict[str, Any]) -> ImageConfig:
        """The config an image already has (what a stage inherits from its base)."""
        config = info.get("Config") or {}
        env = dict(item.partition("=")[::2] for item in config.get("Env") or [])
        return cls(
            env=env,
            workdir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
            cmd=config.get("Cmd"),
            entrypoint=config.get("Entrypoint"),
            exposed=dict(config.get("ExposedPorts") or {}),
            labels=dict(config.get("Labels") or {}),
            volumes=dict(config.get("Volumes") or {}),
            stop_signal=config.get("StopSignal") or "",
            shell=list(config.get("Shell") or DEFAULT_SHELL),
            healthcheck=config.get("Healthcheck"),
        )

    def copy(self) -> ImageConfig:
        """An independent copy (a later stage must not change an earlier one's)."""
        return ImageConfig(
            dict(self.env), self.workdir, self.user,
            list(self.cmd) if self.cmd is not None else None,
            list(self.entrypoint) if self.entrypoint is not None else None,
            dict(self.exposed), dict(self.labels), dict(self.volumes),
            self.stop_signal, list(self.shell), self.healthcheck,
        )  # fmt: skip

    def env_list(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.env.items()]

    def has_command(self) -> bool:
        return bool(self.cmd) or bool(self.entrypoint)

    def to_engine(self, extra_labels: dict[str, str]) -> dict[str, Any]:
        """The engine's config body for a commit (see the module doc)."""
        return {
            "Env": self.env_list(),
            "WorkingDir": self.workdir,
            "User": self.user,
            "Cmd": self.cmd if self.has_command() else NO_COMMAND,
            "Entrypoint": self.entrypoint,
            "ExposedPorts": self.exposed or None,
            "Labels": {**self.labels, **extra_labels},
            "Volumes": self.volumes or None,
            "StopSignal": self.stop_signal,
            "Shell": self.shell,
            "Healthcheck": self.healthcheck,
        }
