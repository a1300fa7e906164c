"""The router on HAProxy: its configuration (config.py), the runtime reconciler
(reconcile.py) and its access lines (access.py). See config.py for the error codes."""
