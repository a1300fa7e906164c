"""Which image references belong to an app: exact repositories and label, nothing else."""

from __future__ import annotations

from typing import Any

from slipway.libs.appimages import app_refs, is_app_repository, repository

APP = "5e47f4e5-5c09-4227-aab9-9d90155031c1"


def test_repository_drops_tag_and_digest_but_not_a_registry_port() -> None:
    """`host:port/apps/x:v1` and `host:port/apps/x@sha256:…` are both `host:port/apps/x`."""
    assert repository("127.0.0.1:5000/apps/x:v1") == "127.0.0.1:5000/apps/x"
    assert repository("127.0.0.1:5000/apps/x@sha256:ab") == "127.0.0.1:5000/apps/x"
    assert repository("127.0.0.1:5000/apps/x") == "127.0.0.1:5000/apps/x"
    assert repository("slipway/app-x:build") == "slipway/app-x"


def test_only_the_app_s_own_repositories_match() -> None:
    """Registry and local repositories of the app match; a longer id or another path does not."""
    assert is_app_repository(f"registry.example:5000/apps/{APP}", APP)
    assert is_app_repository(f"localhost/apps/{APP}", APP)
    assert is_app_repository(f"slipway/app-{APP}", APP)
    assert not is_app_repository(f"registry.example:5000/apps/{APP}0", APP)
    assert not is_app_repository(f"slipway/app-{APP}0", APP)
    assert not is_app_repository(f"registry.example:5000/other/apps/{APP}", APP)
    assert not is_app_repository(f"someone/apps/{APP}", APP)  # a Docker Hub user, not ours


def test_app_refs_takes_names_of_the_app_and_unnamed_images_labelled_for_it() -> None:
    """Named refs by repository; an unnamed image by its label; a foreign name is kept."""
    images: list[dict[str, Any]] = [
        {
            "Id": "sha256:1",
            "RepoTags": [f"slipway/app-{APP}:b1", f"reg:5000/apps/{APP}:b1", "mine:latest"],
            "RepoDigests": [f"reg:5000/apps/{APP}@sha256:d1"],
            "Labels": {"slipway.app": APP},
        },
        {"Id": "sha256:2", "RepoTags": None, "RepoDigests": [], "Labels": {"slipway.app": APP}},
        {"Id": "sha256:3", "RepoTags": ["<none>:<none>"], "Labels": {"slipway.app": APP + "0"}},
        {"Id": "sha256:4", "RepoTags": [f"slipway/app-{APP}0:b2"], "Labels": None},
    ]
    assert app_refs(images, APP) == [
        f"slipway/app-{APP}:b1",
        f"reg:5000/apps/{APP}:b1",
        f"reg:5000/apps/{APP}@sha256:d1",
        "sha256:2",
    ]
