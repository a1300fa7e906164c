"""The backup service: sealed continuous backups of the add-on databases, and their restores.

settings.py   what one host's instance reads from SLIPWAY_*
app.py        the ServiceApp: RPCs and the add-on events
service.py    the databases of this host, their streams, captures, schedules, reads
capture.py    base backups (BASE_BACKUP -> zstd -> parts -> age)
walstream.py  continuous WAL (START_REPLICATION on a slot -> pieces every few seconds),
              and the archive_command fallback
restore.py    choosing a backup and WAL for a point in time; staging them for a new database
retention.py  which backups each plan keeps; expiry that keeps every restore's WAL
schedules.py  when each database's daily capture is due (pg:backups:schedule --at)
verify.py     verification: keyless integrity checks, a throwaway restore, row counts
archive.py    objects stored and made visible by signed, hash-chained manifests
sealing.py    age sealing, opening through the keyring, manifest signatures
storage.py    where objects go: a local folder, plus copies
store.py      the catalog (aiosqlite)
errors.py     what can go wrong, as the bus's typed errors
"""
