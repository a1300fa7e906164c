"""The keyring process: the master key, the database, the vault, and the RPCs that use them.

On start, in this order: read (or create) the master key, open the database, tie
the key to the versions the database records (with a rotation's other key file,
if one stopped midway), load (or create) the audit signing key — which proves the
master key is the one the database was made with — seal the master key to the
recovery recipients if that was not done yet, then serve. Any of these failing
stops the start with a `MasterKeyError` that says what to fix.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import structlog

from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.service import ServiceApp
from slipway.services.keyring import handlers, snapshot
from slipway.services.keyring.handlers import ROTATOR, VAULT
from slipway.services.keyring.masterkey import load_master_key
from slipway.services.keyring.rotation import MasterKeyRotator, seal_at_start
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.keyring.store import KeyringStore
from slipway.services.keyring.vault import Vault

log = structlog.get_logger("slipway.keyring")


def create_service(settings: KeyringSettings) -> ServiceApp:
    """The keyring as a runnable service."""
    service = ServiceApp(
        Service.KEYRING,
        settings=settings,
        description="Slipway's keyring: tenant keys, data keys, crypto-shredding, audit signing",
    )

    @service.cleanup_ctx
    async def vault(service: ServiceApp) -> AsyncIterator[None]:
        # The keyring's folder holds wrapped keys and, by default, the master key itself.
        os.chmod(settings.keyring_dir(), 0o700)
        master = load_master_key(settings)
        store = await KeyringStore.open(settings.db_path())
        try:
            await master.attach(store)
            vault = service[VAULT] = await Vault.open(
                master, store, operator_recipients=settings.recovery_public_keys()
            )
            service[ROTATOR] = MasterKeyRotator(vault, settings, service.bus.instance)
            await seal_at_start(settings, vault)
            log.info(
                "keyring.ready",
                master_key=master.source,
                master_key_versions=master.versions(),
                db=str(settings.db_path()),
            )
            yield
        finally:
            await store.close()

    handlers.register(service)
    service.snapshot_sources = snapshot.sources(service, settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "keyring"))
    return service
