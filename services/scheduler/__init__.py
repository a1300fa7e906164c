"""The scheduler: turns releases and formations into dyno containers on Docker hosts.

Only its pure core exists so far: `placement.plan` (cluster state + desired
formations → plan) over the values in `model`. The service around it (host
registry, reconcile loop, health, rolling deploys) comes with issue 5; until it has
a `__main__.py` the supervisor does not start it.
"""
