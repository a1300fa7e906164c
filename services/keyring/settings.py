"""The keyring's settings, read from `SLIPWAY_*` environment variables.

SLIPWAY_HOME=var python -m slipway.services.keyring
SLIPWAY_MASTER_KEY_PATH=/etc/slipway/master.key python -m slipway.services.keyring
SLIPWAY_MASTER_KEY_ENV=SLIPWAY_KEYRING_MASTER_KEY SLIPWAY_KEYRING_MASTER_KEY=<base64> ...
SLIPWAY_RECOVERY_RECIPIENTS="age1... age1..." python -m slipway.services.keyring
"""

from __future__ import annotations

from pathlib import Path

from slipway.libs.crypto import age
from slipway.libs.service import Settings


class KeyringSettings(Settings, frozen=True, kw_only=True):
    """Where the master key comes from; the rest is what every service has."""

    # A 32-byte file, mode 0600 or stricter; created on first start when missing.
    # Empty: <home>/keyring/master.key.
    master_key_path: str = ""
    # The name of an environment variable holding the master key in base64 (set by an
    # orchestrator's secret store). When set, no key file is read or written.
    master_key_env: str = ""
    # age recipients (`age1...`, separated by spaces or commas) of the operator's offline
    # recovery key: when set, the master key is sealed to them when it is created and
    # after each rotation, in <home>/keyring/master-key.recovery.age.
    recovery_recipients: str = ""

    def keyring_dir(self) -> Path:
        """The keyring's own state folder (its database, and the master key by default)."""
        return self.state_dir("keyring")

    def db_path(self) -> Path:
        return self.keyring_dir() / "keyring.db"

    def master_key_file(self) -> Path:
        """The master key file this keyring reads (or creates)."""
        if self.master_key_path:
            return Path(self.master_key_path)
        return self.keyring_dir() / "master.key"

    def recovery_file(self) -> Path:
        """The master key sealed to the recovery recipients (when there are any)."""
        return self.keyring_dir() / "master-key.recovery.age"

    def recovery_public_keys(self) -> list[bytes]:
        """The recovery recipients' X25519 public keys; InvalidKey names a bad one."""
        text = self.recovery_recipients.replace(",", " ")
        return [age.parse_recipient(word) for word in text.split()]
