"""Golden encoded samples: bytes written by older code must keep decoding.

Every contract class has a sample under golden/<tag>.json, written once from a
value made by `sample()` and never regenerated. If a change breaks decoding of an
old sample, or drops or renames a field, the change is breaking: make a new tagged
class instead. Adding a field with a default is not: old bytes decode to the default. To add
samples for new classes only (existing files are never touched):

    SLIPWAY_WRITE_GOLDEN=1 .venv/bin/pytest tests/contracts
"""

from __future__ import annotations

import enum
import importlib
import inspect
import os
import pkgutil
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

import slipway.contracts
from slipway.contracts.base import Command, Event, Message

ABSTRACT = (Message, Command, Event)
GOLDEN = Path(__file__).parent / "golden"


def contract_classes() -> list[type[Message]]:
    """Every concrete, tagged Message subclass defined under slipway.contracts."""
    found: dict[str, type[Message]] = {}
    for info in pkgutil.iter_modules(slipway.contracts.__path__):
        module = importlib.import_module(f"slipway.contracts.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Message) and cls not in ABSTRACT:
                found[str(cls.__struct_config__.tag)] = cls
    return [found[tag] for tag in sorted(found)]


def _value(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _value(next(a for a in typing.get_args(kind) if a is not type(None)))
    if origin is dict:
        return {"key": _value(typing.get_args(kind)[1])}
    if origin is list:
        return [_value(typing.get_args(kind)[0])]
    if origin is typing.Literal:
        return typing.get_args(kind)[0]
    if inspect.isclass(kind) and issubclass(kind, enum.Enum):
        return next(iter(kind))
    if inspect.isclass(kind) and issubclass(kind, msgspec.Struct):
        return sample(kind)
    return {str: "sample", int: 7, float: 1.5, bool: True, bytes: b"\x00\xffkey"}[kind]


def sample(cls: type[Any]) -> Any:
    """A value of `cls` with every field set, defaults included."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name]) for f in msgspec.structs.fields(cls)})


CLASSES = contract_classes()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__struct_config__.tag)
def test_golden_sample_still_decodes(cls: type[Message]) -> None:
    """The stored sample of each contract decodes to its class and re-encodes identically."""
    tag = cls.__struct_config__.tag
    path = GOLDEN / f"{tag}.json"
    if not path.exists():
        if os.environ.get("SLIPWAY_WRITE_GOLDEN") != "1":
            pytest.fail(f"no golden sample for {tag}: run with SLIPWAY_WRITE_GOLDEN=1 once")
        path.write_bytes(msgspec.json.format(msgspec.json.encode(sample(cls))) + b"\n")
    stored = path.read_bytes()
    decoded = msgspec.json.decode(stored, type=cls)
    again = msgspec.json.decode(msgspec.json.encode(decoded))
    # Decoding succeeded, so a field the old bytes lack has a default: the re-encoded value
    # may hold more fields, at any depth, but must keep every old one unchanged.
    _keeps(msgspec.json.decode(stored), again, str(tag))


def _keeps(before: Any, again: Any, where: str) -> None:
    """Every field of `before` is in `again` with the same value (recursively)."""
    if isinstance(before, dict):
        assert isinstance(again, dict), where
        for key, value in before.items():
            assert key in again, f"{where}.{key} was dropped or renamed"
            _keeps(value, again[key], f"{where}.{key}")
    elif isinstance(before, list):
        assert isinstance(again, list) and len(again) == len(before), where
        for i, (old, new) in enumerate(zip(before, again, strict=True)):
            _keeps(old, new, f"{where}[{i}]")
    else:
        assert again == before, f"{where}: {before!r} became {again!r}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__struct_config__.tag)
def test_contract_is_frozen_keyword_only_and_versioned(cls: type[Message]) -> None:
    """Every contract is frozen, keyword-only, and its tag ends in a version."""
    config = cls.__struct_config__
    assert config.frozen
    assert str(config.tag).rsplit(".", 1)[-1].startswith("v")
    fields = msgspec.structs.fields(cls)
    if fields:
        with pytest.raises(TypeError):
            cls(*[None] * len(fields))


def test_tags_are_unique() -> None:
    """No two contract classes share a tag."""
    tags = [c.__struct_config__.tag for c in CLASSES]
    assert len(tags) == len(set(tags))
