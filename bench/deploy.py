"""`git push` to its first 200 through the router, beside docker build + push + run, same run.

    .venv/bin/python bench/deploy.py [--timeout 600]

Runs against the platform `scripts/up` started: the API URL and token are the CLI's
(`slipway.cli.config`, so `SLIPWAY_API_URL` / `SLIPWAY_API_KEY` work too), and git gets
the token from the credential helper `scripts/up` registered. The bench makes its own app
(`bench-deploy-<random>`) and destroys it at the end, whatever happened.

- platform, cold: examples/python-hello pushed to the new app (no build cache), from the
  start of `git push` until `http://<app>.<domain>:<router port>/` answers 200;
- platform, warm: one line of hello.py changed, pushed again, until the router answers
  with the new text;
- docker, cold: an equivalent two-stage Dockerfile (pip in the build stack, the app on
  the run stack, both the platform's own local images) `docker build --no-cache`,
  `docker push` to a Distribution registry on loopback (the same `docker-registry` the
  platform runs, a private instance: the platform's own registry only takes the
  builder's scoped credentials), `docker run -p`, until the port answers 200;
- docker, warm: the same line changed, `docker build` with its layer cache, push, run.

Where the platform's time goes comes from the push's own streamed output, timed as each
line arrives (the builder's step lines `----->`), then the dynos API and the router:
upload (git until the build starts), fetch, compile, image, push (to the registry),
release, boot (until a dyno of the new release is up), route (until the router answers).
Targets: cold <= 1.3x docker, warm <= 1.5x; each is printed as met or not.
Every wait has a deadline (`--timeout`): past it the bench says what it was waiting for,
cleans up and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from slipway.cli.config import effective

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "python-hello"
ACCEPT = "application/vnd.heroku+json; version=3"
COLD_TEXT = "Hello from python-hello"
WARM_TEXT = "Hello again from python-hello"
CA_BUNDLE = Path(os.environ.get("SLIPWAY_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
BUILD_STACK = "slipway/stack-build:bookworm"
RUN_STACK = "slipway/stack-run:bookworm"
TARGETS = {"cold": 1.3, "warm": 1.5}
# The builder's step lines, in the order a buildpack build prints them, and the phase
# each one starts (services/builder/build.py, compile.py, image.py; gateway/pushes.py).
MARKERS = (
    ("-----> Fetching source", "fetch"),
    ("-----> ", "compile"),  # the first step line after the fetch: the buildpack's own
    ("-----> Compressing and building the image", "image"),
    ("-----> Pushing image", "push"),
    ("-----> Done:", "release"),
    ("-----> Released", "git"),
)
PHASES = ("upload", "fetch", "compile", "image", "push", "release", "boot", "route")

DOCKERFILE = f"""\
FROM {BUILD_STACK} AS build
COPY ca.crt /tmp/ca.crt
WORKDIR /app
COPY requirements.txt .
RUN python3 -m venv /app/.venv && PIP_CERT=/tmp/ca.crt /app/.venv/bin/pip install \\
    --disable-pip-version-check --no-input --progress-bar off -r requirements.txt
COPY hello.py Procfile ./

FROM {RUN_STACK}
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH
USER dyno
CMD gunicorn --bind 0.0.0.0:$PORT --workers 2 --access-logfile - hello:app
"""


class BenchError(Exception):
    """A step failed or a wait passed its deadline: the message says which."""


@dataclass
class Run:
    """One measured deploy: total seconds and seconds per phase."""

    total: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


def until(deadline: float, what: str, check: Callable[[], bool], every: float = 0.05) -> None:
    """Poll `check` until true; BenchError naming `what` once `deadline` passes."""
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run a command; BenchError with its last output lines if it fails."""
    try:
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(args[:3])} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise BenchError(f"{' '.join(args[:3])} failed ({done.returncode}): {tail}")
    return done.stdout


def http_get(url: str, host: str | None = None, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, "") when nothing answers yet."""
    # Only http URLs this bench builds itself (the router's, a published port).
    request = urllib.request.Request(url, headers={"Host": host} if host else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, ValueError):
        return 0, ""


# ---- the platform ------------------------------------------------------------------------------


class Api:
    """The platform's API as the CLI reaches it."""

    def __init__(self) -> None:
        credentials = effective(os.environ)
        if not credentials.token:
            raise BenchError("no API token: run scripts/up (or slipway login) first")
        self.url = credentials.api_url
        self.token = credentials.token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the CLI's own API URL
            self.url + path,
            data=data,
            method=method,
            headers={
                "Accept": ACCEPT,
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise BenchError(f"{method} {path}: {exc.code} {exc.read()[:200]!r}") from None
        except OSError as exc:
            raise BenchError(
                f"{method} {path}: the API at {self.url} does not answer ({exc})"
            ) from None
        return json.loads(text) if text else None


def push(workdir: Path, git_url: str, deadline: float) -> tuple[float, dict[str, float], int]:
    """`git push`, each output line timed: (start, phase -> start time, released version)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    started = time.perf_counter()
    child = subprocess.Popen(
        ["git", "push", "--progress", git_url, "HEAD:main"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert child.stderr is not None
    marks: dict[str, float] = {}
    lines: list[str] = []
    version, step, buffer = 0, 0, b""
    while chunk := child.stderr.read1(4096):  # type: ignore[attr-defined]
        now = time.perf_counter()
        buffer += chunk
        *complete, buffer = buffer.replace(b"\r", b"\n").split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace").strip().removeprefix("remote:").strip()
            lines.append(line)
            if line.startswith("-----> Released v"):
                version = int(line.removeprefix("-----> Released v").split()[0])
            # One phase per line, in order: "-----> " alone is the first step after the fetch.
            if step < len(MARKERS) and line.startswith(MARKERS[step][0]):
                marks[MARKERS[step][1]] = now
                step += 1
        if time.monotonic() > deadline:
            child.kill()
            raise BenchError("timed out waiting for git push to finish")
    code = child.wait()
    marks["end"] = time.perf_counter()
    if code != 0 or not version:
        tail = " | ".join(lines[-4:])
        raise BenchError(f"git push failed ({code}): {tail}")
    return started, marks, version


def platform_deploy(api: Api, app: dict[str, Any], workdir: Path, text: str, timeout: float) -> Run:
    """One push until the router serves `text`: the total and where the time went."""
    deadline = time.monotonic() + timeout
    started, marks, version = push(workdir, app["git_url"], deadline)

    def new_dyno_up() -> bool:
        dynos = api.call("GET", f"/apps/{app['name']}/dynos")
        return any(
            d["type"] == "web" and d["state"] == "up" and d["release"]["version"] == version
            for d in dynos
        )

    until(deadline, f"a web dyno of v{version} to be up", new_dyno_up)
    up = time.perf_counter()
    web = urlsplit(app["web_url"])
    router = f"http://127.0.0.1:{web.port or 80}/"
    until(
        deadline,
        f"the router to answer {text!r} for {web.hostname}",
        lambda: (answer := http_get(router, web.hostname))[0] == 200 and text in answer[1],
    )
    served = time.perf_counter()
    order = ["fetch", "compile", "image", "push", "release", "git", "end"]
    times = [started] + [marks.get(p, 0.0) for p in order]
    phases = {"upload": marks.get("fetch", started) - started}
    for name, begin, finish in zip(order[:-2], times[1:-2], times[2:-1], strict=True):
        if begin and finish:
            phases[name] = finish - begin
    # The git exit after "Released" is the gateway's closing lines: part of release.
    phases["release"] = phases.get("release", 0.0) + (marks["end"] - marks.get("git", marks["end"]))
    phases["boot"] = up - marks["end"]
    phases["route"] = served - up
    return Run(total=served - started, phases=phases)


def prepare_source(workdir: Path) -> None:
    shutil.copytree(EXAMPLE, workdir)
    run("git", "init", "-q", "-b", "main", cwd=workdir)
    commit(workdir, "python-hello")


def commit(workdir: Path, message: str) -> None:
    run("git", "add", "-A", cwd=workdir)
    who = ("-c", "user.name=bench", "-c", "user.email=bench@slipway.invalid")
    run("git", *who, "commit", "-qm", message, cwd=workdir)


def change_one_line(workdir: Path) -> None:
    hello = workdir / "hello.py"
    hello.write_text(hello.read_text().replace(COLD_TEXT, WARM_TEXT))


# ---- plain docker ------------------------------------------------------------------------------


@contextmanager
def registry(root: Path) -> Iterator[str]:
    """A Distribution registry on a loopback port (Docker pushes to loopback over HTTP)."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        raise BenchError("docker-registry not found: scripts/up installs it")
    port = free_port()
    root.mkdir(parents=True)
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    child = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        until(time.monotonic() + 30, "the bench's registry to listen", lambda: _listens(port))
        yield f"127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait(10)


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def docker_deploy(context: Path, image: str, text: str, cold: bool, timeout: float) -> Run:
    """docker build (+ --no-cache when cold), push, run until the port answers `text`."""
    deadline = time.monotonic() + timeout
    started = time.perf_counter()
    cache = ["--no-cache"] if cold else []
    run("docker", "build", *cache, "-q", "-t", image, str(context), timeout=timeout)
    built = time.perf_counter()
    run("docker", "push", "-q", image, timeout=timeout)
    pushed = time.perf_counter()
    name = f"bench-deploy-{secrets.token_hex(4)}"
    run(
        "docker", "run", "-d", "--name", name, "-e", "PORT=5000", "-p", "127.0.0.1::5000", image
    )  # fmt: skip
    try:
        port = run("docker", "port", name, "5000/tcp").strip().splitlines()[0].rsplit(":", 1)[1]
        until(
            deadline,
            f"docker run of {image} to answer {text!r}",
            lambda: (
                (answer := http_get(f"http://127.0.0.1:{port}/"))[0] == 200 and text in answer[1]
            ),
        )
        served = time.perf_counter()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    return Run(
        total=served - started,
        phases={"build": built - started, "push": pushed - built, "run": served - pushed},
    )


def prepare_context(source: Path, context: Path) -> None:
    shutil.copytree(source, context, ignore=shutil.ignore_patterns(".git"))
    (context / "Dockerfile").write_text(DOCKERFILE)
    shutil.copyfile(CA_BUNDLE, context / "ca.crt")


# ---- the run -----------------------------------------------------------------------------------


def report(results: dict[str, tuple[Run, Run]]) -> bool:
    """Print both sides, the ratios against the targets and where the time went."""
    met = True
    for kind, (ours, docker) in results.items():
        ratio = ours.total / docker.total
        ok = ratio <= TARGETS[kind]
        met = met and ok
        print(
            f"{kind:5} platform {ours.total:6.1f} s   docker {docker.total:6.1f} s   ratio"
            f" {ratio:.2f}x (target <= {TARGETS[kind]}x: {'met' if ok else 'NOT met'})"
        )
        shares = "  ".join(
            f"{name} {ours.phases[name]:.1f}" for name in PHASES if name in ours.phases
        )
        print(f"      platform: {shares}")
        print("      docker:   " + "  ".join(f"{k} {v:.1f}" for k, v in docker.phases.items()))
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds any one deploy may take"
    )
    args = parser.parse_args()
    try:
        api = Api()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    name = f"bench-deploy-{secrets.token_hex(3)}"
    tag = secrets.token_hex(4)
    results: dict[str, tuple[Run, Run]] = {}
    created = False
    images: list[str] = []
    with tempfile.TemporaryDirectory(prefix="slipway-bench-deploy-") as tmp:
        root = Path(tmp)
        try:
            app = api.call("POST", "/apps", {"name": name})
            created = True
            print(f"app {name}: {app['web_url']} (pushing {EXAMPLE.relative_to(ROOT)})")
            source = root / "source"
            prepare_source(source)
            with registry(root / "registry") as where:
                for kind in ("cold", "warm"):
                    image = f"{where}/bench-deploy:{tag}-{kind}"
                    images.append(image)
                    if kind == "warm":
                        change_one_line(source)
                        commit(source, "one line changed")
                    text = WARM_TEXT if kind == "warm" else COLD_TEXT
                    ours = platform_deploy(api, app, source, text, args.timeout)
                    context = root / f"context-{kind}"
                    prepare_context(source, context)
                    docker = docker_deploy(context, image, text, kind == "cold", args.timeout)
                    results[kind] = (ours, docker)
                    print(f"{kind}: platform {ours.total:.1f} s, docker {docker.total:.1f} s")
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            if created:
                try:
                    api.call("DELETE", f"/apps/{name}")
                except BenchError as exc:
                    print(f"warning: app {name} not destroyed: {exc}", file=sys.stderr)
            if images:
                subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)
    if not report(results):
        print("targets not met: the phases above say where the platform's time goes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
