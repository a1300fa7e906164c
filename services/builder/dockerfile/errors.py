"""Why a Dockerfile build fails.

BuildError (services.builder.errors)
└── DockerfileError        the Dockerfile is invalid or a step failed; `message` says which
    └── BaseImageRefused   `FROM`/`COPY --from` names an image a build may not use
"""

from __future__ import annotations

from slipway.services.builder.errors import BuildError


class DockerfileError(BuildError):
    """The Dockerfile cannot be built as written, or one of its steps failed."""

    code = "dockerfile_failed"


class BaseImageRefused(DockerfileError):
    """An image the build may not start from or copy from (another app's, an image id...)."""

    code = "dockerfile_base_refused"
