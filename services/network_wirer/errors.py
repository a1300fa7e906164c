"""network-wirer's errors (HAProxy's own are libs/haproxy/errors.py).

WirerError                 root
└── IsolationError         the firewall rules could not be put in place
"""

from __future__ import annotations

from slipway.libs.errors import SlipwayError


class WirerError(SlipwayError):
    """Root of network-wirer's errors."""


class IsolationError(WirerError):
    """iptables refused a rule (not root, or no iptables on the host)."""
