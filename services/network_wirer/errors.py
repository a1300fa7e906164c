"""network-wirer's errors.

WirerError                 root
├── RouterUnavailable      Caddy's admin API did not answer (retryable)
├── RouterRejected         Caddy refused a configuration (a bug here: not retryable)
└── IsolationError         the firewall rules could not be put in place
"""

from __future__ import annotations

from slipway.libs.errors import SlipwayError, Unavailable


class WirerError(SlipwayError):
    """Root of network-wirer's errors."""


class RouterUnavailable(WirerError, Unavailable):
    """Caddy's admin API is not reachable right now."""


class RouterRejected(WirerError):
    """Caddy answered the configuration with an error."""


class IsolationError(WirerError):
    """iptables refused a rule (not root, or no iptables on the host)."""
