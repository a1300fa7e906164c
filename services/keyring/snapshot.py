"""What the keyring puts in a platform snapshot: its database and the sealed master key.

The master key itself is never exported. The keyring sealed it to the operator's recovery
recipients when it was made and after each rotation (`master-key.recovery.age`,
rotation.py); that sealed file is the part's `keyring/master-key.recovery.age`, and a
restore opens it with the offline identity into `keyring/master.key`. Without recovery
recipients there is no such file and nobody could open the snapshot's keys: the export
is refused, saying so. So is an export during a master-key rotation, whose database
may hold keys wrapped under a key the sealed file does not hold yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from slipway.libs.service import ServiceApp
from slipway.libs.snapshot.export import Database, ExportError, File, Sources
from slipway.libs.snapshot.manifest import MASTER_KEY_MEMBER
from slipway.services.keyring.handlers import VAULT
from slipway.services.keyring.settings import KeyringSettings

NO_RECOVERY = (
    "the keyring holds no master-key.recovery.age: set SLIPWAY_RECOVERY_RECIPIENTS to the"
    " operator's offline age recipient(s) and restart the keyring (it seals the master key"
    " to them at start); a snapshot without it could never be opened"
)
ROTATING = (
    "a master-key rotation is unfinished (a key is {state}): finish it"
    " (slipway admin:rotate-master-key) before taking a snapshot"
)
LEFT_OUT = (
    "keyring: master.key is not exported; it comes back from keyring/master-key.recovery.age,"
    " opened with the recovery identity",
)


def sources(service: ServiceApp, settings: KeyringSettings) -> Callable[[], Awaitable[Sources]]:
    """The keyring's Sources; ExportError when the snapshot could not be opened or used."""

    async def declare() -> Sources:
        if not settings.recovery_recipients.strip() or not settings.recovery_file().is_file():
            raise ExportError(NO_RECOVERY)
        for record in await service[VAULT].store.master_keys():
            if record.state in ("pending", "retiring"):
                raise ExportError(ROTATING.format(state=record.state))
        return Sources(
            databases=[Database(settings.db_path(), "keyring/keyring.db")],
            files=[File(settings.recovery_file(), MASTER_KEY_MEMBER, required=NO_RECOVERY)],
            left_out=LEFT_OUT,
        )

    return declare
