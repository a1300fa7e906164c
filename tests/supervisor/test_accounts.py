"""Which children get their own accounts, and how their folders are handed over safely."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from slipway.libs import serviceusers
from slipway.libs.serviceusers import Account
from slipway.libs.supervisor import _parser, discover_services, service_specs

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


@pytest.fixture
def nobody(tmp_path: Path) -> Account:
    """An unprivileged account that exists on every Debian machine, given a folder."""
    entry = pwd.getpwnam("nobody")
    return Account("nobody", entry.pw_uid, entry.pw_gid, tmp_path / "state")


def test_only_services_that_need_neither_root_nor_docker_get_their_own_users() -> None:
    """Services that need neither root nor Docker run as slipway-<name>; the others as root."""
    specs = service_specs(discover_services(), own_users=True)
    users = {spec.name: spec.user for spec in specs}
    assert users == {
        "keyring": "slipway-keyring",
        "registry-proxy": "slipway-registry-proxy",
        "builder": None,
        "log-shipper": "slipway-log-shipper",
        "network-wirer": None,
        "scheduler": None,
        "gateway": "slipway-gateway",
        "backup": "slipway-backup",
        "monitor": "slipway-monitor",
    }
    assert {spec.user for spec in service_specs(discover_services())} == {None}
    # The scheduler makes each database's run folder the backup account's.
    scheduler = next(s for s in specs if s.name == "scheduler")
    assert scheduler.env == {"SLIPWAY_BACKUP_USER": "slipway-backup"}


@pytest.mark.parametrize(
    ("argv", "env", "same_user"),
    [
        ([], {}, False),
        (["--same-user"], {}, True),
        ([], {"SLIPWAY_SERVICE_USERS": "0"}, True),
        ([], {"SLIPWAY_SERVICE_USERS": "1"}, False),
    ],
)
def test_service_users_are_on_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], same_user: bool
) -> None:
    """`--same-user` or SLIPWAY_SERVICE_USERS=0 keep every child as the supervisor's user."""
    monkeypatch.delenv("SLIPWAY_SERVICE_USERS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _parser().parse_args(argv).same_user is same_user


@needs_root
def test_a_folder_is_given_without_following_links(tmp_path: Path, nobody: Account) -> None:
    """Everything in the folder changes hands; what a link in it points to does not."""
    outside = tmp_path / "outside.key"
    outside.write_text("root's\n")
    nobody.state.mkdir(mode=0o755)
    (nobody.state / "sub").mkdir()
    (nobody.state / "sub" / "data.db").write_text("mine\n")
    (nobody.state / "link").symlink_to(outside)

    serviceusers.give_folder(nobody.state, nobody)

    for path in (nobody.state, nobody.state / "sub", nobody.state / "sub" / "data.db"):
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (nobody.uid, nobody.gid), path
    assert stat.S_IMODE(nobody.state.stat().st_mode) == 0o700
    assert (nobody.state / "link").lstat().st_uid == nobody.uid
    assert outside.stat().st_uid == 0


@needs_root
def test_tls_copies_replace_whatever_the_account_planted(tmp_path: Path, nobody: Account) -> None:
    """A link planted at nats-tls cannot make root write elsewhere; the copies are the account's."""
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("ca.pem", "nobody.pem", "nobody.key"):
        (tls / name).write_text(f"{name}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    serviceusers.give_folder(nobody.state, nobody)
    (nobody.state / serviceusers.TLS_FOLDER).symlink_to(elsewhere)

    folder = serviceusers.hand_over_tls(tls, "nobody", nobody)

    assert list(elsewhere.iterdir()) == []
    assert not folder.is_symlink() and stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("ca.pem", "nobody.pem", "nobody.key"):
        info = (folder / name).lstat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (nobody.uid, 0o600), name
        assert (folder / name).read_text() == f"{name}\n"


@needs_root
def test_folders_on_the_way_become_searchable_but_not_listable(tmp_path: Path) -> None:
    """Only the x bit for others is added, and only where it was missing."""
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "a").chmod(0o700)
    deep.chmod(0o750)

    changed = serviceusers.open_path_to(deep)

    assert tmp_path / "a" in changed and deep in changed
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o701
    assert stat.S_IMODE(deep.stat().st_mode) == 0o751
    assert serviceusers.open_path_to(deep) == []


def test_paths_outside_the_state_folder_come_from_the_services_settings(tmp_path: Path) -> None:
    """registry-proxy owns the registry's storage; the keyring a master key named elsewhere."""
    assert serviceusers.outside_paths("registry-proxy", tmp_path, {}).folders == (
        tmp_path / "registry",
    )
    key = tmp_path / "etc" / "master.key"
    outside = serviceusers.outside_paths("keyring", tmp_path, {"SLIPWAY_MASTER_KEY_PATH": str(key)})
    assert outside.files == (key,)
    assert serviceusers.outside_paths("gateway", tmp_path, {}) == serviceusers.Outside()


def test_the_log_shipper_is_given_its_hosts_socket_folder(tmp_path: Path) -> None:
    """`<dyno_log_dir>/<host_id>`: by default `<home>/run/dynolog/local`; settings move it."""
    assert serviceusers.outside_paths("log-shipper", tmp_path, {}).shared_folders == (
        tmp_path / "run" / "dynolog" / "local",
    )
    moved = serviceusers.outside_paths(
        "log-shipper",
        tmp_path,
        {"SLIPWAY_DYNO_LOG_DIR": "/srv/dynolog", "SLIPWAY_HOST_ID": "h2"},
    )
    assert moved == serviceusers.Outside(shared_folders=(Path("/srv/dynolog/h2"),))


@needs_root
def test_a_shared_folder_is_the_accounts_open_to_others_and_reachable(
    tmp_path: Path, nobody: Account
) -> None:
    """The socket folder: the account's, 0755 (dynos connect), the folders above searchable."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    sockets = home / "run" / "dynolog" / "local"

    serviceusers.give_outside(serviceusers.Outside(shared_folders=(sockets,)), nobody)

    info = sockets.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (nobody.uid, 0o755)
    for folder in (home, home / "run", home / "run" / "dynolog"):
        mode = stat.S_IMODE(folder.stat().st_mode)
        assert (folder.stat().st_uid, mode & 0o005) == (0, 0o001), folder


@needs_root
def test_an_outside_file_that_is_a_link_is_refused(tmp_path: Path, nobody: Account) -> None:
    """A master key path that is a link is not followed to give its target away."""
    target = tmp_path / "shadow"
    target.write_text("root's\n")
    link = tmp_path / "master.key"
    link.symlink_to(target)

    with pytest.raises(serviceusers.ServiceUserError, match="not a regular file"):
        serviceusers.give_outside(serviceusers.Outside(files=(link,)), nobody)
    assert target.stat().st_uid == 0
