"""What the builder puts in a platform snapshot: its database of builds (and their output)."""

from __future__ import annotations

from collections.abc import Callable

from slipway.libs.snapshot.export import Database, Sources
from slipway.services.builder.settings import BuilderSettings

LEFT_OUT = (
    "builder: build caches (the next build of each app starts cold)",
    "builder: build folders of builds in progress (those builds fail; push again)",
)


def sources(settings: BuilderSettings) -> Callable[[], Sources]:
    """The builder's Sources."""
    return lambda: Sources(
        databases=[Database(settings.db_path(), "builder/builder.db")], left_out=LEFT_OUT
    )
