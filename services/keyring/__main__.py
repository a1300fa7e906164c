"""`python -m slipway.services.keyring`: the keyring, on SLIPWAY_NATS_URL, state in SLIPWAY_HOME."""

import sys

from slipway.libs.service import load_settings, run_service
from slipway.services.keyring.app import create_service
from slipway.services.keyring.errors import MasterKeyError
from slipway.services.keyring.settings import KeyringSettings


def main() -> None:
    try:
        run_service(create_service(load_settings(KeyringSettings)))
    except MasterKeyError as exc:
        # Not a crash to debug but a setup to fix: say what, without a traceback.
        print(f"keyring: refusing to start: {exc.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
