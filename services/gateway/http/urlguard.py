"""The egress policy the gateway checks customer URLs with (build sources, log drains).

The gateway never fetches these URLs itself: it refuses at the API, with a 422 the
customer can act on, what the builder and log-shipper would refuse at fetch time
(they check again then, since DNS can change). See libs/egress.py for the rules.
"""

from __future__ import annotations

import yarl

from slipway.libs import egress
from slipway.services.gateway.core.state import Gateway


def customer_url_policy(gw: Gateway) -> egress.EgressPolicy:
    """The operator's egress settings, also refusing this gateway's own address and port."""
    own: tuple[tuple[str, int], ...] = ()
    api = yarl.URL(gw.api_url) if gw.api_url else None
    if api is not None and api.host is not None and api.port is not None:
        own = ((api.host, api.port),)
    return egress.policy_for(gw.settings.egress_allow, gw.settings.egress_deny, own)
