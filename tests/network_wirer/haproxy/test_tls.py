"""Certificates through the runtime API: added to the crt-list for SNI, replaced under load."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
from collections import Counter

import pytest

from slipway.services.network_wirer.haproxy.access import AccessJoiner
from tests.conftest import assert_eventually
from tests.network_wirer.haproxy.conftest import Dynos, HAProxyRouter, route, self_signed_pem

pytestmark = [pytest.mark.integration]

DOMAIN = "www.secure-example.test"


def _context(pem: bytes) -> ssl.SSLContext:
    """A client trusting exactly this self-signed certificate."""
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=_cert_only(pem))
    return context


def _any_certificate() -> ssl.SSLContext:
    """A client that takes any certificate: the test compares fingerprints itself (two
    self-signed certificates with one subject cannot both be trust anchors)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _cert_only(pem: bytes) -> str:
    text = pem.decode()
    return text[: text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]


def _fingerprint(pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(_cert_only(pem))).hexdigest()


async def _handshake(port: int, context: ssl.SSLContext) -> str:
    """One TLS handshake with SNI DOMAIN; the served certificate's fingerprint."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=DOMAIN
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        version = ssl_object.version()
    finally:
        writer.close()
        # The handshake is done; TLS 1.3 session tickets may still cross the close.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    assert version in ("TLSv1.2", "TLSv1.3")
    return hashlib.sha256(der).hexdigest()


async def test_certificate_added_then_replaced_under_load(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """A custom domain's certificate is loaded without reload, serves HTTPS by SNI, and is
    replaced while clients keep connecting: not one handshake fails."""
    desired = route("secure", await dynos.start(), hosts=(DOMAIN,))
    await haproxy.reconciler.reconcile([desired])
    runtime = haproxy.reconciler.runtime
    name = str(haproxy.options.crt_list.parent / f"{DOMAIN}.pem")
    first, second = self_signed_pem(DOMAIN), self_signed_pem(DOMAIN)
    await runtime.put_certificate(name, first.decode(), str(haproxy.options.crt_list))
    port = haproxy.server.ports.https_port

    url = f"https://127.0.0.1:{port}/"
    async with haproxy.session.get(
        url, headers={"Host": DOMAIN}, server_hostname=DOMAIN, ssl=_context(first)
    ) as response:
        assert response.status == 200
        seen = json.loads(await response.text())["headers"]
    assert (seen["x-forwarded-proto"], seen["x-forwarded-port"]) == ("https", str(port))
    joiner = AccessJoiner()
    joiner.update([desired])
    access = joiner.record(await haproxy.next_record(DOMAIN))
    assert access is not None
    assert (access.protocol, access.status, access.dyno) == ("https", 200, "web.1")

    both = _any_certificate()
    served: Counter[str] = Counter()
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                served[await _handshake(port, both)] += 1
            except (OSError, ssl.SSLError) as exc:
                served[f"failed: {exc!r}"] += 1

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    await assert_eventually(lambda: _at_least(served, 40))
    await runtime.put_certificate(name, second.decode())
    new = _fingerprint(second)
    await assert_eventually(lambda: _at_least(served, 40, new))
    stop.set()
    await asyncio.gather(*loaders)
    assert set(served) == {_fingerprint(first), new}, served
    assert await _handshake(port, both) == new


def _at_least(served: Counter[str], count: int, key: str | None = None) -> None:
    assert (served[key] if key else sum(served.values())) >= count
