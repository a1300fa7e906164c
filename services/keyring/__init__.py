"""The keyring: the only holder of the master key, issuing and unwrapping data keys.

    app.py        the ServiceApp: master key, database, vault, RPCs
    handlers.py   one handler per keyring RPC: policy check, audit, vault
    policy.py     the table of which service may do what, for which purpose
    vault.py      team KEKs, data keys, rotation, retirement, shredding, customer keys, signing
    backupkeys.py each team's age identity and customer recipients for backups, file-key unwrap
    teams.py      the check every operation on a team makes first: not shredded
    store.py      the keyring's aiosqlite database (wrapped keys, append-only audit)
    masterkey.py  reading, creating and checking the master key
    settings.py   KeyringSettings (SLIPWAY_MASTER_KEY_PATH, SLIPWAY_MASTER_KEY_ENV)

See README.md in this folder.
"""
