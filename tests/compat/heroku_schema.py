"""Heroku's Platform API schema, the part Slipway answers, and checking an answer against it.

`heroku-platform-api-schema.json` here holds the definitions of the resources
Slipway serves (and those their `$ref`s reach), cut from Heroku's public hyper-schema
(heroku/platform-api) so that a clone of this repository can run the compat tests.
Refresh it from a newer copy of the whole schema with

    .venv/bin/python -m tests.compat.heroku_schema PATH/TO/heroku-platform-api-schema.json

`check(body, "app")` lists every way an answer differs from `definitions.app`: each
property the resource defines must be present (Heroku's answers carry all of them;
its clients read them without checking), and each value must fit its schema (type,
format, pattern, enum). Fields Slipway adds are allowed: Heroku's clients ignore them.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from tests.gateway.jsonschema_lite import errors

HERE = Path(__file__).resolve().parent
SUBSET = HERE / "heroku-platform-api-schema.json"

# The resources Slipway answers with (`definitions.<name>` in Heroku's schema).
RESOURCES = (
    "account", "add-on", "add-on-attachment", "app", "app-feature", "app-webhook",
    "app-webhook-delivery", "app-webhook-event", "build",
    "collaborator", "config-var", "domain", "dyno", "formation", "log-drain",
    "log-session", "rate-limit", "region", "release", "sni-endpoint", "stack",
    "team-app-collaborator",
)  # fmt: skip


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SUBSET.read_text())
    return loaded


# Properties whose pattern spells Heroku's own hostnames (`https://git.heroku.com/...`,
# `...herokuapp.com/`): an installation's URLs are its own, so only their type is checked.
OWN_HOSTS = {("app", "git_url"), ("app", "web_url")}


@cache
def _definition(resource: str) -> dict[str, Any]:
    definition = dict(schema()["definitions"][resource])
    properties = dict(definition.get("properties", {}))
    for name in (n for r, n in OWN_HOSTS if r == resource):
        properties[name] = {"type": ["string"]}
    definition["properties"] = properties
    return definition


def check(body: Any, resource: str) -> list[str]:
    """Every difference between `body` and Heroku's `definitions.<resource>` (none: [])."""
    definition = _definition(resource)
    found = errors(body, definition, schema())
    if isinstance(body, dict):
        found += [f"$: missing {key!r}" for key in definition["properties"] if key not in body]
    return list(dict.fromkeys(found))  # strictProperties may have named a missing key too


def check_list(body: Any, resource: str) -> list[str]:
    """`check` for each item of a list answer."""
    if not isinstance(body, list):
        return [f"$: {body!r} is not a list"]
    return [
        f"[{i}]{problem[1:]}" for i, item in enumerate(body) for problem in check(item, resource)
    ]


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value))
    return set()


def subset(full: dict[str, Any]) -> dict[str, Any]:
    """The definitions of RESOURCES and every definition their references reach."""
    wanted, todo = set(), list(RESOURCES)
    while todo:
        name = todo.pop()
        # Heroku's schema has a dangling `#/definitions/dyno_size` under an annotation.
        if name in wanted or name not in full["definitions"]:
            continue
        wanted.add(name)
        for ref in _refs(full["definitions"][name]):
            todo.append(ref.removeprefix("#/definitions/").split("/", 1)[0])
    return {
        "$schema": full["$schema"],
        "description": "The part of Heroku's Platform API schema Slipway answers with.",
        "definitions": {name: full["definitions"][name] for name in sorted(wanted)},
    }


if __name__ == "__main__":
    full_schema = json.loads(Path(sys.argv[1]).read_text())
    SUBSET.write_text(json.dumps(subset(full_schema), indent=1, sort_keys=True) + "\n")
    print(f"{SUBSET}: {len(subset(full_schema)['definitions'])} definitions")
