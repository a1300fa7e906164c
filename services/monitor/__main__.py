"""`python -m slipway.services.monitor`: the platform's monitor (see settings.py)."""

from slipway.libs.service import load_settings, run_service
from slipway.services.monitor.app import create_service
from slipway.services.monitor.settings import MonitorSettings


def main() -> None:
    run_service(create_service(load_settings(MonitorSettings)))


if __name__ == "__main__":
    main()
