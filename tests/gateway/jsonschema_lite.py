"""Just enough JSON Schema to check answers against OpenAPI and Heroku's hyper-schema.

Supports: $ref (a local JSON pointer: `#/components/schemas/App` as msgspec generates
it, `#/definitions/app/definitions/id` as Heroku's schema writes it), type (one or a
list), properties, required, additionalProperties (bool or schema), items, anyOf,
enum, const, pattern, format (date-time, uuid, email: what Heroku's clients parse),
and Heroku's `strictProperties`, taken as "every listed property is present"
(extra ones are allowed: Heroku's clients ignore fields they do not know). Other
keywords (title, description, ...) are annotations and are ignored.
"""

from __future__ import annotations

import re
from typing import Any

_FORMATS: dict[str, re.Pattern[str]] = {
    "date-time": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"),
    "uuid": re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    "email": re.compile(r"^[^@\s]+@[^@\s]+$"),
}


def resolve(ref: str, root: dict[str, Any]) -> Any:
    """The part of `root` a local `$ref` points at."""
    found: Any = root
    for part in ref.removeprefix("#/").split("/"):
        found = found[part.replace("~1", "/").replace("~0", "~")]
    return found


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}


def errors(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "$") -> list[str]:
    """Every way `value` breaks `schema` (empty when it fits)."""
    if "$ref" in schema:
        return errors(value, resolve(schema["$ref"], root), root, at)
    if "anyOf" in schema:
        if any(not errors(value, option, root, at) for option in schema["anyOf"]):
            return []
        return [f"{at}: {value!r} matches none of anyOf"]
    found: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        # bool is an int to Python, never a number to JSON Schema.
        numeric = ("integer", "number")
        fits = any(
            isinstance(value, _TYPES[k]) and not (k in numeric and isinstance(value, bool))
            for k in kinds
        )
        if not fits:
            return [f"{at}: {value!r} is not {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        found.append(f"{at}: {value!r} is not {schema['const']!r}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{at}: {value!r} does not match {schema['pattern']!r}")
        known = _FORMATS.get(schema.get("format", ""))
        if known is not None and not known.match(value):
            found.append(f"{at}: {value!r} is not a {schema['format']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        required = list(schema.get("required", []))
        if schema.get("strictProperties"):
            required += [key for key in properties if key not in required]
        for key in required:
            if key not in value:
                found.append(f"{at}: missing {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                found += errors(item, properties[key], root, f"{at}.{key}")
            elif extra is False:
                found.append(f"{at}: unexpected property {key!r}")
            elif isinstance(extra, dict):
                found += errors(item, extra, root, f"{at}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += errors(item, schema["items"], root, f"{at}[{index}]")
    return found
