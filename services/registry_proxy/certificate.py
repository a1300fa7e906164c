"""The registry's TLS certificate, issued by the platform CA, for engines on other hosts.

    python -m slipway.services.registry_proxy.certificate --host 10.77.0.1 [--host NAME]...

Run as root on the platform's machine: the platform CA (`libs.bus.tls`, the one the
bus uses when it leaves loopback) lives in nats-server's folder, `$SLIPWAY_HOME/nats/tls`,
which only root reads; it is made there if missing. The certificate names every
`--host` (the address the registry is advertised at, `SLIPWAY_REGISTRY_ADVERTISE`) and
loopback; it and its key go to `--out` (`$SLIPWAY_HOME/registry-proxy/tls`, where
registry-proxy finds them at its next start, and which the supervisor hands to its
user), with `ca.crt`, the file every engine trusts as
`/etc/docker/certs.d/<host:port>/ca.crt`. It prints the settings left to set and where
`ca.crt` goes on each host; no key is ever printed.
Run it again (same hosts, or more) to renew: the CA stays, the certificate is new.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from slipway.libs.bus import tls

NAME = "registry"


def issue(ca_dir: Path, out: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """Issue the registry's certificate for `hosts` (and loopback) into `out`:
    (certificate, key, CA certificate)."""
    if not hosts:
        raise ValueError("name at least one --host: the address engines reach the registry at")
    tls.ensure_ca(ca_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Issued in a scratch copy of the CA's folder: `tls.issue` writes beside the CA, and
    # the bus's own certificates there must not gain a stray server certificate. The
    # scratch folder is inside the CA's own, so the CA key never leaves root's folder.
    with tempfile.TemporaryDirectory(prefix="registry-", dir=ca_dir) as scratch:
        folder = Path(scratch)
        for name in ("ca.pem", "ca.key"):
            shutil.copyfile(ca_dir / name, folder / name)
            os.chmod(folder / name, 0o600)
        identity = tls.issue(folder, NAME, server_hosts=[*hosts, "127.0.0.1", "localhost"])
        files = {
            f"{NAME}.pem": identity.cert.read_bytes(),
            f"{NAME}.key": identity.key.read_bytes(),
            "ca.crt": identity.ca.read_bytes(),
        }
    _write_all(out, files)
    return out / f"{NAME}.pem", out / f"{NAME}.key", out / "ca.crt"


def _write_all(out: Path, files: dict[str, bytes]) -> None:
    """Write `files` into `out` without following a link: `out` is (or becomes) the
    registry-proxy user's folder, where a link planted to make root write elsewhere
    must not work. Each file is replaced, never written through."""
    dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name, data in files.items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
    finally:
        os.close(dir_fd)


def main(argv: list[str] | None = None) -> int:
    home = Path(os.environ.get("SLIPWAY_HOME", "var"))
    parser = argparse.ArgumentParser(
        prog="python -m slipway.services.registry_proxy.certificate",
        description="Issue the registry's TLS certificate from the platform CA.",
    )
    parser.add_argument("--host", action="append", default=[], help="an address engines use")
    parser.add_argument("--ca-dir", type=Path, default=home / "nats" / "tls")
    default_out = home / "registry-proxy" / "tls"  # where registry-proxy looks by itself
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    try:
        cert, key, ca = issue(args.ca_dir, args.out, args.host)
    except (OSError, ValueError) as exc:
        print(f"Cannot issue the registry's certificate: {exc}", file=sys.stderr)
        return 1
    if args.out.absolute() != default_out.absolute():  # elsewhere: registry-proxy is told
        print(f"SLIPWAY_REGISTRY_TLS_CERT={cert.absolute()}")
        print(f"SLIPWAY_REGISTRY_TLS_KEY={key.absolute()}")
    print(f"SLIPWAY_REGISTRY_HOST=0.0.0.0 SLIPWAY_REGISTRY_ADVERTISE={args.host[0]}")
    print(
        f"# on every Docker host, this one included (the builder pushes there):"
        f" /etc/docker/certs.d/{args.host[0]}:<port>/ca.crt <- {ca.absolute()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
