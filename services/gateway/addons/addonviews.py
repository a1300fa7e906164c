"""The add-on resources' shapes: Heroku's add-on and add-on attachment, and `pg:info`'s."""

from __future__ import annotations

from slipway.contracts import addons as ac
from slipway.services.gateway.addons.addonstore import Addon
from slipway.services.gateway.core import store
from slipway.services.gateway.http import views
from slipway.services.gateway.http.views import stable_id


class PlanRef(views.View, frozen=True, kw_only=True):
    id: str
    name: str


class BillingEntity(views.View, frozen=True, kw_only=True):
    id: str
    name: str
    type: str


class BilledPrice(views.View, frozen=True, kw_only=True):
    cents: int
    contract: bool
    unit: str


class AddonView(views.View, frozen=True, kw_only=True):
    """Heroku's add-on."""

    actions: list[dict[str, str]]
    addon_service: PlanRef
    billing_entity: BillingEntity
    app: views.AppRef
    billed_price: BilledPrice | None
    config_vars: list[str]
    created_at: str
    id: str
    name: str
    plan: PlanRef
    provider_id: str
    provision_message: str
    state: str
    updated_at: str
    web_url: str | None


class AttachedAddon(views.View, frozen=True, kw_only=True):
    id: str
    name: str
    app: views.AppRef


class AttachmentView(views.View, frozen=True, kw_only=True):
    """Heroku's add-on attachment."""

    addon: AttachedAddon
    app: views.AppRef
    created_at: str
    id: str
    name: str
    namespace: str | None
    updated_at: str
    web_url: str | None
    log_input_url: str | None


class DatabaseView(views.View, frozen=True, kw_only=True):
    """Slipway's `pg:info`: the plan's limits and what the database says of itself."""

    addon: AttachedAddon
    plan: str
    state: str
    attachment: str
    running: bool
    version: str
    size_bytes: int
    connections: int
    max_connections: int
    tables: int
    memory_mb: int
    storage_gb: int


def addon_view(addon: Addon, app: store.App) -> AddonView:
    plan = ac.ADDON_PLANS[addon.plan]
    return AddonView(
        actions=[],
        addon_service=PlanRef(id=stable_id("service", plan.service), name=plan.service),
        billing_entity=BillingEntity(id=app.id, name=app.name, type="app"),
        app=views.AppRef(id=app.id, name=app.name),
        billed_price=BilledPrice(cents=plan.price_cents, contract=False, unit="month"),
        config_vars=[addon.config_var],
        created_at=addon.created_at,
        id=addon.id,
        name=addon.name,
        plan=PlanRef(id=stable_id("plan", plan.name), name=plan.name),
        provider_id=addon.id,
        provision_message=addon.provision_message,
        state=addon.state,
        updated_at=addon.updated_at,
        web_url=None,
    )


def attachment_view(addon: Addon, app: store.App) -> AttachmentView:
    ref = views.AppRef(id=app.id, name=app.name)
    return AttachmentView(
        addon=AttachedAddon(id=addon.id, name=addon.name, app=ref),
        app=ref,
        created_at=addon.created_at,
        id=addon.attachment_id,
        name=addon.attachment_name,
        namespace=None,
        updated_at=addon.updated_at,
        web_url=None,
        log_input_url=None,
    )
