"""`python -m slipway.services.gateway`: the customer API on SLIPWAY_API_HOST:SLIPWAY_API_PORT."""

from slipway.libs.service import load_settings, run_service
from slipway.services.gateway.app import create_service
from slipway.services.gateway.core.settings import GatewaySettings


def main() -> None:
    run_service(create_service(load_settings(GatewaySettings)))


if __name__ == "__main__":
    main()
