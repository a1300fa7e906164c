"""A Dockerfile's text to stages of instructions, before anything runs.

Handles what Docker's parser does: the `# escape=` directive, line continuations
(comment and blank lines inside them dropped), `--flag=value` options, the JSON
exec form next to the shell form, and `FROM ... AS name` stages. Variables are
not expanded here (they depend on the image being built), except in `FROM`,
which sees only the `ARG`s declared before the first `FROM`, as in Docker.
Refused with a message saying what to do instead: `ONBUILD`, heredocs, `RUN`
options (`--mount`, `--network`, `--security`), instructions Docker does not know.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from slipway.services.builder.dockerfile.errors import DockerfileError
from slipway.services.builder.dockerfile.words import expand_words

KEYWORDS = frozenset(
    [
        "FROM",
        "RUN",
        "COPY",
        "ADD",
        "ENV",
        "ARG",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "CMD",
        "ENTRYPOINT",
        "LABEL",
        "STOPSIGNAL",
        "VOLUME",
        "SHELL",
        "HEALTHCHECK",
        "MAINTAINER",
        "ONBUILD",
    ]
)
# Options each instruction accepts (anything else is refused by name).
_FLAGS = {
    "FROM": {"platform"},
    "COPY": {"from", "chown", "chmod", "link"},
    "ADD": {"chown", "chmod", "link"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*[\"']?[A-Za-z_][A-Za-z0-9_]*[\"']?")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")


@dataclass(frozen=True)
class Instruction:
    """One instruction: keyword, options, and its arguments (raw, or the exec-form list)."""

    keyword: str
    args: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)
    exec_form: list[str] | None = None

    def __str__(self) -> str:
        flags = "".join(f"--{name}={value} " for name, value in self.flags.items())
        text = f"{self.keyword} {flags}{self.args}"
        return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Stage:
    """`FROM base [AS name]` and the instructions that follow it."""

    index: int
    base: str
    name: str | None
    line: int
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its escape character, global ARGs and stages."""

    escape: str
    global_args: dict[str, str | None]
    stages: tuple[Stage, ...]


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile; raise DockerfileError naming the line that is wrong."""
    lines = text.splitlines()
    escape, first = _directives(lines)
    instructions = [
        _instruction(body, number, escape) for body, number in _logical(lines, first, escape)
    ]
    return _stages(instructions, escape)


def _directives(lines: list[str]) -> tuple[str, int]:
    """The escape character and the index of the first line after the directives."""
    escape = "\\"
    for index, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if match is None:
            return escape, index
        if match.group(1).lower() == "escape":
            if match.group(2) not in ("\\", "`"):
                raise DockerfileError(
                    f"Dockerfile line {index + 1}: the escape directive must be \\ or `"
                )
            escape = match.group(2)
    return escape, len(lines)


def _logical(lines: list[str], first: int, escape: str) -> list[tuple[str, int]]:
    """Instructions with their continuation lines joined, and the line each starts on."""
    logical: list[tuple[str, int]] = []
    pending: list[str] = []
    start = 0
    for index in range(first, len(lines)):
        line = lines[index]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank and comment lines, also inside a continuation, are dropped
        if not pending:
            start = index + 1
        body = line.rstrip()
        if body.endswith(escape):
            pending.append(body[:-1])
            continue
        pending.append(body)
        logical.append(("".join(pending).strip(), start))
        pending = []
    if pending:
        logical.append(("".join(pending).strip(), start))
    return logical


def _instruction(body: str, line: int, escape: str) -> Instruction:
    keyword, _, rest = body.partition(" ")
    if "\t" in keyword:
        keyword, _, tail = keyword.partition("\t")
        rest = f"{tail} {rest}"
    keyword, rest = keyword.upper(), rest.strip()
    where = f"Dockerfile line {line}"
    if keyword not in KEYWORDS:
        raise DockerfileError(f"{where}: unknown instruction {keyword}")
    if keyword == "ONBUILD":
        raise DockerfileError(
            f"{where}: ONBUILD is not supported: write the instructions where they apply"
        )
    if keyword in ("RUN", "COPY", "ADD") and _HEREDOC.search(rest):
        raise DockerfileError(
            f"{where}: heredocs (<<EOF) are not supported: put the script in a file and"
            " COPY it, or use RUN with && and line continuations"
        )
    flags, rest = _flags(keyword, rest, where)
    return Instruction(keyword, rest, line, flags, exec_form_of(rest))


def _flags(keyword: str, rest: str, where: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, _, value = token[2:].partition("=")
        if name not in _FLAGS.get(keyword, set()):
            hint = " (BuildKit-only options are not supported)" if keyword == "RUN" else ""
            raise DockerfileError(f"{where}: {keyword} does not accept --{name}{hint}")
        flags[name] = value
    return flags, rest


def exec_form_of(rest: str) -> list[str] | None:
    """The JSON exec-form list if `rest` is one, else None (the shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # not JSON: the shell form, as Docker reads it
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _stages(instructions: list[Instruction], escape: str) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    current: list[Instruction] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            if stages:
                stages[-1] = _with(stages[-1], current)
            stages.append(_from(instruction, len(stages), global_args, escape, stages))
            current = []
        elif not stages:
            if instruction.keyword != "ARG":
                raise DockerfileError(
                    f"Dockerfile line {instruction.line}: {instruction.keyword} before FROM"
                    " (only ARG may come before the first FROM)"
                )
            global_args.update(parse_arg(instruction, escape, {}))
        else:
            current.append(instruction)
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM instruction")
    stages[-1] = _with(stages[-1], current)
    return Dockerfile(escape, global_args, tuple(stages))


def _with(stage: Stage, instructions: list[Instruction]) -> Stage:
    return Stage(stage.index, stage.base, stage.name, stage.line, tuple(instructions))


def _from(
    instruction: Instruction,
    index: int,
    global_args: dict[str, str | None],
    escape: str,
    earlier: list[Stage],
) -> Stage:
    where = f"Dockerfile line {instruction.line}"
    env = {k: v for k, v in global_args.items() if v is not None}
    words = expand_words(instruction.args, env, escape)
    if len(words) == 3 and words[1].lower() == "as":
        name: str | None = words[2].lower()
        if not _STAGE_NAME.fullmatch(name or ""):
            raise DockerfileError(f"{where}: invalid stage name {words[2]!r}")
        if any(stage.name == name for stage in earlier):
            raise DockerfileError(f"{where}: stage name {name!r} is used twice")
    elif len(words) == 1:
        name = None
    else:
        raise DockerfileError(f"{where}: FROM takes an image and optionally AS <name>")
    if not words[0]:
        raise DockerfileError(f"{where}: FROM names no image (an ARG without a value?)")
    return Stage(index, words[0], name, instruction.line, ())


def parse_arg(instruction: Instruction, escape: str, env: dict[str, str]) -> dict[str, str | None]:
    """`ARG name[=default] ...`: each name and its default (None when it has none)."""
    declared: dict[str, str | None] = {}
    for word in expand_words(instruction.args, env, escape):
        name, equals, value = word.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise DockerfileError(f"Dockerfile line {instruction.line}: invalid ARG {word!r}")
        declared[name] = value if equals else None
    if not declared:
        raise DockerfileError(f"Dockerfile line {instruction.line}: ARG needs a name")
    return declared


def parse_pairs(instruction: Instruction, escape: str, env: dict[str, str]) -> dict[str, str]:
    """`ENV`/`LABEL` arguments: `k=v k2="v 2"`, or the old `ENV k value with spaces`."""
    where = f"Dockerfile line {instruction.line}"
    words = expand_words(instruction.args, env, escape)
    if not words:
        raise DockerfileError(f"{where}: {instruction.keyword} needs arguments")
    if "=" not in words[0]:
        key, _, value = instruction.args.partition(" ")
        if not value.strip():
            raise DockerfileError(f"{where}: {instruction.keyword} {key} needs a value")
        return {key: " ".join(expand_words(value, env, escape))}
    pairs: dict[str, str] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise DockerfileError(f"{where}: {word!r} is not key=value")
        pairs[key] = value
    return pairs
