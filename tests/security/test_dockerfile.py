"""A customer's Dockerfile is built as contained as a buildpack build.

Every test runs a real Dockerfile build through the real builder against the real
engine: a step that reaches for the host (an `ADD` URL on loopback, `RUN curl` to
the build bridge's host side), names another app's image, allocates past the
memory limit or forks past the pids limit fails, saying why; the CA bundle is
there for RUN steps but stays out of the image; a build leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from slipway.libs.natsserver import NatsServer
from slipway.services.builder.app import BUILDER
from tests.builder.buildpack_server import network_gateway
from tests.builder.conftest import BuildResult, Harness, builder_stack, tarball
from tests.builder.test_destroy import destroy
from tests.conftest import assert_eventually

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

RUN_STACK = "slipway/stack-run:bookworm"
MEMORY_MB = 256
PIDS = 64
EXTRACTED_MAX = 64 * 1024 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    """A builder of its own: small limits, and no address allowed beyond the defaults."""
    home = tmp_path_factory.mktemp("dockerfile-home")
    nats = NatsServer(home / "nats")
    nats.start()
    try:
        async with builder_stack(
            nats, home, egress_allow="", build_memory_mb=MEMORY_MB, build_pids=PIDS,
            build_timeout=150.0, output_max_lines=2000, output_tail_lines=20,
            extracted_max_bytes=EXTRACTED_MAX,
        ) as h:  # fmt: skip
            yield h
    finally:
        nats.stop()


@dataclass
class Listener:
    """An HTTP server the test runs on the host; `hits` counts the requests it answered."""

    url: str
    hits: list[str] = field(default_factory=list)


async def listen(address: str) -> tuple[Listener, web.AppRunner]:
    listener = Listener("")

    async def answer(request: web.Request) -> web.Response:
        listener.hits.append(request.path)
        return web.Response(text="HOST-SECRET\n")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, address, 0).start()
    listener.url = f"http://{address}:{runner.addresses[0][1]}"
    return listener, runner


async def build_dockerfile(h: Harness, dockerfile: str, **files: str) -> BuildResult:
    return await h.build(tarball({"Dockerfile": dockerfile, **files}), app_id=h.app_id())


@dataclass
class OtherApp:
    """An image another app built: its repository tag and its image id."""

    ref: str
    image_id: str


@pytest.fixture(scope="module")
def other_app() -> Iterator[OtherApp]:
    """Another app's image on the engine, holding that app's secret."""
    app_id = "app" + uuid.uuid4().hex[:12]
    ref = f"slipway/app-{app_id}:v1"
    name = f"slipway-test-other-{app_id}"
    run = ["docker", "run", "--name", name, "--label", f"slipway.app={app_id}", RUN_STACK]
    subprocess.run([*run, "sh", "-c", "echo OTHER-APP-SECRET > /app/secret.txt"], check=True)
    commit = ["docker", "commit", "--change", f"LABEL slipway.app={app_id}", name, ref]
    image_id = subprocess.run(commit, check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    try:
        yield OtherApp(ref, image_id.removeprefix("sha256:"))
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def assert_refused(result: BuildResult, reason: str) -> None:
    assert result.status == "failed", result.text
    assert reason in (result.finished.error or ""), result.finished.error
    assert result.release is None
    assert "OTHER-APP-SECRET" not in result.text


async def test_add_url_on_host_loopback_is_refused(stack: Harness) -> None:
    """`ADD http://127.0.0.1:<port>/` fails by the egress guard; the server sees no request."""
    listener, runner = await listen("127.0.0.1")
    try:
        result = await build_dockerfile(stack, f"FROM {RUN_STACK}\nADD {listener.url}/x /app/x\n")
    finally:
        await runner.cleanup()
    assert result.status == "failed"
    assert "a loopback address" in (result.finished.error or ""), result.finished.error
    assert listener.hits == []


async def test_run_curl_to_the_host_is_refused(stack: Harness) -> None:
    """`RUN curl` to a server on the build bridge's host address gets no answer."""
    gateway = await network_gateway(stack.docker, stack.settings.build_network)
    listener, runner = await listen(gateway)
    try:
        run = f"RUN curl -sS --max-time 20 {listener.url}/ && echo REACHED-$((40 + 2))"
        result = await build_dockerfile(stack, f"FROM {RUN_STACK}\n{run}\n")
    finally:
        await runner.cleanup()
    assert result.status == "failed"
    assert "REACHED-42" not in result.text
    assert "HOST-SECRET" not in result.text
    assert listener.hits == []


async def test_from_a_short_image_id_of_another_app_is_refused(
    stack: Harness, other_app: OtherApp
) -> None:
    """`FROM <short id>` of another app's image fails: image IDs are not base images."""
    result = await build_dockerfile(
        stack, f"FROM {other_app.image_id[:12]}\nCMD cat /app/secret.txt\n"
    )
    assert_refused(result, "an image ID is not allowed")


async def test_from_a_four_character_image_id_is_refused(
    stack: Harness, other_app: OtherApp
) -> None:
    """Even a tiny ID prefix (the engine would resolve it) is refused."""
    result = await build_dockerfile(stack, f"FROM {other_app.image_id[:4]}\n")
    assert_refused(result, "an image ID is not allowed")


async def test_from_a_full_sha256_id_is_refused(stack: Harness, other_app: OtherApp) -> None:
    """`FROM sha256:<id>` is refused."""
    result = await build_dockerfile(stack, f"FROM sha256:{other_app.image_id}\n")
    assert_refused(result, "an image ID is not allowed")


async def test_from_another_apps_image_by_name_is_refused(
    stack: Harness, other_app: OtherApp
) -> None:
    """`FROM slipway/app-<other id>:v1` is refused, naming what is allowed."""
    result = await build_dockerfile(stack, f"FROM {other_app.ref}\nCMD cat /app/secret.txt\n")
    assert_refused(result, "another app's image cannot be used in a build")
    assert RUN_STACK in (result.finished.error or "")


async def test_copy_from_another_apps_image_is_refused(stack: Harness, other_app: OtherApp) -> None:
    """`COPY --from=slipway/app-<other id>:v1` is refused like FROM."""
    dockerfile = f"FROM {RUN_STACK}\nCOPY --from={other_app.ref} /app/secret.txt /app/stolen\n"
    result = await build_dockerfile(stack, dockerfile)
    assert_refused(result, "another app's image cannot be used in a build")


async def test_from_an_image_not_on_the_allow_list_is_refused(stack: Harness) -> None:
    """`FROM debian:bookworm` is refused (never pulled), naming the allowed bases."""
    result = await build_dockerfile(stack, "FROM debian:bookworm\n")
    assert_refused(result, "not an allowed base image")


async def test_run_past_the_memory_limit_fails(stack: Harness) -> None:
    """A RUN allocating twice the memory limit is killed; the build says it ran out of memory."""
    allocate = f"b = bytearray({2 * MEMORY_MB} * 1024 * 1024); print('ALLOC' + 'ATED')"
    result = await build_dockerfile(stack, f'FROM {RUN_STACK}\nRUN python3 -c "{allocate}"\n')
    assert result.status == "failed"
    assert "ALLOCATED" not in result.text
    assert f"ran out of memory (the limit is {MEMORY_MB} MB" in (result.finished.error or "")


FORK_BOMB = """\
import os, sys
for i in range(4 * PIDS):
    try:
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "60"])
    except OSError as exc:
        print("FORK-REFUSED", i, exc.strerror)
        sys.exit(1)
print("FORKED-ALL")
"""


async def test_fork_bomb_is_stopped_by_the_pids_limit(stack: Harness) -> None:
    """A RUN forking past the pids limit is refused new processes and the build fails."""
    dockerfile = f"FROM {RUN_STACK}\nCOPY bomb.py /tmp/bomb.py\nRUN python3 /tmp/bomb.py\n"
    result = await build_dockerfile(
        stack, dockerfile, **{"bomb.py": FORK_BOMB.replace("PIDS", str(PIDS))}
    )
    assert result.status == "failed"
    assert "FORK-REFUSED" in result.text
    assert "Resource temporarily unavailable" in result.text
    assert "FORKED-ALL" not in result.text


async def test_ca_bundle_is_visible_to_run_steps(stack: Harness) -> None:
    """A RUN step finds the host CA bundle where SSL_CERT_FILE (and the others) point."""
    run = 'RUN test -s "$SSL_CERT_FILE" && echo "CA-AT=$SSL_CERT_FILE:$CURL_CA_BUNDLE"'
    result = await build_dockerfile(stack, f"FROM {RUN_STACK}\n{run}\n")
    assert result.status == "succeeded", result.text
    assert "CA-AT=/etc/slipway/ca-bundle.crt:/etc/slipway/ca-bundle.crt" in result.text


async def test_ca_variables_and_args_stay_out_of_the_image(stack: Harness) -> None:
    """The CA variables and ARG values a RUN saw are not in the image's config."""
    dockerfile = f"FROM {RUN_STACK}\nARG TOKEN=build-only\nRUN echo $TOKEN\nENV KEPT=yes\n"
    result = await build_dockerfile(stack, dockerfile)
    assert result.status == "succeeded", result.text
    assert result.release is not None
    config = (await stack.docker.images.inspect(result.release.image_ref))["Config"]
    names = {item.partition("=")[0] for item in config["Env"]}
    assert "KEPT" in names
    assert not names & {"SSL_CERT_FILE", "CURL_CA_BUNDLE", "TOKEN"}
    assert "build-only" not in str(config["Cmd"])


async def test_failed_build_leaves_no_container_or_image(stack: Harness) -> None:
    """After a RUN fails, no container or image of the build is left on the engine."""
    dockerfile = f"FROM {RUN_STACK}\nRUN echo layer > /tmp/layer\nRUN exit 3\n"
    result = await build_dockerfile(stack, dockerfile)
    assert result.status == "failed"
    assert "returned a non-zero code: 3" in (result.finished.error or "")
    label: dict[str, Any] = {"label": [f"slipway.build={result.build_id}"]}

    async def nothing_left() -> None:
        assert await stack.docker.containers.list(all=True, filters=label) == []
        assert await stack.docker.images.list(all=True, filters=label) == []

    await assert_eventually(nothing_left)


async def test_endless_output_is_cut_with_a_marker(stack: Harness) -> None:
    """A RUN printing without end is bounded: a `[... N lines dropped]` marker, then the tail."""
    result = await build_dockerfile(stack, f"FROM {RUN_STACK}\nRUN seq 1 50000\n")
    assert result.status == "succeeded"
    assert "lines dropped]" in result.text
    assert len(result.lines) < 2100
    assert "50000\n" in result.lines, result.lines[-30:]  # the end is what is kept


async def test_cancelled_build_leaves_no_container_or_image(stack: Harness) -> None:
    """An app destroyed during a RUN: the build ends cancelled, its containers and images go."""
    app_id, build_id = stack.app_id(), uuid.uuid4().hex
    dockerfile = (
        f"FROM {RUN_STACK}\nRUN echo one > /tmp/one\nRUN echo waiting-$((1 + 1)) && sleep 600\n"
    )
    running = asyncio.create_task(
        stack.build(tarball({"Dockerfile": dockerfile}), app_id=app_id, build_id=build_id)
    )

    async def waiting() -> None:
        out = stack.builder[BUILDER].running.get(build_id)
        assert out is not None and "waiting-2\n" in out.text

    await assert_eventually(waiting, timeout=60, interval=0.1)
    await destroy(stack, app_id)
    result = await asyncio.wait_for(running, 60)
    assert result.finished.error == "build cancelled: the app was destroyed"
    label: dict[str, Any] = {"label": [f"slipway.build={build_id}"]}

    async def nothing_left() -> None:
        assert await stack.docker.containers.list(all=True, filters=label) == []
        assert await stack.docker.images.list(all=True, filters=label) == []

    await assert_eventually(nothing_left, timeout=30, interval=0.1)


async def test_copy_through_a_linked_folder_is_refused(stack: Harness) -> None:
    """`COPY link/file` where `link` is a symbolic link to a folder is refused, not followed."""
    link = tarfile.TarInfo("linked")
    link.type, link.linkname = tarfile.SYMTYPE, "real"
    app = tarball(
        {
            "Dockerfile": f"FROM {RUN_STACK}\nCOPY linked/data.txt /app/data.txt\n",
            "real/data.txt": "x",
        },
        extra=[link],
    )
    result = await stack.build(app, app_id=stack.app_id())
    assert result.status == "failed"
    assert "linked is a link or a file, not a folder" in (result.finished.error or "")


async def test_symbolic_link_is_copied_as_a_link(stack: Harness) -> None:
    """A link in the context arrives in the image as the same link (never read on the host)."""
    link = tarfile.TarInfo("pointer")
    link.type, link.linkname = tarfile.SYMTYPE, "target.txt"
    dockerfile = f"FROM {RUN_STACK}\nCOPY pointer target.txt /app/\nRUN readlink /app/pointer\n"
    app = tarball({"Dockerfile": dockerfile, "target.txt": "t"}, extra=[link])
    result = await stack.build(app, app_id=stack.app_id())
    assert result.status == "succeeded", result.text
    assert "target.txt\n" in result.lines


def gzipped_tar_of_zeros(size: int) -> bytes:
    """A .tar.gz holding one file of `size` zero bytes (it compresses a thousandfold)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


async def test_add_of_an_archive_bomb_is_refused(stack: Harness) -> None:
    """`ADD` of a tar.gz unpacking past SLIPWAY_EXTRACTED_MAX_BYTES fails before it is unpacked."""
    bomb = tarfile.TarInfo("bomb.tar.gz")
    data = gzipped_tar_of_zeros(2 * EXTRACTED_MAX)
    bomb.size = len(data)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        dockerfile = f"FROM {RUN_STACK}\nADD bomb.tar.gz /app/\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.addfile(bomb, io.BytesIO(data))
    result = await stack.build(buffer.getvalue(), app_id=stack.app_id())
    assert result.status == "failed"
    assert f"the archive unpacks to more than {EXTRACTED_MAX} bytes" in (
        result.finished.error or ""
    )


async def test_dockerfile_that_is_a_link_is_not_read(stack: Harness) -> None:
    """A `Dockerfile` that is a symbolic link fails the build; the builder does not follow it."""
    link = tarfile.TarInfo("Dockerfile")
    link.type, link.linkname = tarfile.SYMTYPE, "real.Dockerfile"
    app = tarball({"real.Dockerfile": f"FROM {RUN_STACK}\n"}, extra=[link])
    result = await stack.build(app, app_id=stack.app_id())
    assert result.status == "failed"
    assert "the Dockerfile must be a regular file (not a link)" in (result.finished.error or "")
