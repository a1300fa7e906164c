"""`python -m slipway.services.log_shipper`: one host's log-shipper (see settings.py)."""

from slipway.libs.service import load_settings, run_service
from slipway.services.log_shipper.app import create_service
from slipway.services.log_shipper.settings import LogShipperSettings


def main() -> None:
    run_service(create_service(load_settings(LogShipperSettings)))


if __name__ == "__main__":
    main()
