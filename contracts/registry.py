"""registry-proxy's contracts: short-lived, scoped credentials for the app image registry.

The real registry (Distribution) listens where only registry-proxy reaches it;
registry-proxy serves the registry API to Docker engines and lets a request
through only with a credential it issued: scoped to one app's repository and to
pull or push, expiring after `ttl_s`. The builder asks for push credentials,
the scheduler for pull credentials on behalf of a host.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, Message, Rpc, only
from slipway.contracts.subjects import OPERATOR, Service

Access = Literal["pull", "push"]


class IssueCredentials(Message, tag="registry.credentials.issue.v1", frozen=True, kw_only=True):
    app_id: str
    access: Access
    ttl_s: int = 900


class Credentials(Message, tag="registry.credentials.v1", frozen=True, kw_only=True):
    """What `docker login` / the engine API's X-Registry-Auth needs."""

    registry: str  # host:port the Docker engine talks to
    repository: str  # "<registry>/apps/<app_id>", tag or digest appended by the caller
    username: str
    password: str
    expires_at: float


class ImagePushed(Event, tag="registry.image.pushed.v1", frozen=True, kw_only=True):
    app_id: str
    repository: str
    tag: str
    digest: str


CREDENTIALS_ISSUE: Rpc[IssueCredentials, Credentials] = Rpc(
    Service.REGISTRY_PROXY,
    "credentials.issue",
    subjects.rpc(Service.REGISTRY_PROXY, "credentials.issue"),
    IssueCredentials,
    Credentials,
    callers=only(Service.BUILDER, Service.SCHEDULER),
)
IMAGE_PUSHED: EventSpec[ImagePushed] = EventSpec(
    subjects.evt("registry", "image.pushed"), ImagePushed, publishers=only(Service.REGISTRY_PROXY)
)


# ---- the image list of an app (added by registry-proxy) -----------------------------------


class ListImages(Message, tag="registry.images.list.v1", frozen=True, kw_only=True):
    app_id: str


class ImageInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One tag (empty: pushed by digest only) of one image still in the registry."""

    tag: str
    digest: str
    pushed_at: float


class ImageList(Message, tag="registry.images.v1", frozen=True, kw_only=True):
    """The app's images still in the registry, newest first."""

    app_id: str
    repository: str  # "<registry>/apps/<app_id>"
    images: list[ImageInfo] = []


IMAGES_LIST: Rpc[ListImages, ImageList] = Rpc(
    Service.REGISTRY_PROXY,
    "images.list",
    subjects.rpc(Service.REGISTRY_PROXY, "images.list"),
    ListImages,
    ImageList,
    callers=only(Service.BUILDER, Service.SCHEDULER, Service.GATEWAY, OPERATOR),
)
