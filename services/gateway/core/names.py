"""The one rule for app and team names, and how a personal team gets its name.

Names become hostnames (`<app>.<domain>`), paths and Docker object names, so
they are plain: a lowercase letter, then 2 to 29 lowercase letters, digits or
hyphens. Anything else (`../`, shell characters, unicode look-alikes, spaces,
over 30 characters) is refused before anything is stored.
"""

from __future__ import annotations

import re

from slipway.services.gateway.http.errors import InvalidParams

NAME = re.compile(r"^[a-z][a-z0-9-]{2,29}\Z")
RULE = "a lowercase letter followed by 2 to 29 lowercase letters, digits or dashes"


def check_name(kind: str, name: str) -> str:
    """`name` if it is a valid app or team name; InvalidParams saying the rule otherwise."""
    if not NAME.match(name):
        raise InvalidParams(f"Name {name[:40]!r} is not a valid {kind} name: use {RULE}.")
    return name


def personal_team_base(email: str) -> str:
    """A valid team name from the local part of an email address ("ada.l@x" → "ada-l")."""
    local = email.split("@", 1)[0].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", local).strip("-")[:20].strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"u-{slug}".strip("-")
    return slug if len(slug) >= 3 else f"{slug}-team"
