"""What the platform's own services read from the gateway over NATS (never over HTTP).

- `CONFIG_SEALED_GET`: the ciphertext of a config version and the binding it was
  sealed with. The scheduler (dyno env) and the builder (ENV_DIR) decrypt it
  through the keyring, which checks its own policy again; the gateway never
  sends values.
- `DESIRED_GET`: every app's current release, formation, maintenance flag and
  domains, so a service that missed events (or just restarted) can converge.

The caller is the service whose reply inbox the request came from; in the
hardened NATS configuration that name cannot be borrowed.
"""

from __future__ import annotations

from slipway.contracts.gateway import (
    CONFIG_SEALED_GET,
    DESIRED_GET,
    AppDesired,
    DesiredState,
    GetDesired,
    GetSealedConfig,
    SealedConfig,
)
from slipway.libs.bus import context
from slipway.libs.errors import NotFound
from slipway.services.gateway.api import domains, formation
from slipway.services.gateway.core import store
from slipway.services.gateway.core.sealing import binding
from slipway.services.gateway.core.state import Gateway


async def sealed_config(gw: Gateway, request: GetSealedConfig) -> SealedConfig:
    """The ciphertext of the asked config version (default: the current release's)."""
    # Still ciphertext, but only its declared readers have a use for it (contracts/).
    context.require_caller(CONFIG_SEALED_GET)
    app = await store.get_app(gw.reader, request.app_id)
    if app is None:
        raise NotFound(f"No app {request.app_id}.")
    version = request.config_version
    if version is None:
        release = await store.current_release(gw.reader, app.id)
        version = release.config_version_id if release else None
    if version is None:
        return SealedConfig(app_id=app.id, team_id=app.team_id, config_version=None)
    ciphertext = await store.config_ciphertext(gw.reader, app.id, version)
    if ciphertext is None:
        raise NotFound(f"No config version {version} for app {app.name}.")
    bound = binding(app, version)
    return SealedConfig(
        app_id=app.id,
        team_id=app.team_id,
        config_version=version,
        ciphertext=ciphertext,
        binding_kind=bound.kind,
        binding_record=bound.record,
    )


async def desired(gw: Gateway, request: GetDesired) -> DesiredState:
    """Every app's (or one app's) release, formation, maintenance and domains."""
    context.require_caller(DESIRED_GET)
    if request.app_id is not None:
        one = await store.get_app(gw.reader, request.app_id)
        apps = [one] if one is not None else []
    else:
        apps = await store.all_apps(gw.reader)
    return DesiredState(apps=[await _app_desired(gw, app) for app in apps if not app.shredded_at])


async def _app_desired(gw: Gateway, app: store.App) -> AppDesired:
    release = await store.current_release(gw.reader, app.id)
    rows = await store.list_formation(gw.reader, app.id)
    return AppDesired(
        app_id=app.id,
        app_name=app.name,
        team_id=app.team_id,
        maintenance=app.maintenance,
        release_version=release.version if release else None,
        image_ref=release.image_ref if release else None,
        image_digest=release.image_digest if release else None,
        config_version=release.config_version_id if release else None,
        process_types=dict(release.process_types) if release else {},
        formation=formation.desired(rows),
        domains=await domains.hostnames_of(gw.reader, app.id),
        hsts=app.hsts,
    )
