"""`python -m slipway.services.registry_proxy`: the proxy, Distribution as its child."""

import sys

from slipway.libs.service import load_settings, run_service
from slipway.services.registry_proxy.app import create_service
from slipway.services.registry_proxy.errors import RegistryProxyError
from slipway.services.registry_proxy.settings import RegistryProxySettings


def main() -> None:
    try:
        run_service(create_service(load_settings(RegistryProxySettings)))
    except RegistryProxyError as exc:
        # A setup to fix (Distribution missing, a bad key file), not a crash to debug.
        print(f"registry-proxy: refusing to start: {exc.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
