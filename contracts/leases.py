"""Leader leases: the services that run one active instance, and what a lease records.

The gateway, keyring and scheduler each own state that must have a single writer (their
SQLite stores; the scheduler also the containers it starts). Any number of instances
may run; the one holding its service's key in the `KV_LEASES` bucket leads and does the
work, the others stand by and take over when that key expires (libs/lease.py):

    $KV.slipway_leases.<service>   value: LeaseHolder, rewritten by the leader every
                                   ttl / 5 seconds; the bucket's max age is the ttl

A service user may write only its own service's key (libs/natsauth.py), so one
compromised service cannot depose another's leader or pose as it.
"""

from __future__ import annotations

from slipway.contracts.base import Message
from slipway.contracts.subjects import Service

LEASED: frozenset[Service] = frozenset({Service.GATEWAY, Service.KEYRING, Service.SCHEDULER})

# Seconds a lease outlives its last renewal: how long a dead leader's service waits for a
# standby. The provisioner sets it on the bucket (SLIPWAY_LEASE_TTL); services read it there.
DEFAULT_LEASE_TTL = 5.0


class LeaseHolder(Message, tag="lease.holder.v1", frozen=True, kw_only=True):
    """Who holds a service's lease: the instance (its bus name), where it runs, since when."""

    service: str
    instance: str
    host: str = ""
    pid: int = 0
    since: float = 0.0
