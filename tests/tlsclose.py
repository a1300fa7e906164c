"""TLS connections still closing when a test's event loop ends.

asyncio closes a TLS transport gracefully: it sends close_notify and keeps the socket
until the peer answers (up to 30 s). A test whose loop closes inside that window leaves
the socket to the garbage collector, which warns (ResourceWarning, an error under
pytest) in whichever test runs next: a loaded CI run blamed
`test_a_tcp_host_is_registered_only_with_tls_it_can_use` for a connection the scheduler
of the test before it had closed to its tcp+TLS engine. Fixtures whose services talk
TLS call `settle_tls_closes` before their loop ends.
"""

from __future__ import annotations

import asyncio
from asyncio import sslproto

_CLOSING = (sslproto.SSLProtocolState.FLUSHING, sslproto.SSLProtocolState.SHUTDOWN)


def closing_tls(loop: asyncio.AbstractEventLoop) -> list[asyncio.Transport]:
    """The socket transports of `loop` whose TLS layer is closing, waiting for the peer."""
    # Selector loops keep their open transports by fd (asyncio has no public listing).
    transports = getattr(loop, "_transports", None)
    if transports is None:
        return []
    found: list[asyncio.Transport] = []
    for transport in list(transports.values()):
        protocol = transport.get_protocol()
        if transport.is_closing() or not isinstance(protocol, sslproto.SSLProtocol):
            continue
        if getattr(protocol, "_state", None) in _CLOSING:  # private: no public state
            found.append(transport)
    return found


async def settle_tls_closes(timeout: float = 5.0) -> int:
    """Wait up to `timeout` for closing TLS connections to finish, then abort the rest.

    Returns how many had to be aborted (a peer that never answered close_notify)."""
    loop = asyncio.get_running_loop()
    closing = closing_tls(loop)
    for _ in range(max(1, round(timeout / 0.05))):
        if not closing:
            return 0
        await asyncio.sleep(0.05)  # polled: nothing signals a finished TLS shutdown
        closing = closing_tls(loop)
    for transport in closing:
        transport.abort()
    if closing:
        await asyncio.sleep(0)  # abort closes the socket on the next loop pass
    return len(closing)
