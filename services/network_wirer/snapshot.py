"""What network-wirer puts in a platform snapshot: its state folder, where the router's CA is.

network-wirer's routes are computed again from the gateway and the scheduler (store.py
is memory only). What does not come back by itself lives in its state folder, which is
exported whole but for `run/` (sockets, made at start) and the uptime database:

- `ca/`, the router's internal CA (ca.py): customers trust it for `*.localhost`, and the
  add-ons' database certificates are signed by it (certs.py), so the same CA signs again
  after a restore and what it signed before keeps verifying;
- `acme/` (acme.py; app.py gives it this folder): the account key, so a
  restore finds the same account at the CA, and the certificates ACME issued with their
  keys, which the manager loads at start and orders again only when due (the CA's rate
  limits).

- `uptime.db` (uptimestore.py), the probes' hourly counters and incidents, which cannot be
  made again: exported through SQLite's backup API, a consistent copy of a live database
  (a file copy of one being written could come back torn).

The router's certificates from the internal CA live in HAProxy's folder, not in this one:
tls.py issues them again. Caddy's old storage is not exported either: its root, if any,
was copied into `ca/` at the first start after the switch (ca.py).
"""

from __future__ import annotations

from collections.abc import Callable

from slipway.libs.snapshot.export import Database, Folder, Sources
from slipway.services.network_wirer.settings import WirerSettings

UPTIME_DB = "uptime.db"  # app.py opens it in the state folder
LEFT_OUT = (
    "network-wirer: the router's certificates from its internal CA (issued again)",
    "network-wirer: routes and app networks (made again from the gateway and the scheduler)",
)


def sources(settings: WirerSettings) -> Callable[[], Sources]:
    """network-wirer's Sources: its state folder (the CA, ACME's account and certificates)
    but its sockets."""
    state = settings.state_dir("network-wirer")
    return lambda: Sources(
        databases=[Database(state / UPTIME_DB, f"network-wirer/{UPTIME_DB}")],
        folders=[
            Folder(
                state,
                "network-wirer/",
                # Sockets are made at start; the database (and its WAL) goes above, whole.
                filter=lambda path, _: path != "run" and not path.startswith(UPTIME_DB),
            ),
        ],
        left_out=LEFT_OUT,
    )
