"""registry-proxy's errors.

    RegistryProxyError      root (a SlipwayError)
    └── DistributionError   "distribution_failed"  the real registry would not start or answer

Requests from Docker engines are refused with the registry API's own error body
(see proxy.py), not with these.
"""

from __future__ import annotations

from slipway.libs.errors import SlipwayError


class RegistryProxyError(SlipwayError):
    """Root of registry-proxy's errors."""


class DistributionError(RegistryProxyError):
    """Distribution (docker-registry) did not start, died, or a maintenance step failed."""

    code = "distribution_failed"
