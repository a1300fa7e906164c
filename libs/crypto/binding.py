"""Associated data: the place a ciphertext belongs to, encoded one way only.

AES-GCM authenticates associated data without storing it: the reader must give
the same bytes again. So the encoding must be canonical (one value, one byte
string) and unambiguous (no two values share one). Every field is written as a
4-byte big-endian length and its UTF-8 bytes, after a label naming the use:

    len(label) label  len(name_1) name_1 len(value_1) value_1  ...

Because every string carries its length, ("ab", "c") and ("a", "bc") differ,
and so do a record "1" of app "2" and a record "" of app "21".
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

_LENGTH = struct.Struct(">I")


class AssociatedData(Protocol):
    """Anything that can be bound to a ciphertext: it knows its canonical bytes."""

    def canonical(self) -> bytes:
        """The exact bytes authenticated with the ciphertext."""
        ...


def canonical(label: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """The length-prefixed encoding of `label` followed by each (name, value) in order."""
    out = bytearray()
    _put(out, label)
    for name, value in fields:
        _put(out, name)
        _put(out, value)
    return bytes(out)


def _put(out: bytearray, text: str) -> None:
    # Strict UTF-8: a lone surrogate has no canonical bytes, so it is refused.
    raw = text.encode("utf-8")
    out += _LENGTH.pack(len(raw))
    out += raw


@dataclass(frozen=True, slots=True)
class Context:
    """Associated data for anything that is not a stored record: a label and ordered fields."""

    label: str
    fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, label: str, values: Mapping[str, str]) -> Context:
        """A context from a mapping, in sorted key order (so dict order never matters)."""
        return cls(label, tuple(sorted(values.items())))

    def canonical(self) -> bytes:
        """The exact bytes authenticated with the ciphertext."""
        return canonical(self.label, self.fields)


BINDING_LABEL = "slipway.binding.v1"
BINDING_FIELDS = ("team", "app", "kind", "record")


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a stored ciphertext lives: team, app ("" for team-wide data), kind and record id.

    A ciphertext sealed with one binding does not open with any other, so a row
    copied to another record, app or team fails to decrypt instead of leaking.
    """

    team: str
    app: str
    kind: str
    record: str

    def __post_init__(self) -> None:
        for name in ("team", "kind", "record"):
            if not getattr(self, name):
                raise ValueError(f"a binding needs a non-empty {name}")

    @classmethod
    def coerce(cls, value: Binding | Mapping[str, str]) -> Binding:
        """`value` itself, or the binding a {"team", "app", "kind", "record"} mapping names."""
        if isinstance(value, Binding):
            return value
        if set(value) != set(BINDING_FIELDS):
            raise ValueError(
                f"a binding mapping has exactly the keys {', '.join(BINDING_FIELDS)};"
                f" got {', '.join(sorted(value)) or 'none'}"
            )
        return cls(team=value["team"], app=value["app"], kind=value["kind"], record=value["record"])

    def as_context(self) -> dict[str, str]:
        """The binding as the keyring's `context` (bound into the wrapped data key too)."""
        return {"team": self.team, "app": self.app, "kind": self.kind, "record": self.record}

    def canonical(self) -> bytes:
        """The exact bytes authenticated with the ciphertext."""
        return canonical(
            BINDING_LABEL,
            (("team", self.team), ("app", self.app), ("kind", self.kind), ("record", self.record)),
        )
