"""What network-wirer last knew: the gateway's apps and the scheduler's dynos, in memory.

network-wirer keeps no database: the gateway owns apps and domains, the scheduler
owns dynos, HAProxy holds the routes and Docker the networks. This snapshot lets a
reconcile go on when one source does not answer (keep routing to the dynos we
knew rather than dropping every route), and names the routes for access lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import Dyno
from slipway.services.network_wirer.routes import AppRoute


@dataclass
class Snapshot:
    """The last answers of DESIRED_GET and DYNOS_LIST, and the routes made from them."""

    apps: list[AppDesired] | None = None
    dynos: list[Dyno] | None = None
    routes: list[AppRoute] = field(default_factory=list)
    commands: int = 0  # runtime commands sent to HAProxy since start
    reloads: int = 0  # HAProxy reloads since start (first configuration, pool grown)
    reconciles: int = 0

    @property
    def complete(self) -> bool:
        """Both sources answered at least once: routes can be computed."""
        return self.apps is not None and self.dynos is not None
