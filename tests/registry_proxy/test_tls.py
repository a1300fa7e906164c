"""The registry over TLS: its certificate from the platform CA; settings say what is wrong."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import aiohttp
import msgspec
import pytest
from cryptography import x509

from slipway.services.registry_proxy import certificate
from slipway.services.registry_proxy.errors import RegistryProxyError
from slipway.services.registry_proxy.settings import RegistryProxySettings
from tests.registry_proxy.conftest import start_registry


def test_the_certificate_names_the_advertised_host_and_chains_to_the_platform_ca(
    tmp_path: Path,
) -> None:
    """SANs hold the host and loopback; the key is 0600; the CA folder gains nothing."""
    ca_dir = tmp_path / "nats" / "tls"
    cert, key, ca = certificate.issue(ca_dir, tmp_path / "out", ["10.77.0.1", "registry.internal"])
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    root = x509.load_pem_x509_certificate(ca.read_bytes())
    leaf.verify_directly_issued_by(root)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.77.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "registry.internal" in sans.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem"]
    assert ca.read_bytes() == (ca_dir / "ca.pem").read_bytes()
    # Issued again (a renewal): the same CA, a new certificate.
    first = cert.read_bytes()
    again, _, _ = certificate.issue(ca_dir, tmp_path / "out", ["10.77.0.1"])
    assert again.read_bytes() != first
    x509.load_pem_x509_certificate(again.read_bytes()).verify_directly_issued_by(root)


def test_the_command_without_a_host_exits_non_zero_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --host: nothing is written, one readable line, exit 1."""
    code = certificate.main(["--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "Cannot issue the registry's certificate: name at least one --host:"
        " the address engines reach the registry at"
    ]
    assert not (tmp_path / "out").exists()


def test_an_advertised_host_without_a_port_gets_the_bound_one() -> None:
    """`SLIPWAY_REGISTRY_ADVERTISE=10.77.0.1` with port 0: credentials name the real port."""
    settings = RegistryProxySettings(registry_advertise="10.77.0.1")
    assert settings.advertised(41234) == "10.77.0.1:41234"
    assert (
        RegistryProxySettings(registry_advertise="[fd00::1]").advertised(5000) == "[fd00::1]:5000"
    )
    assert RegistryProxySettings(registry_advertise="10.77.0.1:443").advertised(5000) == (
        "10.77.0.1:443"
    )


def test_half_a_tls_pair_or_an_unreadable_one_is_refused(tmp_path: Path) -> None:
    """A certificate without its key (or files that are not PEM) stop the start, named."""
    with pytest.raises(RegistryProxyError, match="both SLIPWAY_REGISTRY_TLS_CERT"):
        RegistryProxySettings(registry_tls_cert=str(tmp_path / "c.pem")).ssl_context()
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    broken = RegistryProxySettings(
        registry_tls_cert=str(tmp_path / "c.pem"), registry_tls_key=str(tmp_path / "k.pem")
    )
    with pytest.raises(RegistryProxyError, match="cannot be used"):
        broken.ssl_context()
    assert RegistryProxySettings().ssl_context() is None


@pytest.mark.integration
async def test_the_proxy_answers_https_with_its_certificate_and_refuses_plain_http(
    registry_settings: RegistryProxySettings, tmp_path: Path
) -> None:
    """With TLS set, /v2/ answers over HTTPS (verified against the CA) and not in clear."""
    cert, key, ca = certificate.issue(tmp_path / "ca", tmp_path / "tls", ["127.0.0.1"])
    settings = msgspec.structs.replace(
        registry_settings, registry_tls_cert=str(cert), registry_tls_key=str(key)
    )
    running = await start_registry(settings)
    try:
        context = ssl.create_default_context(cafile=str(ca))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://{running.address}/v2/", ssl=context) as answer:
                assert answer.status == 401  # the registry, asking for a credential
                assert "Slipway registry" in answer.headers["WWW-Authenticate"]
            try:
                async with session.get(f"http://{running.address}/v2/") as plain:
                    answered: int | None = plain.status
            except aiohttp.ClientError:
                answered = None
            assert answered is None  # no answer at all in clear, not even an error page
    finally:
        await running.stop()


def test_a_link_planted_in_the_output_folder_is_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    """The folder is registry-proxy's: a link there named like an output file (or the
    folder itself being a link) must not make root write elsewhere."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (out / "ca.crt").symlink_to(victim)
    certificate.issue(tmp_path / "ca", out, ["10.77.0.1"])
    assert victim.read_text() == "keep me"
    assert not (out / "ca.crt").is_symlink()
    linked = tmp_path / "linked"
    linked.symlink_to(out)
    with pytest.raises(OSError, match=r"Not a directory|symbolic links"):
        certificate.issue(tmp_path / "ca", linked, ["10.77.0.1"])


def test_the_certificate_where_the_command_puts_it_is_used_without_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`certificate.py` into the home's registry-proxy/tls: the proxy serves TLS with it,
    and the command prints only what is left to set."""
    home = tmp_path / "home"
    settings = RegistryProxySettings(home=str(home))
    assert settings.ssl_context() is None  # nothing there yet: plain HTTP
    code = certificate.main(
        ["--host", "10.77.0.1", "--ca-dir", str(home / "nats" / "tls"), "--out", str(home / "x")]
    )
    assert code == 0
    assert "SLIPWAY_REGISTRY_TLS_CERT=" in capsys.readouterr().out  # elsewhere: named
    certificate.issue(home / "nats" / "tls", settings.tls_dir(), ["10.77.0.1"])
    assert settings.ssl_context() is not None  # found there, without a setting
