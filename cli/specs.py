"""Parsing of the small languages on the command line: scale specs, KEY=VALUE, release names.

All pure; each failure is a `UsageError` whose message shows the accepted form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from slipway.cli.errors import UsageError

# Procfile process types: letters, digits, '_' and '-' (Heroku's rule).
_PROCESS_TYPE = r"[A-Za-z0-9_][A-Za-z0-9_-]*?"
_SCALE = re.compile(
    rf"^(?P<type>{_PROCESS_TYPE})(?P<op>[=+-])(?P<amount>\d+)(?::(?P<size>[A-Za-z0-9][A-Za-z0-9.-]*))?$"
)
_SIZE_ONLY = re.compile(rf"^(?P<type>{_PROCESS_TYPE})[=:](?P<size>[A-Za-z][A-Za-z0-9.-]*)$")
# The API decides which names it accepts; the CLI only catches the typos that
# would otherwise be sent silently, such as `FOO =bar` or `=bar`.
_CONFIG_KEY = re.compile(r"^[^\s=]+$")
_VERSION = re.compile(r"^[vV]?(?P<number>\d+)$")

SCALE_FORM = "TYPE=QUANTITY[:SIZE], TYPE+N, TYPE-N or TYPE=SIZE (e.g. web=2:standard-2x worker+1)"


@dataclass(frozen=True)
class ScaleChange:
    """One requested formation change; `delta` means `quantity` is relative (+/-)."""

    type: str
    quantity: int | None = None
    delta: bool = False
    size: str | None = None

    def resolve(self, current: int) -> int | None:
        """The absolute quantity to ask for, given the type's `current` quantity."""
        if self.quantity is None:
            return None
        if self.delta:
            return max(0, current + self.quantity)
        return self.quantity


def parse_scale(spec: str) -> ScaleChange:
    """One ps:scale argument, as Heroku takes it: `web=3`, `web=2:standard-2x`, `web+1`."""
    match = _SCALE.match(spec)
    if match:
        amount = int(match["amount"])
        op = match["op"]
        return ScaleChange(
            type=match["type"],
            quantity=-amount if op == "-" else amount,
            delta=op != "=",
            size=match["size"],
        )
    match = _SIZE_ONLY.match(spec)
    if match:
        return ScaleChange(type=match["type"], size=match["size"])
    raise UsageError(f"Invalid scale argument {spec!r}: use {SCALE_FORM}.")


def parse_scales(specs: list[str]) -> list[ScaleChange]:
    """All ps:scale arguments; a process type named twice is an error."""
    changes = [parse_scale(spec) for spec in specs]
    seen: set[str] = set()
    for change in changes:
        if change.type in seen:
            raise UsageError(f"Process type {change.type!r} is given more than once.")
        seen.add(change.type)
    return changes


def parse_assignment(text: str) -> tuple[str, str]:
    """`KEY=VALUE` split at the first '='; the value may itself contain '=' or be empty."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"{text!r} is invalid: must be in the format KEY=VALUE.")
    check_config_key(key)
    return key, value


def parse_assignments(texts: list[str]) -> dict[str, str]:
    """Every `KEY=VALUE`; when a key repeats, the last value wins (as in a shell)."""
    return dict(parse_assignment(text) for text in texts)


def check_config_key(key: str) -> str:
    """`key` if it can name a config var (not empty, no spaces), else a usage error."""
    if not _CONFIG_KEY.match(key):
        raise UsageError(f"{key!r} is not a valid config var name: it must be non-empty, no space.")
    return key


def parse_release(text: str) -> str:
    """A release as the API takes it: `v12` or `12` become `12`; an id passes unchanged."""
    match = _VERSION.match(text.strip())
    if match:
        return str(int(match["number"]))
    if not text.strip():
        raise UsageError("A release is a version such as v12, or a release id.")
    return text.strip()
