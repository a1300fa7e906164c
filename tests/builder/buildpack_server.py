"""An https:// buildpack server for builder tests: tarballs and git smart HTTP under a test CA.

Buildpacks are named by https:// URL only, and fetched inside a container on the
builders' network, so the server listens on that network's gateway address (the
host side of the test's own bridge), with a certificate for that address signed
by a CA made for the test. The builder under test gets a CA bundle holding the
system CAs plus this one, and `egress_allow` for that one address.

    server = await BuildpackServer.start(folder, "172.18.0.1")
    url = server.tarball(buildpack_folder)        # https://172.18.0.1:<port>/<id>.tgz
    url = server.git(buildpack_folder) + "#main"  # https://172.18.0.1:<port>/<id>.git
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import io
import ipaddress
import shutil
import ssl
import subprocess
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiodocker
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


async def network_gateway(docker: aiodocker.Docker, network: str) -> str:
    """The host-side address of a bridge network (created by the caller)."""
    info = await (await docker.networks.get(network)).show()
    return str(info["IPAM"]["Config"][0]["Gateway"])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls(folder: Path, address: str) -> tuple[Path, ssl.SSLContext]:
    """A CA bundle (system CAs + a test CA) and a server context for `address`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slipway test buildpack CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=6))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=6))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    bundle = folder / "ca-bundle.crt"
    bundle.write_bytes(SYSTEM_CA.read_bytes() + b"\n" + ca_pem)
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(_pem_key(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    return bundle, context


def tar_folder(folder: Path) -> bytes:
    """A gzipped tarball of `folder`'s content, links kept as links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


@dataclass
class BuildpackServer:
    """HTTPS on one address: `/<name>` blobs and `/<name>.git` repositories (smart HTTP)."""

    root: Path
    address: str
    ca_bundle: Path
    runner: web.AppRunner
    port: int
    tls: bool = True
    blobs: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    # `/stall/<name>` answers its headers, then waits for this (a server that never finishes).
    release_stalled: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, root: Path, address: str, *, tls: bool = True) -> BuildpackServer:
        """Listen on `address` (plain HTTP if not `tls`: for tests of what is refused)."""
        bundle, context = make_tls(root / "tls", address)
        (root / "repos").mkdir(parents=True, exist_ok=True)
        server = cls(root, address, bundle, web.AppRunner(web.Application()), 0, tls)
        app = web.Application()
        app.router.add_get("/{repo}.git/info/refs", server._info_refs)
        app.router.add_post("/{repo}.git/git-upload-pack", server._upload_pack)
        app.router.add_get("/stall/{name}", server._stall)
        app.router.add_get("/{name}", server._blob)
        server.runner = web.AppRunner(app)
        await server.runner.setup()
        site = web.TCPSite(server.runner, address, 0, ssl_context=context if tls else None)
        await site.start()
        server.port = server.runner.addresses[0][1]
        return server

    async def close(self) -> None:
        self.release_stalled.set()
        await self.runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.port}"

    def redirect(self, to: str) -> str:
        """A URL answering 302 to `to`."""
        name = uuid.uuid4().hex + ".tgz"
        self.redirects[name] = to
        return f"{self.base_url}/{name}"

    def blob(self, data: bytes, suffix: str = ".tgz") -> str:
        """Serve `data`; its URL."""
        name = uuid.uuid4().hex + suffix
        self.blobs[name] = data
        return f"{self.base_url}/{name}"

    def tarball(self, folder: Path) -> str:
        """Serve `folder` as a .tgz; its URL."""
        return self.blob(tar_folder(folder))

    def git(self, folder: Path, branch: str = "main") -> str:
        """Commit `folder` on `branch` in a served bare repository; its URL (add `#ref`)."""
        name = uuid.uuid4().hex
        work = self.root / "work" / name
        shutil.copytree(folder, work, symlinks=True)
        for args in (
            ["init", "--quiet", f"--initial-branch={branch}"],
            ["add", "-A"],
            ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "bp"],
        ):
            subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True)
        bare = self.root / "repos" / f"{name}.git"
        subprocess.run(
            ["git", "clone", "--quiet", "--bare", str(work), str(bare)],
            check=True,
            capture_output=True,
        )
        return f"{self.base_url}/{name}.git"

    async def _blob(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        name = request.match_info["name"]
        if name in self.redirects:
            raise web.HTTPFound(self.redirects[name])
        data = self.blobs.get(name)
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/gzip")

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        response = web.StreamResponse(headers={"Content-Type": "application/gzip"})
        await response.prepare(request)
        await response.write(b"\x1f\x8b")
        await self.release_stalled.wait()
        return response

    def _repo(self, request: web.Request) -> Path:
        self.requests.append(request.path)
        repo = self.root / "repos" / f"{request.match_info['repo']}.git"
        if not (repo / "HEAD").is_file():
            raise web.HTTPNotFound()
        return repo

    async def _info_refs(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if request.query.get("service") != "git-upload-pack":
            raise web.HTTPForbidden()
        refs = await _git("upload-pack", "--stateless-rpc", "--advertise-refs", str(repo))
        head = b"# service=git-upload-pack\n"
        body = f"{len(head) + 4:04x}".encode() + head + b"0000" + refs
        return web.Response(body=body, content_type="application/x-git-upload-pack-advertisement")

    async def _upload_pack(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        out = await _git("upload-pack", "--stateless-rpc", str(repo), stdin=body)
        return web.Response(body=out, content_type="application/x-git-upload-pack-result")


async def _git(*args: str, stdin: bytes = b"") -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate(stdin)
    return out
