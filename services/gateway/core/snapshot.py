"""What the gateway puts in a platform snapshot (libs/service/snapshots.py).

Its database (accounts, teams, apps, config, releases, audit chains), every app's bare
git repository, each read with that app's push lock held so that no push is half in,
and the key that signs source URLs. Uploaded sources not built yet and live sessions
do not come back.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from slipway.libs.snapshot.export import Database, File, Folder, Sources
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.git import gitrepo

LEFT_OUT = (
    "gateway: uploaded sources not yet built (push or upload them again)",
    "gateway: live sessions (log tails, build output streams, one-off dyno terminals)",
)


def sources(settings: GatewaySettings) -> Callable[[], Sources]:
    """The gateway's Sources, listed afresh at each export (repositories come and go)."""

    def declare() -> Sources:
        state = settings.state_dir("gateway")
        repos = gitrepo.repos_dir(settings)
        folders = [
            Folder(
                repos / entry.name,
                f"gateway/repos/{entry.name}/",
                count="gateway/repos",
                lock=_push_lock(settings, entry.name.removesuffix(".git")),
            )
            # `.<id>.git.init` is a repository still being made: nothing pushed to it yet.
            for entry in sorted(repos.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".git") and not entry.name.startswith(".")
        ]
        return Sources(
            databases=[Database(settings.db_path(), "gateway/gateway.db")],
            files=[File(state / "url-signing.key", "gateway/url-signing.key")],
            folders=folders,
            left_out=LEFT_OUT,
        )

    return declare


def _push_lock(
    settings: GatewaySettings, app_id: str
) -> Callable[[], AbstractAsyncContextManager[None]]:
    # The flock a push holds across receive-pack (gitrepo.py): also taken by this process's
    # own pushes, whose asyncio lock is always followed by it.
    return lambda: gitrepo.file_lock(gitrepo.lock_path(settings, app_id))
