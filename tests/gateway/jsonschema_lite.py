"""Just enough JSON Schema (2020-12, as msgspec generates it) to check answers against OpenAPI.

Supports: $ref (local), type (one or a list), properties, required,
additionalProperties (bool or schema), items, anyOf, enum, const. Other keywords
(format, title, description, ...) are annotations and are ignored.
"""

from __future__ import annotations

from typing import Any

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
        name = schema["$ref"].rsplit("/", 1)[-1]
        return errors(value, root["components"]["schemas"][name], root, at)
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
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
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
