"""Metrics tests reuse the real stacks other areas' tests start, and scrape them."""

from tests.addons.conftest import addon_stack, backup_stack, postgres_image  # noqa: F401
from tests.builder.conftest import builder_home, harness, session_nats  # noqa: F401
from tests.gateway.conftest import (  # noqa: F401
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)
from tests.log_shipper.conftest import (  # noqa: F401
    gateway_bus,
    managed,
    shipper_settings,
    start_shipper,
)
from tests.network_wirer.conftest import haproxy_server, router, wirer, world  # noqa: F401
from tests.scheduler.conftest import cluster, docker_hosts, sched_image  # noqa: F401
