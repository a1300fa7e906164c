"""`$VAR` substitution and quote removal, the way Docker's Dockerfile shell lexer does it.

Supported: `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:+alt}`,
`${NAME+alt}`, single quotes (no expansion), double quotes (expansion), and the
escape character (`\\` or the `# escape=` one) making the next character literal.
An unset variable expands to nothing, as in Docker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from slipway.services.builder.dockerfile.errors import DockerfileError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.pos = 0

    def words(self, split: bool, stop: str = "") -> list[str]:
        """Words up to the end (or an unquoted `stop`), split on blanks when `split`."""
        words: list[str] = []
        current: list[str] = []
        started = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if stop and char == stop:
                break
            self.pos += 1
            if split and char in " \t\n":
                if started:
                    words.append("".join(current))
                current, started = [], False
                continue
            started = True
            if char == self.escape:
                if self.pos < len(self.text):
                    current.append(self.text[self.pos])
                    self.pos += 1
                else:
                    current.append(char)
            elif char == "'":
                current.append(self._until("'"))
            elif char == '"':
                current.append(self._double_quoted())
            elif char == "$":
                current.append(self._dollar())
            else:
                current.append(char)
        if started or not split:
            words.append("".join(current))
        return words

    def _until(self, end: str) -> str:
        close = self.text.find(end, self.pos)
        if close < 0:
            raise DockerfileError(f"unmatched {end} in: {self.text}")
        value, self.pos = self.text[self.pos : close], close + 1
        return value

    def _double_quoted(self) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == self.escape and self.pos < len(self.text):
                following = self.text[self.pos]
                if following in ('"', "$", self.escape):
                    out.append(following)
                    self.pos += 1
                    continue
                out.append(char)
            elif char == "$":
                out.append(self._dollar())
            else:
                out.append(char)
        raise DockerfileError(f'unmatched " in: {self.text}')

    def _dollar(self) -> str:
        if self.text.startswith("{", self.pos):
            self.pos += 1
            return self._braced()
        match = _NAME.match(self.text, self.pos)
        if match is None:
            return "$"
        self.pos = match.end()
        return self.env.get(match.group(), "")

    def _braced(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if match is None:
            raise DockerfileError(f"bad substitution in: {self.text}")
        name, self.pos = match.group(), match.end()
        operator = ""
        for candidate in (":-", ":+", "-", "+"):
            if self.text.startswith(candidate, self.pos):
                operator, self.pos = candidate, self.pos + len(candidate)
                break
        word = "".join(self.words(split=False, stop="}")) if operator else ""
        if not self.text.startswith("}", self.pos):
            raise DockerfileError(f"missing }} in: {self.text}")
        self.pos += 1
        value = self.env.get(name)
        match operator:
            case ":-":
                return value if value else word
            case "-":
                return value if value is not None else word
            case ":+":
                return word if value else ""
            case "+":
                return word if value is not None else ""
        return value or ""


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """`text` split into words on unquoted blanks, each with quotes removed and `$VAR`s expanded."""
    return _Lexer(text, env, escape).words(split=True)


def expand_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """`text` as one word (blanks kept), quotes removed and `$VAR`s expanded."""
    return "".join(_Lexer(text, env, escape).words(split=False))


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Only `$VAR`/`${VAR...}` expanded, quotes and escapes kept (an exec-form element)."""
    out: list[str] = []
    lexer = _Lexer(text, env, "\0")
    while lexer.pos < len(text):
        char = text[lexer.pos]
        lexer.pos += 1
        out.append(lexer._dollar() if char == "$" else char)
    return "".join(out)
