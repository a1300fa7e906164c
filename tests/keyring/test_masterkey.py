"""The master key: created 0600, reused, and refused when it is not safe to use."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.contracts.keyring import Purpose
from slipway.libs.crypto import envelope
from slipway.libs.crypto.binding import Binding
from slipway.libs.natsserver import NatsServer
from slipway.services.keyring.errors import MasterKeyError
from slipway.services.keyring.masterkey import load_master_key
from slipway.services.keyring.settings import KeyringSettings
from tests.keyring.conftest import BusFactory, RunningKeyring, settings_for, start_keyring


def test_created_with_mode_0600(home: Path) -> None:
    """On first start the key file appears at <home>/keyring/master.key, 32 bytes, mode 0600."""
    settings = KeyringSettings(home=str(home))
    load_master_key(settings)
    path = home / "keyring" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_existing_key_is_reused(home: Path) -> None:
    """A second load reads the same key instead of making a new one."""
    settings = KeyringSettings(home=str(home))
    load_master_key(settings)
    first = (home / "keyring" / "master.key").read_bytes()
    load_master_key(settings)
    assert (home / "keyring" / "master.key").read_bytes() == first


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o660])
def test_looser_permissions_are_refused(home: Path, mode: int) -> None:
    """A key file any account but its owner could read (or run) is refused, naming the fix."""
    settings = KeyringSettings(home=str(home))
    load_master_key(settings)
    path = home / "keyring" / "master.key"
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match=f"mode {mode:04o}.*chmod 600"):
        load_master_key(settings)


def test_read_only_key_is_accepted(home: Path) -> None:
    """Mode 0400 is stricter than 0600, so it is fine."""
    settings = KeyringSettings(home=str(home))
    load_master_key(settings)
    (home / "keyring" / "master.key").chmod(0o400)
    load_master_key(settings)


def test_operator_path_is_used(home: Path, tmp_path: Path) -> None:
    """master_key_path puts the key where the operator says, not under home."""
    path = tmp_path / "secrets" / "slipway.key"
    load_master_key(KeyringSettings(home=str(home), master_key_path=str(path)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (home / "keyring" / "master.key").exists()


def test_wrong_size_file_is_refused(home: Path, tmp_path: Path) -> None:
    """A key file that is not exactly 32 bytes (say, base64 text) is refused."""
    path = tmp_path / "master.key"
    path.write_bytes(base64.b64encode(os.urandom(32)))
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="exactly 32 raw bytes"):
        load_master_key(KeyringSettings(home=str(home), master_key_path=str(path)))


def test_key_from_environment_variable(home: Path) -> None:
    """master_key_env reads a base64 key from the named variable and writes no file."""
    key = base64.b64encode(os.urandom(32)).decode()
    settings = KeyringSettings(home=str(home), master_key_env="MY_MASTER_KEY")
    master = load_master_key(settings, {"MY_MASTER_KEY": key})
    assert master.source == "env:MY_MASTER_KEY"
    assert not (home / "keyring" / "master.key").exists()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "not set"),
        ({"MY_MASTER_KEY": "not base64!"}, "not valid base64"),
        ({"MY_MASTER_KEY": base64.b64encode(b"short").decode()}, "32 bytes"),
    ],
    ids=["missing", "not-base64", "short"],
)
def test_bad_environment_key_is_refused(home: Path, environ: dict[str, str], message: str) -> None:
    """A missing, malformed or short key in the variable is refused, saying which."""
    settings = KeyringSettings(home=str(home), master_key_env="MY_MASTER_KEY")
    with pytest.raises(MasterKeyError, match=message):
        load_master_key(settings, environ)


def test_path_and_environment_together_are_refused(home: Path) -> None:
    """Naming both a file and a variable is ambiguous, so refused."""
    settings = KeyringSettings(home=str(home), master_key_env="K", master_key_path="/x")
    with pytest.raises(MasterKeyError, match="only one"):
        load_master_key(settings, {"K": base64.b64encode(os.urandom(32)).decode()})


def test_master_key_never_shows_in_repr(home: Path) -> None:
    """The key object's repr names its source, not its bytes."""
    master = load_master_key(KeyringSettings(home=str(home)))
    key = (home / "keyring" / "master.key").read_bytes()
    assert key.hex() not in repr(master) and repr(key) not in repr(master)


@pytest.mark.integration
async def test_data_survives_a_restart(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Data encrypted before a restart decrypts after it: the key file is reused, not replaced."""
    gateway = await bus_factory("gateway")
    place = Binding(team=team, app="a", kind="config", record="r")
    sealed = await envelope.encrypt(gateway, team, Purpose.CONFIG, place, b"s3cr3t")
    key_file = keyring.settings.master_key_file()
    before = key_file.read_bytes()
    await keyring.restart()
    assert key_file.read_bytes() == before
    assert await envelope.decrypt(gateway, team, Purpose.CONFIG, place, sealed) == b"s3cr3t"


@pytest.mark.integration
async def test_service_refuses_loose_key_file(nats_server: NatsServer, home: Path) -> None:
    """The keyring does not start on a master key file with mode 0644."""
    settings = settings_for(nats_server, home)
    load_master_key(settings)
    settings.master_key_file().chmod(0o644)
    with pytest.raises(MasterKeyError, match="0644"):
        await start_keyring(settings)


@pytest.mark.integration
async def test_service_refuses_another_master_key(
    keyring: RunningKeyring, nats_server: NatsServer, home: Path
) -> None:
    """A keyring started on an existing database with a new master key refuses to run."""
    await keyring.stop()
    key_file = keyring.settings.master_key_file()
    key_file.write_bytes(os.urandom(32))
    with pytest.raises(MasterKeyError, match="does not open this keyring's database"):
        await start_keyring(keyring.settings)


@pytest.mark.integration
def test_command_exits_with_a_clear_message(nats_server: NatsServer, home: Path) -> None:
    """`python -m slipway.services.keyring` on a loose key prints why and exits 2, no traceback."""
    key_file = home / "keyring" / "master.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o644)
    env = {**os.environ, "SLIPWAY_NATS_URL": nats_server.url, "SLIPWAY_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "slipway.services.keyring"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "keyring: refusing to start" in done.stderr and "chmod 600" in done.stderr
    assert "Traceback" not in done.stderr
