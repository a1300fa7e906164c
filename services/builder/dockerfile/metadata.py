"""Instructions that only change the image config: ENV, LABEL, WORKDIR, USER, EXPOSE,
CMD, ENTRYPOINT, STOPSIGNAL, VOLUME, SHELL, HEALTHCHECK (and MAINTAINER, ignored)."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from slipway.services.builder.dockerfile.config import ImageConfig
from slipway.services.builder.dockerfile.errors import DockerfileError
from slipway.services.builder.dockerfile.parser import Instruction, exec_form_of, parse_pairs
from slipway.services.builder.dockerfile.words import expand_word, expand_words

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
_HEALTH_FLAGS = {
    "interval": "Interval",
    "timeout": "Timeout",
    "start-period": "StartPeriod",
    "start-interval": "StartInterval",
}


def apply_metadata(
    config: ImageConfig, ins: Instruction, escape: str, env: dict[str, str]
) -> str | None:
    """Apply `ins` to `config`; a note for the build output when something is ignored."""
    where = f"Dockerfile line {ins.line}"
    match ins.keyword:
        case "ENV":
            config.env.update(parse_pairs(ins, escape, env))
        case "LABEL":
            config.labels.update(parse_pairs(ins, escape, env))
        case "WORKDIR":
            path = expand_word(ins.args, env, escape)
            config.workdir = posixpath.normpath(posixpath.join(config.workdir or "/", path))
        case "USER":
            config.user = expand_word(ins.args, env, escape)
        case "STOPSIGNAL":
            config.stop_signal = expand_word(ins.args, env, escape)
        case "EXPOSE":
            for port in expand_words(ins.args, env, escape):
                number, _, protocol = port.partition("/")
                config.exposed[f"{number}/{protocol or 'tcp'}"] = {}
        case "CMD":
            config.cmd = _command(ins, config)
        case "ENTRYPOINT":
            config.entrypoint = _command(ins, config)
        case "VOLUME":
            paths = ins.exec_form or expand_words(ins.args, env, escape)
            config.volumes.update({path: {} for path in paths})
        case "SHELL":
            if not ins.exec_form:
                raise DockerfileError(f'{where}: SHELL takes the JSON form: SHELL ["bash", "-c"]')
            config.shell = ins.exec_form
        case "HEALTHCHECK":
            config.healthcheck = _healthcheck(ins, config, where)
            return "HEALTHCHECK recorded in the image; Slipway checks dynos on its own terms"
        case "MAINTAINER":
            return "MAINTAINER ignored (deprecated: use LABEL maintainer=...)"
    return None


def _command(ins: Instruction, config: ImageConfig) -> list[str]:
    if ins.exec_form is not None:
        return ins.exec_form
    return [*config.shell, ins.args]


def _healthcheck(ins: Instruction, config: ImageConfig, where: str) -> dict[str, Any]:
    kind, _, rest = ins.args.partition(" ")
    if kind.upper() == "NONE":
        return {"Test": ["NONE"]}
    if kind.upper() != "CMD" or not rest.strip():
        raise DockerfileError(f"{where}: HEALTHCHECK takes NONE or CMD <command>")
    rest = rest.strip()
    exec_form = exec_form_of(rest)
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", rest]
    check: dict[str, Any] = {"Test": test}
    for flag, key in _HEALTH_FLAGS.items():
        if flag in ins.flags:
            check[key] = _nanoseconds(ins.flags[flag], where)
    if "retries" in ins.flags:
        check["Retries"] = int(ins.flags["retries"]) if ins.flags["retries"].isdigit() else 0
    return check


def _nanoseconds(value: str, where: str) -> int:
    total, position = 0.0, 0
    for match in _DURATION.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        raise DockerfileError(f"{where}: {value!r} is not a duration such as 30s or 1m30s")
    return int(total)
