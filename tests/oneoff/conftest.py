"""One-off tests run against the real gateway stack of tests/gateway."""

from tests.gateway.conftest import (  # noqa: F401
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)
