"""Config versions sealed with envelope encryption through the keyring (`libs.crypto.envelope`).

The binding ties a ciphertext to its place: the team, the app, the kind
("config") and the config version's id. Moved to another row, app or team it
fails to decrypt, and the API says so (500 data_integrity) instead of serving
someone else's secrets. A team whose key was destroyed answers 410 gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import structlog

from slipway.contracts.keyring import DataKey, Purpose
from slipway.libs.crypto import Binding, DecryptionFailed, aead, envelope
from slipway.libs.errors import Gone
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import Gateway
from slipway.services.gateway.http.errors import DataIntegrity

log = structlog.get_logger("slipway.gateway.sealing")

ConfigVars = dict[str, str]

_decode = msgspec.json.Decoder(dict[str, str])


def binding(app: store.App, version_id: str) -> Binding:
    return Binding(team=app.team_id, app=app.id, kind="config", record=version_id)


async def seal(gw: Gateway, app: store.App, version_id: str, values: ConfigVars) -> bytes:
    """The ciphertext of one config version."""
    return seal_with(await new_data_key(gw, app, version_id), app, version_id, values)


async def new_data_key(gw: Gateway, app: store.App, version_id: str) -> DataKey:
    """A fresh data key for one config version (to seal it with `seal_with`, then drop)."""
    return await envelope.generate_data_key(
        gw.bus, app.team_id, Purpose.CONFIG, binding(app, version_id)
    )


def seal_with(key: DataKey, app: store.App, version_id: str, values: ConfigVars) -> bytes:
    """The ciphertext of one config version under `key`, made for this version."""
    place = binding(app, version_id)
    plaintext = msgspec.json.encode(dict(sorted(values.items())))
    blob = aead.seal(key.plaintext, plaintext, place)
    record = envelope.EncryptedRecord(
        wrapped_key=key.wrapped, kek_version=key.kek_version, blob=blob
    )
    return record.to_bytes()


async def unseal(gw: Gateway, app: store.App, version_id: str, ciphertext: bytes) -> ConfigVars:
    """The values of one config version."""
    with _opening(app, version_id):
        plaintext = await envelope.decrypt(
            gw.bus, app.team_id, Purpose.CONFIG, binding(app, version_id), ciphertext
        )
    return _decode.decode(plaintext)


async def unseal_and_renew(
    gw: Gateway, app: store.App, version_id: str, ciphertext: bytes, next_version_id: str
) -> tuple[ConfigVars, DataKey]:
    """`unseal` of one version and `new_data_key` for the next, in one keyring call."""
    with _opening(app, version_id):
        plaintext, key = await envelope.open_and_renew(
            gw.bus,
            app.team_id,
            Purpose.CONFIG,
            binding(app, version_id),
            ciphertext,
            binding(app, next_version_id),
        )
    return _decode.decode(plaintext), key


@contextmanager
def _opening(app: store.App, version_id: str) -> Iterator[None]:
    """What a customer is told when a stored config version cannot be opened."""
    try:
        yield
    except Gone:
        raise Gone(
            f"The config of {app.name} was destroyed with its team's key (crypto-shredded);"
            " it can never be read again."
        ) from None
    except DecryptionFailed:
        log.error("config.integrity_failed", app=app.name, config_version=version_id)
        raise DataIntegrity(
            f"The stored config of {app.name} failed its integrity check: it was altered or"
            " moved from another app. Nothing was changed; restore it from a backup or set"
            " the config vars again."
        ) from None
