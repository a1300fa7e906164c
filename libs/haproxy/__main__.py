"""`python -m slipway.libs.haproxy`: run the router until SIGTERM/SIGINT."""

import sys

from slipway.libs.haproxy.server import main

sys.exit(main())
