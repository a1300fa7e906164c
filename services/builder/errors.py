"""Why a build fails.

    BuildError (SlipwayError)       a build cannot go on; `message` is the one-line reason
    ├── SourceRejected              the source is missing, too big, or hostile (paths, links)
    ├── ProcfileError               a Procfile line that is not `<type>: <command>`
    ├── BuildpackFailed             detect found nothing, or compile/release exited non-zero
    ├── BuildTimedOut               the build ran past its time limit and was killed
    └── ImageError                  the image could not be built, tagged or pushed

Every one of them ends a build as `failed`; none is retried by redelivery, because
running the same source through the same buildpacks again fails the same way.
"""

from __future__ import annotations

from slipway.libs.errors import SlipwayError


class BuildError(SlipwayError):
    """Root of the builder's errors: the build failed, `message` says why in one line."""

    code = "build_failed"


class SourceRejected(BuildError):
    """The source tarball cannot be used."""

    code = "source_rejected"


class ProcfileError(BuildError):
    """The Procfile has a line that is not a process type."""

    code = "procfile_invalid"


class BuildpackFailed(BuildError):
    """A buildpack said no (detect) or failed (compile, release)."""

    code = "buildpack_failed"


class BuildTimedOut(BuildError):
    """The build container outlived the time limit."""

    code = "build_timeout"


class ImageError(BuildError):
    """Making, tagging or pushing the image failed."""

    code = "image_failed"
