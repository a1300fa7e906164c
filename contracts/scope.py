"""An installation's scope: every name Slipway gives what it makes on a shared machine.

A `scripts/up` platform and the test suite (or two platforms) may share one Docker
engine and one kernel firewall. Each runs in its own scope (`SLIPWAY_SCOPE`), and every
name they could both use is derived here, so neither lists, adopts, firewalls nor
removes what the other made:

| what                                  | default scope ""  | scope "t1"                  |
| ------------------------------------- | ----------------- | --------------------------- |
| `org.slipway.managed` label value     | `true`            | `t1`                        |
| an app's Docker network               | `slipway-app-<id>` | `slipway-t1-app-<id>`      |
| its Linux bridge (15 chars at most)   | `slw<12 of id>`   | `slw<12 hex of t1 and id>`  |
| the isolation chain (28 at most)      | `SLIPWAY-ISOLATION` | `SLIPWAY-ISO-T1`          |
| the app network pool                  | `10.210.0.0/16`   | `10.211.0.0/16`             |
| the build network                     | `slipway-builds`  | `slipway-t1-builds`         |
| dyno container names                  | `slipway-<app>-…` | `slipway-t1-<app>-…`        |

The default scope keeps the names installations made before scopes existed, so an
upgraded platform still finds its own networks, dynos and chain. Services find their
objects by the managed label's exact value (a Docker label filter), never by a name
prefix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from slipway.contracts.scheduler import LABEL_APP, LABEL_MANAGED

# iptables chain names hold 28 characters: "SLIPWAY-ISO-" (12) leaves 16.
SCOPE_PATTERN = r"^([a-z0-9][a-z0-9-]{0,15})?$"
_SCOPE = re.compile(SCOPE_PATTERN)
_DEFAULT_MANAGED = "true"  # the managed label's value before scopes existed
BRIDGE_PREFIX = "slw"  # Linux interface names hold 15 characters: "slw" + 12
DEFAULT_POOL = "10.210.0.0/16"
SCOPED_POOL = "10.211.0.0/16"
DEFAULT_CHAIN = "SLIPWAY-ISOLATION"
SCOPED_CHAIN_PREFIX = "SLIPWAY-ISO-"


@dataclass(frozen=True)
class Scope:
    """The names of one installation (`name` "": the default one, what `scripts/up` runs)."""

    name: str = ""

    def __post_init__(self) -> None:
        if not _SCOPE.match(self.name) or self.name == _DEFAULT_MANAGED:
            raise ValueError(
                f"scope {self.name!r} is not usable: SLIPWAY_SCOPE takes at most 16 lowercase"
                " letters, digits or dashes, not starting with a dash, and not 'true' (it"
                " becomes part of iptables chain names and label values)"
            )

    @property
    def managed(self) -> str:
        """The value of `LABEL_MANAGED` on every container and network of this scope."""
        return self.name or _DEFAULT_MANAGED

    @property
    def managed_label(self) -> str:
        """The Docker label filter selecting exactly this scope's objects."""
        return f"{LABEL_MANAGED}={self.managed}"

    @property
    def prefix(self) -> str:
        """Names of Docker objects start with this: `slipway-` or `slipway-<scope>-`."""
        return f"slipway-{self.name}-" if self.name else "slipway-"

    def network(self, app_id: str) -> str:
        """The Docker network of one app."""
        return f"{self.prefix}app-{app_id}"

    def bridge(self, app_id: str) -> str:
        """The Linux bridge of an app's network (a scope's own hash, so two never collide)."""
        if not self.name:
            return f"{BRIDGE_PREFIX}{app_id.replace('-', '')[:12]}"
        digest = hashlib.sha256(f"{self.name}/{app_id}".encode()).hexdigest()
        return f"{BRIDGE_PREFIX}{digest[:12]}"

    def network_options(self, app_id: str) -> dict[str, str]:
        """Driver options an app network is created with (and checked against)."""
        return {
            "com.docker.network.bridge.name": self.bridge(app_id),
            # Dynos of one app talk to each other; other apps sit on other bridges.
            "com.docker.network.bridge.enable_icc": "true",
        }

    def network_labels(self, app_id: str) -> dict[str, str]:
        """The labels of an app network: its app and this scope."""
        return {LABEL_APP: app_id, LABEL_MANAGED: self.managed}

    @property
    def chain(self) -> str:
        """The iptables chain keeping this scope's dynos off the host."""
        return f"{SCOPED_CHAIN_PREFIX}{self.name.upper()}" if self.name else DEFAULT_CHAIN

    @property
    def pool(self) -> str:
        """Where app networks take their subnets unless SLIPWAY_APP_NETWORK_POOL says otherwise."""
        return SCOPED_POOL if self.name else DEFAULT_POOL

    @property
    def build_network(self) -> str:
        """The Docker network build containers join."""
        return f"{self.prefix}builds"

    def container(self, rest: str) -> str:
        """A container name of this scope: `slipway-[<scope>-]<rest>`."""
        return f"{self.prefix}{rest}"
