"""Add-ons after a platform restore: which databases the scheduler must bring back.

The scheduler asks `ADDONS_PROVISIONED_LIST` at its start: every add-on held here as
provisioned, with the host it last ran on. One that is on no host comes back from its
own backups under the same id, names and password (services/scheduler/addons.py); one
that cannot (no completed backup) is answered `failed`, which addons.changed records on
the still-provisioned add-on, where the customer sees it (`addons:info`, the audit log).
"""

from __future__ import annotations

from collections.abc import Callable

from slipway.contracts import addons as ac
from slipway.libs.bus import context
from slipway.libs.service import ServiceApp
from slipway.services.gateway.addons import addons, addonstore
from slipway.services.gateway.core.state import Gateway


async def provisioned(gw: Gateway) -> ac.ProvisionedAddons:
    """Every provisioned add-on as the scheduler runs it, with its last host."""
    async with gw.reader.execute(
        "SELECT a.id, p.name FROM addons a JOIN apps p ON p.id = a.app_id"
        " WHERE a.state = 'provisioned' ORDER BY a.created_at, a.id"
    ) as cursor:
        rows = [(str(r[0]), str(r[1])) for r in await cursor.fetchall()]
    found: list[ac.ProvisionedAddon] = []
    for addon_id, app_name in rows:
        addon = await addonstore.get(gw.reader, addon_id)
        if addon is None or addon.state != "provisioned":
            continue  # destroyed between the two reads
        found.append(
            ac.ProvisionedAddon(addon=addons.desired(addon, app_name), host_id=addon.host_id or "")
        )
    return ac.ProvisionedAddons(addons=found)


def install(service: ServiceApp, state: Callable[[], Gateway]) -> None:
    """Serve `ADDONS_PROVISIONED_LIST` (the scheduler only)."""

    @service.rpc(ac.ADDONS_PROVISIONED_LIST)
    async def provisioned_list(request: ac.ListProvisionedAddons) -> ac.ProvisionedAddons:
        context.require_caller(ac.ADDONS_PROVISIONED_LIST)
        return await provisioned(state())
