"""The platform's events as Heroku's webhook entities: the `data` of each payload.

    RELEASE_CREATED  -> api:release  create   (Heroku's `release` fields Slipway knows)
    BUILD_FINISHED   -> api:build    update   (`build`: id, app, status, times)
    DYNO_CHANGED     -> dyno         create when new, destroy when down, update otherwise

Pure functions of the event, so what a receiver gets is read here in one place.
"""

from __future__ import annotations

from typing import Any

from slipway.contracts import builder, gateway, scheduler
from slipway.services.monitor.delivery import iso

VERSION = "application/vnd.heroku+json; version=3"
# Heroku's `actor` is the user who caused the event. The platform's events name the user by
# email only, so the id is the nil UUID ("not known here"); what the platform did by
# itself (an alert, a dyno crashing) names the platform.
PLATFORM_ACTOR = "platform@slipway.local"
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"


def release_data(evt: gateway.ReleaseCreated) -> dict[str, Any]:
    return {
        "id": evt.release_id,
        "app": {"id": evt.app_id, "name": evt.app_name},
        "version": evt.version,
        "description": evt.description,
        "status": "pending",
        "current": False,
        "created_at": iso(evt.occurred_at),
        "updated_at": iso(evt.occurred_at),
        "user": {"email": evt.actor, "id": UNKNOWN_ID},
    }


def build_data(evt: builder.BuildFinished) -> dict[str, Any]:
    return {
        "id": evt.build_id,
        "app": {"id": evt.app_id, "name": evt.app_name},
        "status": evt.status,
        "created_at": iso(evt.occurred_at - evt.duration_s),
        "updated_at": iso(evt.occurred_at),
        "slug": None,
        "output_stream_url": None,
    }


def dyno_action(evt: scheduler.DynoChanged) -> str:
    if evt.previous_state is None:
        return "create"
    return "destroy" if evt.dyno.state == "down" else "update"


def dyno_data(evt: scheduler.DynoChanged) -> dict[str, Any]:
    dyno = evt.dyno
    return {
        "name": dyno.name,
        "type": dyno.process_type,
        "state": dyno.state,
        "size": dyno.size,
        "app": {"id": dyno.app_id, "name": dyno.app_name},
        "release": {"version": dyno.release_version},
        "command": dyno.command,
        "reason": evt.reason,
        "updated_at": iso(evt.occurred_at),
    }
