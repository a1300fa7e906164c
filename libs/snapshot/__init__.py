"""Platform snapshots: the sealed layout (manifest.py), exporting a service's state
(export.py) and restoring a whole platform from a snapshot folder (restore.py)."""
