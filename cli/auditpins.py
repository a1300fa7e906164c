"""What `audit --verify` remembers between runs: audit keys and chain heads, pinned on first use.

The file is `${SLIPWAY_CONFIG_DIR:-~/.config/slipway}/audit-pins.json`, per API URL:

    {"http://127.0.0.1:5100": {
        "keys":  {"<key_id>": "<public key hex>", ...},
        "heads": {"<team_id>": <the newest checkpoint verified>, ...}}}

A key seen once must stay listed by `GET /audit/keys` with the same bytes: a
platform that drops or swaps a key could then re-sign a rewritten log with a
key of its own, so a missing or changed key fails loudly instead of being
trusted afresh. The newest verified checkpoint of each team is kept the same
way, so a later chain must extend it (cutting the chain and re-signing its
shorter head is caught by anyone who verified before).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway.cli import config
from slipway.cli.errors import CliError


@dataclass
class Pins:
    """The pins of one API URL, read from and written back to `path`."""

    path: Path
    api_url: str
    keys: dict[str, str] = field(default_factory=dict)
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, env: Mapping[str, str], api_url: str) -> Pins:
        path = config.config_dir(env) / "audit-pins.json"
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            stored = {}
        except (OSError, ValueError) as exc:
            raise CliError(f"Cannot read {path} ({exc}): fix or remove the file.") from None
        mine = stored.get(api_url) or {}
        return cls(path, api_url, dict(mine.get("keys") or {}), dict(mine.get("heads") or {}))

    def save(self) -> None:
        """Write the pins (0600, replaced whole) keeping other API URLs' pins."""
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            stored = {}
        stored[self.api_url] = {"keys": self.keys, "heads": self.heads}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f, indent=2, sort_keys=True)
        os.replace(partial, self.path)

    def check_keys(self, served: Sequence[Mapping[str, Any]]) -> list[str]:
        """Fail if a pinned key is gone or changed; pin the new ones and return their ids."""
        listed = {str(key.get("key_id")): str(key.get("public_key")) for key in served}
        for key_id, public_key in sorted(self.keys.items()):
            if key_id not in listed:
                raise CliError(
                    f"Audit key {key_id}, pinned when this CLI first verified, is no longer"
                    " listed by GET /audit/keys: the platform dropped a key that signed this"
                    f" log, so it cannot be trusted (if your operator announced it, edit"
                    f" {self.path})."
                )
            if listed[key_id] != public_key:
                raise CliError(
                    f"Audit key {key_id} has CHANGED since this CLI pinned it: the platform"
                    " now shows other key bytes under the same id, so this log cannot be"
                    f" trusted (if your operator announced it, edit {self.path})."
                )
        new = sorted(set(listed) - set(self.keys))
        for key_id in new:
            self.keys[key_id] = listed[key_id]
        return new

    def public_keys(self) -> dict[str, bytes]:
        """The pinned keys as raw bytes, for `libs.auditchain`."""
        try:
            return {key_id: bytes.fromhex(value) for key_id, value in self.keys.items()}
        except ValueError:
            raise CliError(f"A pinned audit key in {self.path} is not hex.") from None
