"""The scheduler's settings (`SLIPWAY_*`): engines, health timings, backoff, drain."""

from __future__ import annotations

import functools
import grp
import hashlib
import pwd
from pathlib import Path
from typing import Annotated

import msgspec

from slipway.contracts import backup, dynoinit
from slipway.libs import appnet
from slipway.libs.service import Settings

INIT_DIR = Path("/usr/local/lib/slipway")
INIT_SOURCE = Path(__file__).resolve().parents[2] / "dynoinit" / "init.c"


@functools.cache  # read once: the source does not change under a running process
def built_init() -> Path:
    """Where scripts/build-init puts the init of this source tree (named by its hash)."""
    try:
        digest = hashlib.sha256(INIT_SOURCE.read_bytes()).hexdigest()[:12]
    except OSError:  # installed without the source: the stable name
        return INIT_DIR / "dyno-init"
    return INIT_DIR / f"dyno-init-{digest}"


class SchedulerSettings(Settings, frozen=True, kw_only=True):
    """Every timing is in seconds; tests shorten them, production keeps Heroku's."""

    # The engine registered as host `local` at first start ("" registers none).
    local_engine: str = "unix:///var/run/docker.sock"
    local_host_id: str = "local"
    local_address: str = "127.0.0.1"
    # Heroku R10: a web dyno must bind $PORT within this long of starting.
    boot_timeout: float = 60.0
    # SIGTERM, then SIGKILL after this long (Heroku: 30 s).
    stop_grace: float = 30.0
    # Between a dyno leaving the router (published `down`) and its SIGTERM.
    deregister_delay: float = 1.0
    # Crash restarts wait backoff_base * 2^(restarts), at most backoff_cap ...
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    # ... and the count starts again once a dyno stayed up this long.
    healthy_reset: float = 600.0
    # A dyno whose start a host refused this many times in a row (pull, create, start)
    # goes to another host; that host takes none of the app's new dynos for
    # `refused_host_cooloff` seconds unless no other host has room (starts.py).
    move_after_start_failures: int = 3
    refused_host_cooloff: float = 600.0
    # How often each engine is listed (crashes, lost hosts) and everything reconciled.
    poll_interval: float = 1.0
    reconcile_interval: float = 15.0
    # An engine that has not answered for this long is down; its dynos move.
    host_down_grace: float = 10.0
    engine_timeout: float = 5.0
    # The process types' container port ($PORT); published on a port Docker picks.
    port: int = 5000
    # The release phase (Procfile `release:`) is killed after this long.
    release_phase_timeout: float = 600.0
    tmp_size: str = "64m"
    # Every dyno's memory quota in MB in place of its size's (its hard limit follows at
    # `MEMORY_HARD_LIMIT_FACTOR` times it); 0: the size's. For tests, whose memory hogs
    # must stay small: placement and `ps` keep counting the size's memory.
    dyno_memory_mb: int = 0
    # The dyno init on every Docker host, mounted read-only at /.slipway/init in every
    # dyno; "": `built_init()`. A remote host needs the same file at the same path.
    dyno_init: str = ""
    # The folder of per-host log folders (`<dir>/<host id>/logs.sock`, the log-shipper's
    # socket), mounted read-only at /.slipway/log; "": <home>/run/dynolog. The
    # log-shipper reads the same setting (SLIPWAY_DYNO_LOG_DIR).
    dyno_log_dir: str = ""
    # Each app network takes a /<app_subnet_prefix> from here on each host where the app
    # has containers (libs/appnet.py); "": the scope's pool (10.210.0.0/16 in the default
    # scope, contracts/scope.py). A /16 holds 2,048 /27s: 2,048 apps with dynos per host.
    app_network_pool: str = ""
    # 27: 29 addresses per app and host, more dynos of one app than a host runs.
    app_subnet_prefix: Annotated[
        int, msgspec.Meta(ge=appnet.MIN_SUBNET_PREFIX, le=appnet.MAX_SUBNET_PREFIX)
    ] = appnet.DEFAULT_SUBNET_PREFIX
    # The add-ons' run folders (`<dir>/<host id>/<addon id>`, mounted at /run/slipway in
    # each database: its second socket, archive/, restore/); "": <home>/run/addons. The
    # backup service reads the same setting (SLIPWAY_ADDON_RUN_DIR).
    addon_run_dir: str = ""
    # The backup service's OS user: it owns every run folder, and its group is the one the
    # databases' sockets and archived WAL belong to (each database container holds that
    # group). "": root, whose group 0 the containers then hold: give the backup service a
    # user of its own wherever it does not run as root.
    backup_user: str = ""
    # How long a restored database may take to replay its WAL before it counts as failed.
    restore_timeout: float = 3600.0
    # `scope` (every Settings has it) picks the containers it labels, lists and adopts.

    def __post_init__(self) -> None:
        # A pool without room for one subnet would fail at the first dyno: refused at start.
        appnet.parse_pool(self.app_network_pool or self.scoped.pool, self.app_subnet_prefix)

    def init_path(self) -> str:
        """The host path of the dyno init."""
        return self.dyno_init or str(built_init())

    def log_root(self) -> Path:
        """The folder of every host's log folder (absolute: Docker mounts from it)."""
        return dynoinit.log_root(self.dyno_log_dir, self.home).absolute()

    def log_dir(self, host_id: str) -> str:
        """The host folder mounted at /.slipway/log in the dynos of `host_id`."""
        return str(self.log_root() / host_id)

    def run_root(self) -> Path:
        """The folder of every host's add-on run folders (absolute: Docker mounts from it)."""
        return backup.addon_run_root(self.addon_run_dir, self.home).absolute()

    def run_owner(self) -> tuple[int, int]:
        """(uid, gid) of `backup_user`: owner and group of the run folders."""
        if not self.backup_user:
            return 0, 0
        try:
            entry = pwd.getpwnam(self.backup_user)
            # Its primary group, checked here so a broken account fails before Docker does.
            grp.getgrgid(entry.pw_gid)
        except KeyError:
            raise ValueError(
                f"SLIPWAY_BACKUP_USER {self.backup_user!r} is no user (with a group) here"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def db_path(self) -> Path:
        return self.state_dir("scheduler") / "scheduler.db"
