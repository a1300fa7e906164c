"""The keyring's settings, read from `SLIPWAY_*` environment variables.

SLIPWAY_HOME=var python -m slipway.services.keyring
SLIPWAY_MASTER_KEY_PATH=/etc/slipway/master.key python -m slipway.services.keyring
SLIPWAY_MASTER_KEY_ENV=SLIPWAY_KEYRING_MASTER_KEY SLIPWAY_KEYRING_MASTER_KEY=<base64> ...
"""

from __future__ import annotations

from pathlib import Path

from slipway.libs.service import Settings


class KeyringSettings(Settings, frozen=True, kw_only=True):
    """Where the master key comes from; the rest is what every service has."""

    # A 32-byte file, mode 0600 or stricter; created on first start when missing.
    # Empty: <home>/keyring/master.key.
    master_key_path: str = ""
    # The name of an environment variable holding the master key in base64 (set by an
    # orchestrator's secret store). When set, no key file is read or written.
    master_key_env: str = ""

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
