"""The commands, one module per topic; importing a module registers its commands.

The order of `TOPICS` is the order of `slipway help`.
"""

from __future__ import annotations

import functools
import importlib

TOPICS = (
    "auth",
    "apps",
    "uptime",
    "config_vars",
    "releases",
    "ps",
    "run",
    "teams",
    "tokens",
    "audit",
    "gitremote",
    "gitcredential",
    "domains",
    "features",
    "addons",
    "pg",
    "pgtools",
    "pgopen",
    "pgverify",
    "pgschedule",
    "keys",
    "logs",
    "metricsdrains",
    "webhooks",
    "alerts",
    "builds",
    "admin",
    "snapshots",
)


@functools.cache
def load() -> None:
    """Import every command module (once)."""
    for module in TOPICS:
        importlib.import_module(f"{__name__}.{module}")
