"""Write what compose/docker-compose.yml needs into a state folder: the bus's users and
passwords, its certificates, the three nats-server nodes' configurations and one env file
per service. Run by scripts/compose-up with the repository's interpreter:

    python compose/generate.py --state var/compose/slipway --api-port 5200 ...

Idempotent: passwords, the route password and the CA are made once and kept, so a second
run (a changed port, an upgrade) leaves a running bus's credentials as they are.

    <state>/compose.env          the variables the Compose file reads (--env-file)
    <state>/secrets/             root only: users.json, the route password, the CA and its key
    <state>/nats/                nats-1.conf ... and tls/ (CA, server certificate), nats' uid
    <state>/tls/<user>/          ca.pem and that user's certificate and key, that user's uid
    <state>/env/<user>.env       SLIPWAY_NATS_USER / _PASSWORD, root only (Compose reads it)

The operator (scripts, tests, `nats` tools on the host) gets a certificate and env file too;
no container uses them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import secrets
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slipway.contracts.scope import SCOPE_PATTERN
from slipway.contracts.subjects import OPERATOR, PROVISIONER, Service
from slipway.libs.bus import tls as bus_tls
from slipway.libs.natsauth import load_or_create_users
from slipway.libs.natsserver import cluster_node_config

NODES = ("nats-1", "nats-2", "nats-3")
# Every node answers to its own name and to the alias all three share, which clients
# dial first (Docker's DNS gives the address of whichever node runs).
NATS_ALIAS = "nats"
NATS_UID_NAME = "nats-server"
# Paths inside the containers (compose/docker-compose.yml mounts them there).
NATS_CONFIG_DIR = "/etc/nats"
NATS_STORE = "/var/lib/slipway/nats-server/jetstream"


def read_uids(path: Path) -> dict[str, int]:
    """compose/uids: "name uid" lines, comments and blank lines ignored."""
    uids: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        name, uid = fields
        uids[name] = int(uid)
    return uids


def _private_file(path: Path, text: str, uid: int = 0) -> None:
    """Write `text` to `path` as mode 0600 owned by `uid` (the file is replaced whole)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chown(tmp, uid, uid)
    os.replace(tmp, path)


def _private_dir(path: Path, uid: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    path.chmod(0o700)
    return path


def _copy_private(source: Path, target: Path, uid: int) -> None:
    _private_file(target, source.read_text(), uid)


def _env_line(name: str, value: str) -> str:
    # Compose's env files take the rest of the line literally: a value must be one line.
    if "\n" in value or "\r" in value:
        raise ValueError(f"{name} cannot hold a line break")
    return f"{name}={value}\n"


def route_password(secrets_dir: Path) -> str:
    """The password the nodes' routes present to each other, made once."""
    path = secrets_dir / "route-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    _private_file(path, password + "\n")
    return password


def route_certificate(ca_dir: Path, hosts: list[str]) -> tuple[str, str]:
    """(certificate, key) PEM for the routes between the nodes, from the platform CA.

    A route is a TLS connection both ways: the node that dials presents its certificate as
    a client and the other verifies it, so this one is issued for both uses, unlike the
    bus's serving and client certificates (libs/bus/tls.py), which each have one.
    """
    ca_cert, ca_key = bus_tls.ensure_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats-route")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def write_bus(state: Path, uids: Mapping[str, int], replicas: int) -> None:
    """Users, certificates and node configurations for the bus, and each user's env file."""
    secrets_dir = _private_dir(state / "secrets")
    users = load_or_create_users(secrets_dir)
    password = route_password(secrets_dir)
    ca_dir = secrets_dir / "tls"
    nats_uid = uids[NATS_UID_NAME]
    nats_dir = _private_dir(state / "nats", nats_uid)
    nats_tls = _private_dir(nats_dir / "tls", nats_uid)
    # Issued again at every run (issue() does for servers): the names are all it depends on.
    server = bus_tls.issue(
        ca_dir, "server", server_hosts=[NATS_ALIAS, *NODES, "localhost", "127.0.0.1"]
    )
    for source, name in (
        (server.ca, "ca.pem"),
        (server.cert, "server.pem"),
        (server.key, "server.key"),
    ):
        _copy_private(source, nats_tls / name, nats_uid)
    route_cert, route_key = route_certificate(ca_dir, list(NODES))
    _private_file(nats_tls / "route.pem", route_cert, nats_uid)
    _private_file(nats_tls / "route.key", route_key, nats_uid)
    for node in NODES:
        config = cluster_node_config(
            node,
            NODES,
            users=users,
            route_password=password,
            store_dir=NATS_STORE,
            tls_dir=f"{NATS_CONFIG_DIR}/tls",
        )
        _private_file(nats_dir / f"{node}.conf", config, nats_uid)

    env_dir = _private_dir(state / "env")
    _private_dir(state / "tls")
    for user in [OPERATOR, PROVISIONER, *(str(service) for service in Service)]:
        uid = uids.get(user, 0)  # not listed: the service runs as root (compose/uids)
        identity = bus_tls.issue(ca_dir, user)
        folder = _private_dir(state / "tls" / user, uid)
        _copy_private(identity.ca, folder / "ca.pem", uid)
        _copy_private(identity.cert, folder / f"{user}.pem", uid)
        _copy_private(identity.key, folder / f"{user}.key", uid)
        text = _env_line("SLIPWAY_NATS_USER", user) + _env_line(
            "SLIPWAY_NATS_PASSWORD", users[user]
        )
        if user == PROVISIONER:
            text += _env_line("SLIPWAY_STREAM_REPLICAS", str(replicas))
        _private_file(env_dir / f"{user}.env", text)


def write_shared_folders(state: Path, uids: Mapping[str, int]) -> None:
    """Folders two services share by their host path (compose/docker-compose.yml says why)."""
    dynolog = state / "dynolog"
    dynolog.mkdir(exist_ok=True)
    # Its socket folder is for dynos (uid 10000) to reach: searchable by all, as in
    # libs/serviceusers.py; the log-shipper makes it.
    os.chown(dynolog, uids[str(Service.LOG_SHIPPER)], uids[str(Service.LOG_SHIPPER)])
    dynolog.chmod(0o755)
    # The scheduler (root) makes one folder per database in it and hands it to backup.
    addons = state / "addons"
    addons.mkdir(exist_ok=True)
    addons.chmod(0o711)
    # Build folders: the builders (root) mount them into build containers by this host
    # path (SLIPWAY_BUILDS_ROOT), each in a subfolder of its own.
    _private_dir(state / "builds")


def write_compose_env(state: Path, values: Mapping[str, str]) -> None:
    """The variables docker-compose.yml reads, for `docker-compose --env-file`."""
    _private_file(state / "compose.env", "".join(_env_line(k, v) for k, v in values.items()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compose/generate.py",
        description="Write the bus's secrets and configuration for compose/docker-compose.yml.",
    )
    parser.add_argument("--state", type=Path, required=True, help="the folder to write into")
    parser.add_argument("--image", required=True, help="the platform image to run")
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--router-port", type=int, required=True)
    parser.add_argument("--router-https-port", type=int, required=True)
    parser.add_argument(
        "--nats-net",
        default="127.77.0",
        help="nats-N publishes its client port on <this>.N (a loopback /24), for host services",
    )
    parser.add_argument("--registry-port", type=int, required=True)
    parser.add_argument("--scope", default="", help="this installation's scope (README)")
    parser.add_argument(
        "--builder-concurrency", type=int, default=2, help="builds at once in each builder"
    )
    parser.add_argument("--replicas", type=int, default=len(NODES), help="stream replicas")
    parser.add_argument("--uids", type=Path, default=Path(__file__).with_name("uids"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("api_port", "router_port", "router_https_port", "registry_port"):
        port = getattr(args, name)
        if not 1 <= port <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be a port (1-65535), not {port}")
    if not re.fullmatch(
        r"127\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)", args.nats_net
    ):
        parser.error(f"--nats-net {args.nats_net!r} is not the first three numbers of a 127.x.y.z")
    if not 1 <= args.replicas <= len(NODES):
        parser.error(f"--replicas must be 1 to {len(NODES)}, not {args.replicas}")
    if args.builder_concurrency < 1:
        parser.error(f"--builder-concurrency must be at least 1, not {args.builder_concurrency}")
    if not re.fullmatch(SCOPE_PATTERN, args.scope):
        parser.error(f"--scope {args.scope!r} is not a scope name (README: scopes)")
    if os.geteuid() != 0:
        parser.error("run as root: the secrets are handed to the services' uids")
    if shutil.which("docker") is None:
        parser.error("docker is not installed")
    state: Path = args.state.resolve()
    _private_dir(state)
    uids = read_uids(args.uids)
    write_bus(state, uids, args.replicas)
    write_shared_folders(state, uids)
    # The image name is the one other free text here: one line, or Compose would misread it.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", args.image):
        parser.error(f"--image {args.image!r} is not an image reference")
    write_compose_env(
        state,
        {
            "SLIPWAY_COMPOSE_STATE": str(state),
            "SLIPWAY_PLATFORM_IMAGE": args.image,
            "SLIPWAY_COMPOSE_API_PORT": str(args.api_port),
            "SLIPWAY_COMPOSE_ROUTER_PORT": str(args.router_port),
            "SLIPWAY_COMPOSE_ROUTER_HTTPS_PORT": str(args.router_https_port),
            "SLIPWAY_COMPOSE_NATS_NET": args.nats_net,
            "SLIPWAY_COMPOSE_REGISTRY_PORT": str(args.registry_port),
            "SLIPWAY_SCOPE": args.scope,
            "SLIPWAY_COMPOSE_BUILDER_CONCURRENCY": str(args.builder_concurrency),
        },
    )
    print(f"configuration written to {state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
