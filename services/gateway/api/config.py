"""Config vars: validated, stored only as envelope ciphertext, changed by new releases.

Each change writes a new config version: the whole map, encrypted under a fresh
data key from the keyring (purpose `config`), bound to its place — team, app,
kind "config" and the version's own id — so a ciphertext copied to another row
or app does not decrypt. The database and the events never hold a value; events
name the changed keys only.

Rules: keys match `^[A-Za-z_][A-Za-z0-9_]*$` (what a shell can export) and are at
most 255 characters (the builder writes each one as a file name in ENV_DIR, and
NAME_MAX is 255); the names the platform sets on every dyno (`RESERVED`) are
refused, since a value set there would silently lose to the platform's. Values
are at most `config_value_max_bytes` (32 KiB) and hold no NUL; the whole map
stays under `config_total_max_bytes` and `config_max_keys`. A value the platform
itself reads is checked for what it means: `SLIPWAY_HEALTH_PATH` must be a path
(`libs.healthpath`), never something that could name another host.
"""

from __future__ import annotations

import re
from typing import cast

from aiohttp import web

from slipway.contracts.gateway import CONFIG_CHANGED, ConfigChanged
from slipway.contracts.keyring import DataKey
from slipway.libs import healthpath
from slipway.libs.errors import Conflict, Gone, NotFound
from slipway.services.gateway.api.releases import find_release, new_release
from slipway.services.gateway.core import store
from slipway.services.gateway.core.sealing import (
    ConfigVars,
    new_data_key,
    seal_with,
    unseal,
    unseal_and_renew,
)
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import ConfigPatch
from slipway.services.gateway.outbox.changes import Actor, Change, change

routes = Routes("config-vars")

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_KEY_LENGTH = 255  # NAME_MAX: each key is a file name in the build's ENV_DIR
# Set by the scheduler on every dyno after the app's config (services/scheduler/containers.py):
# Heroku likewise owns PORT and DYNO. Removing one (null) stays allowed, to clean up.
RESERVED = frozenset({"PORT", "DYNO", "HOME", "SLIPWAY_RELEASE_VERSION"})
ATTEMPTS = 5  # optimistic retries when another change lands between read and write


def check_changes(changes: ConfigPatch, settings: GatewaySettings) -> None:
    """Refuse a bad key or value, naming it (never echoing a value)."""
    if not changes:
        raise InvalidParams('No config vars given: send {"KEY": "value"} or {"KEY": null}.')
    for key, value in changes.items():
        check_key(key, removing=value is None)
        if value is None:
            continue
        if key == healthpath.HEALTH_PATH_VAR and not healthpath.is_valid(value):
            raise InvalidParams(f"Invalid {key}: {healthpath.RULE}")
        if "\x00" in value:
            raise InvalidParams(f"The value of {key} contains a NUL byte, which is not allowed.")
        size = len(value.encode())
        if size > settings.config_value_max_bytes:
            raise InvalidParams(
                f"The value of {key} is {size} bytes; the limit is"
                f" {settings.config_value_max_bytes} bytes per value."
            )


def check_key(key: str, *, removing: bool) -> None:
    """Refuse a config var name no dyno environment or ENV_DIR file can hold."""
    if not KEY.match(key) or len(key) > MAX_KEY_LENGTH:
        raise InvalidParams(
            f"Invalid config var name {key[:60]!r}: use letters, digits and underscores,"
            f" not starting with a digit, at most {MAX_KEY_LENGTH} characters."
        )
    if key in RESERVED and not removing:
        raise InvalidParams(
            f"{key} is set by the platform on every dyno and cannot be changed:"
            " choose another name."
        )


def apply_changes(
    current: ConfigVars, changes: ConfigPatch, settings: GatewaySettings
) -> ConfigVars:
    """The config after `changes` (null removes a key), within the total limits."""
    updated = dict(current)
    for key, value in changes.items():
        if value is None:
            updated.pop(key, None)
        else:
            updated[key] = value
    total = sum(len(k.encode()) + len(v.encode()) for k, v in updated.items())
    if total > settings.config_total_max_bytes:
        raise InvalidParams(
            f"All config vars together would take {total} bytes; the limit is"
            f" {settings.config_total_max_bytes} bytes."
        )
    if len(updated) > settings.config_max_keys:
        raise InvalidParams(f"An app may have at most {settings.config_max_keys} config vars.")
    return updated


def describe(before: ConfigVars, after: ConfigVars) -> tuple[list[str], list[str], str]:
    """(keys set, keys removed, the release description Heroku would write)."""
    set_keys = sorted(k for k, v in after.items() if before.get(k) != v)
    removed = sorted(before.keys() - after.keys())
    parts = []
    if set_keys:
        parts.append(f"Set {', '.join(set_keys)}")
    if removed:
        parts.append(f"{'remove' if set_keys else 'Remove'} {', '.join(removed)}")
    return set_keys, removed, f"{' and '.join(parts)} config vars"


async def read_config(gw: Gateway, app: store.App, version_id: str | None) -> ConfigVars:
    """The decrypted config of one version (empty before the first change)."""
    if version_id is None:
        return {}
    return await unseal(gw, app, version_id, await _stored(gw, app, version_id))


async def _stored(gw: Gateway, app: store.App, version_id: str) -> bytes:
    """The ciphertext of one config version of `app`."""
    if app.shredded_at:
        raise Gone(
            f"The config of {app.name} was destroyed: its team's key was crypto-shredded on"
            f" {app.shredded_at}. It can never be read again."
        )
    ciphertext = await store.config_ciphertext(gw.reads, app.id, version_id)
    if ciphertext is None:
        raise NotFound(f"Config version {version_id} of {app.name} is missing.")
    return ciphertext


async def _open_and_renew(
    gw: Gateway, app: store.App, base: str | None, version_id: str
) -> tuple[ConfigVars, DataKey]:
    """The config of version `base` and the data key of the next version, `version_id`.

    One keyring round trip (`datakey.renew`) where decrypt and generate would be two;
    the first change of an app has nothing to open and only asks for the new key.
    """
    if base is None:
        return {}, await new_data_key(gw, app, version_id)
    return await unseal_and_renew(gw, app, base, await _stored(gw, app, base), version_id)


class _Stale(Exception):
    """The app's config changed between our read and our write."""


async def update_config(
    gw: Gateway,
    who: Actor,
    app: store.App,
    changes: ConfigPatch,
    description: str | None = None,
) -> ConfigVars:
    """Apply `changes` as a new encrypted version and a new release; returns the new config.

    `description` replaces the release's "Set X config vars" (an add-on says "Attach ...").
    """
    check_changes(changes, gw.settings)
    async with gw.config_lock(app.id):
        return await _update_config(gw, who, app, changes, description)


async def _update_config(
    gw: Gateway, who: Actor, app: store.App, changes: ConfigPatch, wanted: str | None
) -> ConfigVars:
    for _ in range(ATTEMPTS):
        # Read again: the app's config may have changed while this request waited its turn.
        fresh_app = await store.get_app(gw.reads, app.id)
        if fresh_app is None:
            raise NotFound("Couldn't find that app.")
        app = fresh_app
        base = app.config_version_id
        version_id = new_uuid()
        before, key = await _open_and_renew(gw, app, base, version_id)
        after = apply_changes(before, changes, gw.settings)
        set_keys, removed, description = describe(before, after)
        if not set_keys and not removed:
            return before
        description = wanted or description
        ciphertext = seal_with(key, app, version_id, after)
        # The plaintext data key is used once and dropped here, never kept.
        del key
        try:
            async with change(gw, who) as tx:
                await _commit(tx, app, base, version_id, ciphertext, set_keys, removed, description)
            return after
        except _Stale:
            continue
    raise Conflict("The config kept changing under this request; try again.")


async def _commit(
    tx: Change,
    app: store.App,
    base: str | None,
    version_id: str,
    ciphertext: bytes,
    set_keys: list[str],
    removed: list[str],
    description: str,
) -> None:
    """Store the new version and its release, unless another change got there first."""
    fresh = await store.get_app(tx.conn, app.id)
    if fresh is None:
        raise NotFound("Couldn't find that app.")
    if fresh.config_version_id != base:
        raise _Stale
    await store.insert_config_version(tx.conn, version_id, app.id, ciphertext, timestamp())
    release = await new_release(tx, fresh, description=description, config_version_id=version_id)
    tx.audit(
        app.team_id,
        "config.update",
        app_name=fresh.name,
        app_id=app.id,
        details={
            "set": ",".join(set_keys),
            "removed": ",".join(removed),
            "version": str(release.version),
        },
    )
    tx.emit(
        CONFIG_CHANGED,
        ConfigChanged(
            app_id=app.id,
            app_name=fresh.name,
            team_id=app.team_id,
            config_version=version_id,
            keys_set=set_keys,
            keys_removed=removed,
            release_version=release.version,
            actor=tx.actor.email,
        ),
    )


@routes.get("/apps/{app}/config-vars", summary="The app's config vars", response=dict[str, str])
async def info(request: web.Request) -> web.Response:
    # Config vars hold the app's secrets: a viewer sees the app, not its keys (as Heroku's
    # view permission); the dashboard shows them no values and the API refuses if asked.
    app = await app_for(request, Action.DEPLOY, "read config vars")
    return reply(await read_config(request.app[GATEWAY], app, app.config_version_id))


@routes.patch(
    "/apps/{app}/config-vars",
    summary="Set (string) or remove (null) config vars",
    body=ConfigPatch,
    response=dict[str, str],
)
async def update(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "change config vars")
    changes = cast(ConfigPatch, await read_body(request, ConfigPatch))
    return reply(await update_config(request.app[GATEWAY], actor(request), app, changes))


@routes.get(
    "/apps/{app}/releases/{release}/config-vars",
    summary="The config vars of a release",
    response=dict[str, str],
)
async def release_info(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "read config vars")
    release = await find_release(gw.reader, app, request.match_info["release"])
    return reply(await read_config(gw, app, release.config_version_id))
