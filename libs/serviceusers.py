"""Services that need no root run as their own system users, `slipway-<service>`.

A supervisor running as root starts the gateway, the keyring, registry-proxy and the
log-shipper as accounts of their own, so that one broken into cannot read another's
database, keys or NATS password (a process's environment, /proc/<pid>/environ, is
readable by its own uid only). What that takes, done here once at each start before any
such child runs:

- the account, made when missing: a system user and group, no login shell and no home
  (`/nonexistent`, as Debian's system users: several installations on one machine share
  the account, so no one state folder is its home; its children get HOME=<state>);
- its state folder `<home>/<service>`, mode 0700, and everything in it chowned to it
  (links not followed), so folders from a run as root become its own;
- paths it uses outside that folder (`outside_paths`): registry-proxy's registry
  storage, a keyring master key named by SLIPWAY_MASTER_KEY_PATH, the log-shipper's
  socket folder `<dyno_log_dir>/<host_id>` (0755, not 0700: dynos, uid 10000, reach
  its socket through a read-only bind mount; the folders above it become searchable);
  the backup service's run folders of its host `<addon_run_dir>/<host_id>` (each
  database's socket and archived WAL are reached through them) and its storage;
- when the bus runs TLS, a copy of the CA and of its own client certificate and key in
  `<state>/nats-tls/` (SLIPWAY_NATS_TLS_DIR for that child), readable by it alone;
- search permission (x for others, never r) on the home, the interpreter's and the
  code's folders and each folder above them that lacks it (a Python under /root, a
  home under pytest's root-only temporary folder), so the account can reach them;
- a probe run as the account, so a folder it still cannot reach, or code it cannot
  read, stops the start with a message instead of a crash loop.

The backup service reaches each database through a socket in the database's run
folder, never through Docker; the scheduler (told the account's name through
SLIPWAY_BACKUP_USER) makes those folders the backup account's.

The monitor reads the bus and measures its own folder, nothing else (it learns the other
folders' use from their services' readings).

The builder, scheduler and network-wirer keep root: each talks to the Docker Engine API,
and whoever holds the Docker socket is root on the host (the builder also writes iptables
rules). So does the router (HAProxy): network-wirer drives it through sockets in a
folder that must be its own user's (libs/haproxy/paths.py). The log-shipper needs
no Docker: its dynos are the scheduler's word and their metrics the kernel's (world-
readable /proc/<pid>/cgroup and /sys/fs/cgroup); a drain CA file (SLIPWAY_DRAIN_CA_FILE)
must be readable by others, as a CA certificate may be.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from slipway.contracts.backup import addon_run_root
from slipway.contracts.dynoinit import host_log_dir
from slipway.contracts.subjects import Service

# Neither root nor the Docker socket: these run as their own users.
OWN_USER_SERVICES: frozenset[str] = frozenset(
    {
        Service.GATEWAY,
        Service.KEYRING,
        Service.REGISTRY_PROXY,
        Service.LOG_SHIPPER,
        Service.BACKUP,
        Service.MONITOR,
    }
)
USER_PREFIX = "slipway-"
SWITCH_ENV = "SLIPWAY_SERVICE_USERS"  # "0": every service runs as the supervisor's user
TLS_FOLDER = "nats-tls"
_NOLOGIN = "/usr/sbin/nologin"
_NO_HOME = "/nonexistent"
_USERADD_NAME_IN_USE = 9  # useradd's exit status when another process made the user first


class ServiceUserError(RuntimeError):
    """An account could not be made, or cannot reach what its service needs."""


@dataclass(frozen=True)
class Account:
    """A system user a child runs as, and the folder that is its own."""

    name: str
    uid: int
    gid: int
    state: Path

    def env(self) -> dict[str, str]:
        """What a child running as this account finds about itself in its environment."""
        # HOME must be somewhere it may read: git and Python look there for their settings.
        return {"HOME": str(self.state), "USER": self.name, "LOGNAME": self.name}


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether service users are wanted (SLIPWAY_SERVICE_USERS, default on)."""
    env = os.environ if environ is None else environ
    return env.get(SWITCH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def user_name(service: str) -> str:
    """The account a service runs as: `slipway-<service>`."""
    return f"{USER_PREFIX}{service}"


def ensure_account(name: str, state: Path) -> Account:
    """The system user `name`, made (with its own group) if it does not exist yet."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _useradd(name)
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ServiceUserError(f"account {name} is root (uid/gid 0): refusing to use it")
    return Account(name, entry.pw_uid, entry.pw_gid, state)


def _useradd(name: str) -> None:
    shell = _NOLOGIN if os.path.exists(_NOLOGIN) else "/bin/false"
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        *("--home-dir", _NO_HOME),
        *("--shell", shell),
        *("--comment", "Slipway service"),
        name,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ServiceUserError(f"cannot make account {name}: {exc} (install passwd)") from None
    if done.returncode not in (0, _USERADD_NAME_IN_USE):
        raise ServiceUserError(
            f"useradd {name} failed: {done.stderr.strip()} (or run without service users:"
            f" {SWITCH_ENV}=0, --same-user)"
        )


def give_folder(folder: Path, account: Account, mode: int = 0o700) -> int:
    """Make `folder` the account's (`mode`, 0700: its alone; made if missing); entries changed.

    Only run while no process of the account runs: the walk goes by path. Links are
    never followed, and a file with several hard links is left as it is: it could be
    a link to something outside that the account was not given.
    """
    if folder.is_symlink():
        raise ServiceUserError(
            f"{folder} is a symbolic link: refusing to give it to {account.name}"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    changed = 0
    for root, folders, files in os.walk(folder, followlinks=False):
        for name in [*folders, *files]:
            changed += _chown_one(Path(root, name), account)
    changed += _chown_one(folder, account)
    folder.chmod(mode)
    return changed


def _chown_one(path: Path, account: Account) -> int:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0
    if (info.st_uid, info.st_gid) == (account.uid, account.gid):
        return 0
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        return 0
    os.chown(path, account.uid, account.gid, follow_symlinks=False)
    return 1


def give_file(path: Path, account: Account) -> None:
    """Give one existing file (not a link) to the account, owner-only."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise ServiceUserError(
            f"{path} is not a regular file: refusing to give it to {account.name}"
        )
    os.chown(path, account.uid, account.gid, follow_symlinks=False)
    path.chmod(stat.S_IMODE(info.st_mode) & 0o700)


@dataclass(frozen=True)
class Outside:
    """What a service uses outside `<home>/<service>`, that its account must own."""

    folders: tuple[Path, ...] = ()
    files: tuple[Path, ...] = ()
    # The account's, but others may enter and read them (0755): a socket others connect to.
    shared_folders: tuple[Path, ...] = ()
    # The account's (0700), but not what is inside: others made it and own it (the backup
    # service's run folders, each one made by the scheduler and shared with a database).
    roots: tuple[Path, ...] = ()


def outside_paths(service: str, home: Path, environ: Mapping[str, str]) -> Outside:
    """The folders and files `service` uses outside its state folder, from its settings."""
    if service == Service.REGISTRY_PROXY:
        # Distribution (its child) keeps the apps' image layers there.
        storage = environ.get("SLIPWAY_REGISTRY_STORAGE_DIR") or home / "registry"
        return Outside(folders=(Path(storage),))
    if service == Service.KEYRING and environ.get("SLIPWAY_MASTER_KEY_PATH"):
        return Outside(files=(Path(environ["SLIPWAY_MASTER_KEY_PATH"]),))
    if service == Service.LOG_SHIPPER:
        # Where this host's dyno inits connect (LogShipperSettings.socket_folder()).
        host_id = environ.get("SLIPWAY_HOST_ID") or "local"
        socket = host_log_dir(environ.get("SLIPWAY_DYNO_LOG_DIR", ""), home, host_id)
        return Outside(shared_folders=(Path(socket),))
    if service == Service.BACKUP:
        # The databases' run folders of its host (their backup sockets, archived WAL,
        # staged restores: the scheduler makes each one the backup user's), its storage.
        host_id = environ.get("SLIPWAY_HOST_ID") or "local"
        runs = addon_run_root(environ.get("SLIPWAY_ADDON_RUN_DIR", ""), home) / host_id
        folders = []
        for name in ("SLIPWAY_BACKUP_STORAGE_DIR", "SLIPWAY_BACKUP_COPY_TO"):
            if environ.get(name) and "://" not in environ[name]:
                folders.append(Path(environ[name]))
        return Outside(folders=tuple(folders), roots=(runs.absolute(),))
    return Outside()


def give_outside(outside: Outside, account: Account) -> None:
    """Give the account its outside folders (made if missing) and files (when they exist)."""
    for folder in outside.folders:
        give_folder(folder, account)
        # Its own, but it must also get there: the folders above become searchable.
        open_path_to(folder.parent)
    for folder in outside.shared_folders:
        # The folders above stay root's and unlistable: made owner-only, then searchable.
        for above in [*reversed(folder.parents)]:
            if not above.exists():
                above.mkdir(mode=0o700)
        give_folder(folder, account, 0o755)
        open_path_to(folder.parent)
    for root in outside.roots:
        if root.is_symlink():
            raise ServiceUserError(
                f"{root} is a symbolic link: refusing to give it to {account.name}"
            )
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _chown_one(root, account)
        root.chmod(0o700)
        open_path_to(root.parent)
    for path in outside.files:
        # A missing one is made by the service itself, in a folder it must be able to write.
        if path.exists() or path.is_symlink():
            give_file(path, account)


def open_path_to(*folders: Path) -> list[Path]:
    """Let others search (x, not read) each folder and every folder above it; the ones changed.

    A service's account must pass through them to reach its own 0700 folder, this
    interpreter and the code; listing them stays refused.
    """
    changed: list[Path] = []
    for folder in folders:
        for path in [*reversed(folder.parents), folder]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if not mode & stat.S_IXOTH:
                path.chmod(mode | stat.S_IXOTH)
                changed.append(path)
    return changed


def needed_folders(home: Path) -> list[Path]:
    """What every account must be able to reach: the home, the interpreter, the code."""
    interpreter = Path(sys.executable).resolve().parent
    return [home, interpreter, Path(sys.prefix), Path(sys.base_prefix), _CODE]


def hand_over_tls(tls_dir: Path, nats_user: str, account: Account) -> Path:
    """Copy the CA and `nats_user`'s client certificate and key into the account's folder.

    The folder is the account's: whatever it left at `nats-tls` (a link planted to make
    root write elsewhere, say) is removed and the folder made anew, and every write goes
    through directory descriptors that follow no link.
    """
    sources = {
        "ca.pem": tls_dir / "ca.pem",
        f"{nats_user}.pem": tls_dir / f"{nats_user}.pem",
        f"{nats_user}.key": tls_dir / f"{nats_user}.key",
    }
    contents = {name: path.read_bytes() for name, path in sources.items()}
    state_fd = os.open(account.state, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _remove_entry(state_fd, TLS_FOLDER)
        os.mkdir(TLS_FOLDER, 0o700, dir_fd=state_fd)
        tls_fd = os.open(TLS_FOLDER, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=state_fd)
        try:
            for name, data in contents.items():
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                fd = os.open(name, flags, 0o600, dir_fd=tls_fd)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    os.fchown(out.fileno(), account.uid, account.gid)
            os.fchmod(tls_fd, 0o700)
            os.fchown(tls_fd, account.uid, account.gid)
        finally:
            os.close(tls_fd)
    finally:
        os.close(state_fd)
    return account.state / TLS_FOLDER


def _remove_entry(dir_fd: int, name: str) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


_CODE = Path(__file__).resolve().parents[1]
# Run as the account: the interpreter and the code must be readable, its folder reachable.
_PROBE = "import os, sys, slipway.libs.service; os.listdir(sys.argv[1])"


async def probe(account: Account, env: Mapping[str, str]) -> None:
    """Raise ServiceUserError unless the account can import Slipway and enter its folder."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        str(account.state),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**env, **account.env()},
        cwd=account.state,
        user=account.uid,
        group=account.gid,
        extra_groups=[],
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ServiceUserError(
            f"{account.name} cannot run its service: {last[0]}. Every folder above"
            f" {account.state} and the code in {_CODE} must be"
            f" readable by others, or run without service users ({SWITCH_ENV}=0, --same-user)"
        )


def is_root() -> bool:
    """Whether this process may make accounts and start children as them."""
    return os.geteuid() == 0
