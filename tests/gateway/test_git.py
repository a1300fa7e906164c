"""`git push` over the gateway's smart HTTP: real git, real NATS, the builder's real contract."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.gateway.app import create_service
from slipway.services.gateway.git import buildoutput, gitrepo, pushes
from tests.conftest import assert_eventually
from tests.gateway import fakebuilder
from tests.gateway.conftest import Api, Stack, gateway_settings, run_in_background, stop
from tests.gateway.fakebuilder import FakeBuilder
from tests.gateway.gitclient import commit, git, git_env, head, push_url, work_tree

pytestmark = pytest.mark.integration

builder = fakebuilder.builder  # the fixture, named for this module

LIMIT = 256 * 1024  # this module's gateway takes pushes up to 256 KiB

APP_FILES = {"app.py": "print('hello')\n", "Procfile": "web: python app.py\n"}


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[ServiceApp]:
    """The real gateway with a small push limit."""
    settings = gateway_settings(nats_server.url, slipway_home, git_push_max_bytes=LIMIT)
    service = create_service(settings)
    task = await run_in_background(service)
    yield service
    await stop(service, task)


def repo_of(stack: Stack, app: dict[str, Any]) -> Path:
    return stack.home / "gateway" / "repos" / f"{app['id']}.git"


async def push(stack: Stack, who: Api, app: str, tree: Path, *refspec: str) -> Any:
    return await git(tree, "push", push_url(stack.url, app, who.token), *(refspec or ("main",)))


async def releases(who: Api, app: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await who.ok("GET", f"/apps/{app}/releases")
    return found


async def test_push_deploys_the_app(stack: Stack, builder: FakeBuilder, tmp_path: Path) -> None:
    """A push is built, its output shown as remote: lines, and its release made from the image."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    run = await push(stack, alice, "hello", tree)
    assert run.code == 0, run.out
    assert "remote: -----> Files: Procfile, app.py" in run.out
    assert "remote: -----> Released v2" in run.out
    assert "http://hello.localhost:8080/ deployed to Slipway" in run.out
    [request] = builder.requests
    assert request.source.version == await head(tree)
    newest = (await releases(alice, "hello"))[-1]
    assert newest["version"] == 2
    assert newest["image"]["ref"].startswith("127.0.0.1:5000/hello@sha256:")
    assert newest["process_types"] == {"web": "python app.py"}
    remote_head = await git(repo_of(stack, app), "rev-parse", "main")
    assert remote_head.out.strip() == await head(tree)
    build = (await alice.ok("GET", "/apps/hello/builds"))[0]
    assert build["status"] == "succeeded"
    assert build["release"] == {"id": newest["id"], "version": 2}


async def test_build_source_is_deleted_once_built(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """The stored tarball goes when the build finishes."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    assert (await push(stack, alice, "hello", tree)).code == 0
    sources = stack.home / "gateway" / "sources"

    def emptied() -> None:
        assert list(sources.iterdir()) == []

    await assert_eventually(emptied)


async def test_failing_build_refuses_the_push(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """The buildpack's output is shown, git refuses the push, and no release is made."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", {**APP_FILES, "FAIL": "yes\n"})
    run = await push(stack, alice, "hello", tree)
    assert run.code != 0
    assert "remote:  !     Buildpack failed: FAIL is present" in run.out
    assert "pre-receive hook declined" in run.out
    assert [r["version"] for r in await releases(alice, "hello")] == [1]
    assert (await git(repo_of(stack, app), "rev-parse", "--verify", "-q", "main")).code != 0

    async def failed() -> None:
        build = (await alice.ok("GET", "/apps/hello/builds"))[0]
        assert build["status"] == "failed"
        assert build["release"] is None

    await assert_eventually(failed)


async def test_push_to_an_app_of_another_team_stores_nothing(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """Refused as not found before any byte is read: no repository, no build."""
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    app = await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    run = await push(stack, bob, "hello", tree)
    assert run.code != 0
    assert "Couldn't find that app" in run.out
    assert not repo_of(stack, app).exists()
    assert builder.requests == []


async def test_push_without_credentials_asks_for_them(stack: Stack, tmp_path: Path) -> None:
    """401 with WWW-Authenticate: git asks for a password (here it may not prompt, so it fails)."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    answer = await stack.anonymous().get("/hello.git/info/refs?service=git-receive-pack")
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    run = await git(tree, "push", push_url(stack.url, "hello", None), "main")
    assert run.code != 0
    assert "could not read Username" in run.out
    bad = await git(tree, "push", push_url(stack.url, "hello", "slp_not-a-token"), "main")
    assert bad.code != 0
    assert "Authentication failed" in bad.out or "401" in bad.out
    assert not repo_of(stack, app).exists()


async def test_viewer_cannot_push(stack: Stack, tmp_path: Path) -> None:
    """A viewer of the team gets 403: read, not deploy."""
    alice = await stack.user("alice@example.com")
    vera = await stack.user("vera@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", vera, "viewer")
    app = await stack.app(alice, "hello", team="acme")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    run = await push(stack, vera, "hello", tree)
    assert run.code != 0
    assert "(viewer) cannot push to hello" in run.out
    assert not repo_of(stack, app).exists()


async def test_oversized_push_is_refused(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """Over the limit: 413 naming it, whether git declares the length or streams it chunked."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", {**APP_FILES, "blob.bin": os.urandom(LIMIT * 2)})
    chunked = await push(stack, alice, "hello", tree)
    assert chunked.code != 0
    assert "413" in chunked.out
    url = push_url(stack.url, "hello", alice.token)
    declared = await git(tree, "-c", "http.postBuffer=16777216", "push", url, "main")
    assert declared.code != 0
    assert "413" in declared.out
    assert (await git(repo_of(stack, app), "rev-parse", "--verify", "-q", "main")).code != 0
    assert builder.requests == []


async def test_only_main_or_master_deploys(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """A push of another branch is refused with a clear message; master deploys."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES, branch="feature")
    run = await push(stack, alice, "hello", tree, "feature")
    assert run.code != 0
    assert "only main or master deploys" in run.out
    assert builder.requests == []
    master = await push(stack, alice, "hello", tree, "feature:master")
    assert master.code == 0, master.out


async def test_two_pushes_at_once_are_serialized(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """The second waits, then is refused because main moved; one release, a sound repository."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    first = await work_tree(tmp_path / "first", APP_FILES)
    second = await work_tree(tmp_path / "second", {**APP_FILES, "other.txt": "2\n"})
    builder.hold = asyncio.Event()
    first_push = asyncio.create_task(push(stack, alice, "hello", first))
    await asyncio.wait_for(builder.holding.wait(), 30)
    log_path = tmp_path / "second.log"
    with log_path.open("wb") as log:
        url = push_url(stack.url, "hello", alice.token)
        second_push = asyncio.create_task(git(second, "push", url, "main", output=log))

        def waiting() -> None:
            assert "waiting for another push to finish" in log_path.read_text()

        await assert_eventually(waiting, timeout=30)
        builder.hold.set()
        won, _ = await asyncio.gather(first_push, second_push)
    assert won.code == 0, won.out
    lost_out = log_path.read_text()
    assert "main moved while you were pushing" in lost_out
    assert len(builder.requests) == 1
    assert [r["version"] for r in await releases(alice, "hello")] == [1, 2]
    fsck = await git(repo_of(stack, app), "fsck", "--strict")
    assert fsck.code == 0, fsck.out
    assert (await git(repo_of(stack, app), "rev-parse", "main")).out.strip() == await head(first)
    # The loser pulls, merges and pushes again: now it deploys.
    pulled = await git(
        second, "pull", "-q", "--no-rebase", "--no-edit", "--allow-unrelated-histories", url, "main"
    )
    assert pulled.code == 0, pulled.out
    again = await push(stack, alice, "hello", second)
    assert again.code == 0, again.out
    assert "Released v3" in again.out


async def test_members_can_clone_and_others_cannot(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """git clone over upload-pack: the team's members may, another team's user may not."""
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    assert (await push(stack, alice, "hello", tree)).code == 0
    cloned = await git(tmp_path, "clone", "-q", push_url(stack.url, "hello", alice.token), "copy")
    assert cloned.code == 0, cloned.out
    assert (tmp_path / "copy" / "app.py").read_text() == APP_FILES["app.py"]
    refused = await git(tmp_path, "clone", "-q", push_url(stack.url, "hello", bob.token), "nope")
    assert refused.code != 0
    assert not (tmp_path / "nope").exists()


async def test_a_second_push_with_changes_deploys_again(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """Each push is a new build of its own commit, and a new release."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    assert (await push(stack, alice, "hello", tree)).code == 0
    await commit(tree, {"app.py": "print('hello again')\n"})
    run = await push(stack, alice, "hello", tree)
    assert run.code == 0, run.out
    assert "Released v3" in run.out
    assert [r.source.version for r in builder.requests][-1] == await head(tree)


def test_git_runs_with_only_its_own_environment(tmp_path: Path, monkeypatch: Any) -> None:
    """No variable of the gateway (a token, a NATS password) reaches git or its hook."""
    monkeypatch.setenv("SLIPWAY_NATS_PASSWORD", "secret")
    monkeypatch.setenv("SLIPWAY_TOKEN", "slp_secret")
    settings = gateway_settings("nats://127.0.0.1:1", tmp_path)
    env = gitrepo.base_env(settings, SLIPWAY_PUSH_ID="p", SLIPWAY_GIT_SOCKET="/s")
    assert set(env) == {
        "PATH",
        "HOME",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "LANG",
        "SLIPWAY_PUSH_ID",
        "SLIPWAY_GIT_SOCKET",
    }
    assert "secret" not in " ".join(env.values())


def test_only_one_branch_update_deploys() -> None:
    """check_updates: one update of main or master, not a deletion, else a reason."""
    old, new = "1" * 40, "2" * 40
    assert pushes.check_updates([[old, new, "refs/heads/main"]]) == (old, new, "refs/heads/main")
    assert pushes.check_updates([[old, new, "refs/heads/master"]])[2] == "refs/heads/master"
    refusals = {
        "Push one branch at a time": [[old, new, "refs/heads/main"], [old, new, "refs/tags/v1"]],
        "only main or master deploys": [[old, new, "refs/tags/v1"]],
        "Deleting main is not allowed": [[old, pushes.ZERO, "refs/heads/main"]],
    }
    for reason, updates in refusals.items():
        with pytest.raises(pushes.Refused, match=reason):
            pushes.check_updates(updates)


def test_side_band_progress_is_a_pkt_line() -> None:
    """The waiting notice is a band-2 pkt-line, sent only to clients that asked for side-band."""
    assert gitrepo.progress("hi\n") == b"0008\x02hi\n"
    request = gitrepo.pkt_line(b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/main\0 side-band-64k")
    assert gitrepo.wants_sideband(request + gitrepo.FLUSH)
    plain = gitrepo.pkt_line(b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/main\0 report-status")
    assert not gitrepo.wants_sideband(plain)
    assert not gitrepo.wants_sideband(b"garbage")


async def test_push_waits_for_a_builder_to_appear(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no builder the pusher is told so; the build waits in the queue and then deploys."""
    monkeypatch.setattr(buildoutput, "IDLE_NOTICE", 0.5)
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    log_path = tmp_path / "push.log"
    with log_path.open("wb") as log:
        url = push_url(stack.url, "hello", alice.token)
        pushing = asyncio.create_task(git(tree, "push", url, "main", output=log))

        def told() -> None:
            assert "Waiting for a builder to take the build" in log_path.read_text()

        await assert_eventually(told, timeout=30)
        late = fakebuilder.create_fake_builder(stack.nats.url)
        task = await run_in_background(late.service)
        try:
            run = await pushing
        finally:
            await stop(late.service, task)
    assert run.code == 0, log_path.read_text()
    assert "Released v2" in log_path.read_text()


async def test_after_slipway_login_git_pushes_without_a_token_in_the_url(
    stack: Stack, builder: FakeBuilder, tmp_path: Path
) -> None:
    """login installs git's credential helper for the API's origin only; logout removes it."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    tree = await work_tree(tmp_path / "hello", APP_FILES)
    gitconfig = tmp_path / "gitconfig"
    env = {
        **git_env(tmp_path),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "SLIPWAY_CONFIG_DIR": str(tmp_path / "cli"),
    }

    async def run(*argv: str, cwd: Path = tmp_path, stdin: bytes = b"") -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await process.communicate(stdin)
        return process.returncode or 0, out.decode(errors="replace")

    slipway = (sys.executable, "-m", "slipway.cli.main")
    code, out = await run(*slipway, "login", "--api-url", stack.url, "--token", alice.token or "")
    assert code == 0, out
    pushed = await run("git", "push", f"{stack.url}/hello.git", "main", cwd=tree)
    assert pushed[0] == 0 and "remote: -----> Released v2" in pushed[1], pushed
    assert (alice.token or "") not in gitconfig.read_text()  # the helper holds no token

    # Another host (a hostile remote a developer pushes to) gets nothing from the helper.
    port = stack.url.rsplit(":", 1)[1]
    for host in ("evil.example", f"127.0.0.1:{int(port) + 1}", "127.0.0.1"):
        asked = await run(*slipway, "git:credential", "get",
                          stdin=f"protocol=http\nhost={host}\n\n".encode())  # fmt: skip
        assert asked == (0, ""), (host, asked)
    asked = await run(*slipway, "git:credential", "get",
                      stdin=f"protocol=https\nhost=127.0.0.1:{port}\n\n".encode())  # fmt: skip
    assert asked == (0, ""), asked  # not over another protocol either

    assert (await run(*slipway, "logout"))[0] == 0
    assert "helper" not in gitconfig.read_text()
    refused = await run("git", "push", f"{stack.url}/hello.git", "main", cwd=tree)
    assert refused[0] != 0
