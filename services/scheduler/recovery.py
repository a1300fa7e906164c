"""Databases on no host come back: after a platform restore on a fresh machine, at every start.

At its start the scheduler asks the gateway for every add-on it holds as provisioned
(`ADDONS_PROVISIONED_LIST`) and looks for each one's container and volume on the
engines. One found is left alone (its restart policy runs it), unless a restore of it
was interrupted (`restore/` still in its run folder): that is finished. A volume without
its container gets a new container on that volume, on its engine. Neither anywhere: the
database comes back from ITS OWN backups, the latest base backup and every archived WAL
piece after it (`AddonDesired.restore` naming the add-on itself), under the same id,
database, role and password (set again from the gateway's sealed credentials), so the
app's DATABASE_URL works unchanged. One without any completed backup cannot: the
scheduler says so in its log and answers `failed`, which the gateway shows on the add-on.

Nothing is decided on a guess: an add-on whose last host is registered but silent waits
for it (a second copy elsewhere would split its history), and a pass that could not
reach the gateway, a backup service or another platform service is tried again every
`reconcile_interval` until every add-on has been dealt with once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import msgspec
import structlog

from slipway.contracts import addons as ac
from slipway.libs.errors import SlipwayError
from slipway.libs.service import ServiceApp
from slipway.services.scheduler.addons import Addons, run_dir_of
from slipway.services.scheduler.reconcile import Scheduler

log = structlog.get_logger("slipway.scheduler.addons")

ASK_TIMEOUT = 10.0


async def recover_missing(addons: Addons, sched: Scheduler) -> bool:
    """One pass over the gateway's provisioned add-ons; True once each was dealt with."""
    listed = await addons.bus.call(
        ac.ADDONS_PROVISIONED_LIST, ac.ListProvisionedAddons(), timeout=ASK_TIMEOUT
    )
    done = True
    for item in listed.addons:
        done = await _recover(addons, sched, item) and done
    return done


async def _recover(addons: Addons, sched: Scheduler, item: ac.ProvisionedAddon) -> bool:
    want = item.addon
    last = sched.rt.engines.get(item.host_id)
    if last is not None and not sched.is_up(last):
        log.warning("addon.recovery_waits_for_host", addon=want.addon_name, host=item.host_id)
        return False
    itself = ac.RestoreFrom(source_addon_id=want.addon_id)
    found = await addons.containers_of(want.addon_id)
    if found:
        engine = found[0][0]
        interrupted = run_dir_of(sched.settings, engine.id, want.addon_id) / "restore"
        if not await asyncio.to_thread(interrupted.is_dir):
            return True
        log.warning("addon.recovery_resumed", addon=want.addon_name, host=engine.id)
        return await addons.provision(
            msgspec.structs.replace(want, restore=itself), recovering=True
        )
    holder = await addons.volume_host(want.addon_id)
    if holder is not None:
        log.warning("addon.container_missing", addon=want.addon_name, host=holder.id)
        return await addons.provision(
            msgspec.structs.replace(want, restore=None), on=holder, recovering=True
        )
    log.warning(
        "addon.recovering_from_backups",
        addon=want.addon_name,
        app=want.app_name,
        last_host=item.host_id,
    )
    return await addons.provision(msgspec.structs.replace(want, restore=itself), recovering=True)


async def run(addons: Addons, sched: Callable[[], Scheduler]) -> None:
    """Recover until one pass dealt with every add-on (the gateway may start after us)."""
    while True:
        scheduler = sched()
        try:
            if await recover_missing(addons, scheduler):
                return
        except SlipwayError as exc:
            log.info("addon.recovery_unavailable", error=exc.message)
        except Exception:  # the next pass tries again; it must not die silently
            log.exception("addon.recovery_failed")
        await asyncio.sleep(scheduler.settings.reconcile_interval)


def install(service: ServiceApp, addons: Addons, sched: Callable[[], Scheduler]) -> None:
    """Run the recovery once the scheduler has started (its engines listed once)."""

    @service.cleanup_ctx
    async def recovery(service: ServiceApp) -> AsyncIterator[None]:
        task = asyncio.create_task(run(addons, sched), name="addon-recovery")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
