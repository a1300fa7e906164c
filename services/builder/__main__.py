"""`python -m slipway.services.builder`: the builder, on SLIPWAY_NATS_URL, state in SLIPWAY_HOME."""

from slipway.libs.service import load_settings, run_service
from slipway.services.builder.app import create_service
from slipway.services.builder.settings import BuilderSettings


def main() -> None:
    run_service(create_service(load_settings(BuilderSettings)))


if __name__ == "__main__":
    main()
