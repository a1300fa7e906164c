"""`.dockerignore`: which paths of the build context COPY and ADD never see.

Patterns follow Docker: Go `filepath.Match` syntax (`*`, `?`, `[a-z]`, `[^a]`, `\\`
escapes) plus `**` for any number of folders; leading `/` and `./` do not matter;
`!pattern` brings back what an earlier pattern left out; the last matching line
wins; a pattern matching a folder leaves out everything under it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    exception: bool


class Ignore:
    """The patterns of one `.dockerignore` (none: nothing is ignored)."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns = [p for p in (_compile(line) for line in lines) if p is not None]
        self.has_exceptions = any(p.exception for p in self.patterns)

    @classmethod
    def read(cls, context: Path) -> Ignore:
        """The context's `.dockerignore`, if it has one (a link there is not followed)."""
        path = context / ".dockerignore"
        if path.is_symlink() or not path.is_file():
            return cls([])
        return cls(path.read_text(errors="replace").splitlines())

    def ignored(self, relative: str) -> bool:
        """Whether `relative` (a '/'-separated path in the context) is left out."""
        candidates = _self_and_parents(relative)
        verdict = False
        for pattern in self.patterns:
            if any(pattern.regex.fullmatch(c) for c in candidates):
                verdict = not pattern.exception
        return verdict


def _self_and_parents(relative: str) -> list[str]:
    parts = relative.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _compile(line: str) -> _Pattern | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    exception = text.startswith("!")
    if exception:
        text = text[1:].strip()
    text = posixpath.normpath(text).lstrip("/")
    if text in ("", "."):
        return None
    return _Pattern(re.compile(_regex(text)), exception)


def component_regex(pattern: str) -> re.Pattern[str]:
    """A COPY source wildcard for one path component, as a compiled regex."""
    return re.compile(_regex(pattern))


def _regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            close = pattern.find("]", i + 2)
            if close < 0:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : close].replace("\\", "\\\\")
                out.append(f"[{body}]")
                i = close
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)
