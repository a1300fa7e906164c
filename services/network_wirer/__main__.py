"""`python -m slipway.services.network_wirer`: the router's configurer, on SLIPWAY_NATS_URL."""

from slipway.libs.service import load_settings, run_service
from slipway.services.network_wirer.app import create_service
from slipway.services.network_wirer.settings import WirerSettings


def main() -> None:
    run_service(create_service(load_settings(WirerSettings)))


if __name__ == "__main__":
    main()
