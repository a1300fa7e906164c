"""What network-wirer puts in a platform snapshot: the router's internal CA.

network-wirer keeps no database (store.py): routes are computed again from the gateway
and the scheduler. What does not come back by itself is the CA in Caddy's storage
(`pki/authorities/local/`, certs.py): customers trust it for `*.localhost`, and the
add-ons' database certificates are signed by it, so it is exported and the same CA
signs again after a restore. The certificates the router holds are issued again.
"""

from __future__ import annotations

from collections.abc import Callable

from slipway.libs.snapshot.export import Folder, Sources
from slipway.services.network_wirer.settings import WirerSettings

LEFT_OUT = (
    "network-wirer: issued certificates (internal and ACME ones are issued again on demand)",
    "network-wirer: routes and app networks (made again from the gateway and the scheduler)",
)


def sources(settings: WirerSettings) -> Callable[[], Sources]:
    """network-wirer's Sources: its state folder but its sockets, and the router CA."""
    home = settings.home_path.resolve()
    authority = settings.storage_dir / "pki" / "authorities" / "local"
    # A restore puts members under SLIPWAY_HOME: Caddy's folder keeps its place there.
    try:
        caddy = settings.caddy_dir.relative_to(home).as_posix()
    except ValueError:
        caddy = "caddy"
    return lambda: Sources(
        folders=[
            Folder(
                settings.state_dir("network-wirer"),
                "network-wirer/",
                filter=lambda path, _: path != "run",  # sockets, made at start
            ),
            Folder(authority, f"{caddy}/storage/pki/authorities/local/"),
        ],
        left_out=LEFT_OUT,
    )
