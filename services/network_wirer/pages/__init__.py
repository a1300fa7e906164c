"""The pages the router answers itself: Heroku's error pages, maintenance, unknown host."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Pages:
    """HTML bodies, one per situation."""

    no_web_dynos: str  # H14
    app_crashed: str  # H10
    timeout: str  # H12
    maintenance: str
    not_found: str


@cache
def load() -> Pages:
    """The pages shipped beside this module."""

    def read(name: str) -> str:
        return (_HERE / f"{name}.html").read_text()

    return Pages(
        no_web_dynos=read("no_web_dynos"),
        app_crashed=read("app_crashed"),
        timeout=read("timeout"),
        maintenance=read("maintenance"),
        not_found=read("not_found"),
    )
