"""`python -m slipway.services.scheduler`: the scheduler, on SLIPWAY_NATS_URL."""

from slipway.libs.service import load_settings, run_service
from slipway.services.scheduler.app import create_service
from slipway.services.scheduler.settings import SchedulerSettings


def main() -> None:
    run_service(create_service(load_settings(SchedulerSettings)))


if __name__ == "__main__":
    main()
