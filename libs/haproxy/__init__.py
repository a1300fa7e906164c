"""Run the router, a real HAProxy (Debian package `haproxy`, 2.6), for scripts and tests.

HAProxy runs in master-worker mode (`-W`) with a master CLI socket (`-S`): a reload
(`reload` on the master CLI) starts a new worker that takes the listening sockets from
the old one (`expose-fd listeners` on the runtime socket), so no connection is refused
while it happens, and the old worker finishes its requests before it exits.

Everything routine goes through the runtime API instead (`Runtime`): maps, servers and
certificates change in memory, with no reload. Both sockets live in a 0700 folder owned
by this process and are created 0600; HAProxy has no TCP admin listener and no stats
page, because the runtime API has no authentication and anyone who could reach it could
reroute every app.

Access lines do not touch the disk: HAProxy sends them as datagrams to a unix socket
(`log unix@…`) that `LogReceiver` binds (0600, in a 0700 folder) and parses into
`AccessRecord`s (`ACCESS_LOG_FORMAT` is the one format both sides agree on).

    python -m slipway.libs.haproxy --data var/haproxy   # ports from SLIPWAY_ROUTER_*

Port 0 picks a free port (tests); a restart keeps the ports chosen.

Modules: `server` (the process), `runtime` (the API client), `accesslog` (the log
socket), `paths` (ports, files, private socket folders), `errors` (the tree).
"""

from slipway.libs.haproxy.accesslog import (
    ACCESS_LOG_FORMAT,
    ACCESS_TAG,
    AccessRecord,
    LogReceiver,
    parse_access,
)
from slipway.libs.haproxy.errors import (
    HAProxyError,
    RuntimeCommandError,
    RuntimeUnavailable,
    UnsafeSocketFolder,
)
from slipway.libs.haproxy.paths import (
    MAX_SOCKET_PATH,
    RouterPaths,
    RouterPorts,
    check_socket_path,
    controlled_folder,
    free_port,
    private_folder,
)
from slipway.libs.haproxy.runtime import Runtime, ServerState, master_command
from slipway.libs.haproxy.server import (
    HAProxyServer,
    haproxy_binary,
    main,
    ports_from_env,
    starting_config,
)

__all__ = [
    "ACCESS_LOG_FORMAT",
    "ACCESS_TAG",
    "MAX_SOCKET_PATH",
    "AccessRecord",
    "HAProxyError",
    "HAProxyServer",
    "LogReceiver",
    "RouterPaths",
    "RouterPorts",
    "Runtime",
    "RuntimeCommandError",
    "RuntimeUnavailable",
    "ServerState",
    "UnsafeSocketFolder",
    "check_socket_path",
    "controlled_folder",
    "free_port",
    "haproxy_binary",
    "main",
    "master_command",
    "parse_access",
    "ports_from_env",
    "private_folder",
    "starting_config",
]
