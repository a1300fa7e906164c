"""Typed settings read from the environment (`SLIPWAY_<FIELD>`), one Struct per service.

class KeyringSettings(Settings, frozen=True, kw_only=True):
    master_key_path: str = ""

settings = load_settings(KeyringSettings)   # reads SLIPWAY_MASTER_KEY_PATH, ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec

from slipway.contracts.scope import SCOPE_PATTERN, Scope
from slipway.libs.errors import InvalidRequest


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What every service needs; services subclass it for their own fields."""

    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    home: str = "var"
    log_format: str = "auto"  # auto: JSON off a terminal, console on one; or json / console
    log_level: str = "info"
    instance: str | None = None
    shutdown_grace: float = 60.0
    # The installation this process belongs to (contracts/scope.py): the Docker objects,
    # label values and iptables chains it makes or looks for are named from it, so a
    # second installation on the machine (the test suite) never meets them. "": default.
    scope: Annotated[str, msgspec.Meta(pattern=SCOPE_PATTERN)] = ""
    # Disk pressure (libs/diskwatch.py): how often each service measures the folders it
    # writes, and the use (percent) above which the gateway refuses new builds, sources
    # and add-ons.
    disk_interval: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    disk_high_water: Annotated[float, msgspec.Meta(gt=0, le=100)] = 90.0
    # Metrics (libs/metrics.py): on a 0600 unix socket in the state folder; "off" also takes
    # them off the request paths. A TCP port is opt-in (0: none), on loopback unless the
    # operator names another address.
    metrics: Literal["on", "off"] = "on"
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    metrics_host: str = "127.0.0.1"

    @property
    def scoped(self) -> Scope:
        """The names of this installation's objects on a shared machine."""
        return Scope(self.scope)

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    def state_dir(self, service: str) -> Path:
        """The folder a service keeps its own state in, created on demand."""
        path = self.home_path / service
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path


S = TypeVar("S", bound=Settings)


class SettingsError(InvalidRequest):
    """An environment variable that does not fit its setting."""


def load_settings(
    cls: type[S], environ: Mapping[str, str] | None = None, prefix: str = "SLIPWAY_"
) -> S:
    """Build `cls` from `SLIPWAY_*` variables; a bad value names its variable."""
    env = os.environ if environ is None else environ
    data: dict[str, str] = {}
    for field in msgspec.structs.fields(cls):
        name = prefix + field.name.upper()
        if name in env:
            data[field.name] = env[name]
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"bad setting: {exc} (from {prefix}* environment variables)") from None
