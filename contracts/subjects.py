"""Every NATS subject, stream, consumer and KV bucket name Slipway uses.

Nothing outside this module spells a subject string. The families:

    slipway.rpc.<service>.<verb>   request/reply, core NATS, queue group = service
    slipway.cmd.<service>.<verb>   commands, stream CMD (work queue), one durable per service
    slipway.evt.<domain>.<fact>    facts, stream EVT (limits retention: replay, audit, webhooks)
    slipway.dlq.<service>.<verb>   commands that could not be handled, stream DLQ
    slipway.live.<kind>.<id>       ephemeral output to a waiting client, core NATS only
    $SRV.{PING,INFO,STATS}[...]    the NATS micro-service discovery protocol, for health
"""

from __future__ import annotations

import re
from enum import StrEnum

ROOT = "slipway"


class Service(StrEnum):
    """The platform's services; each is also a NATS user, queue group and durable name."""

    GATEWAY = "gateway"
    KEYRING = "keyring"
    BUILDER = "builder"
    REGISTRY_PROXY = "registry-proxy"
    SCHEDULER = "scheduler"
    NETWORK_WIRER = "network-wirer"
    LOG_SHIPPER = "log-shipper"
    BACKUP = "backup"
    MONITOR = "monitor"


# NATS users that are not services. The operator (scripts, the health check, tests)
# holds every permission; the provisioner may only create the streams and durable
# consumers declared in contracts/catalog.py, never delete or purge them.
OPERATOR = "operator"
PROVISIONER = "provisioner"

# Streams and their subject filters.
STREAM_CMD = "CMD"
STREAM_EVT = "EVT"
STREAM_DLQ = "DLQ"
CMD_ALL = f"{ROOT}.cmd.>"
EVT_ALL = f"{ROOT}.evt.>"
DLQ_ALL = f"{ROOT}.dlq.>"

# KV buckets, each stored in a stream of its own, `KV_<bucket>`.
KV_LEASES = "slipway_leases"
STREAM_LEASES = f"KV_{KV_LEASES}"

# The micro-service discovery protocol (nats.io ADR-32).
SRV_PREFIX = "$SRV"
SRV_VERBS = ("PING", "INFO", "STATS")

# One token of a subject: no wildcards, separators or whitespace.
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def _token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


def _verb(verb: str) -> str:
    # A verb may be dotted ("datakey.generate"); each part must be a plain token.
    for part in verb.split("."):
        _token(part)
    return verb


def rpc(service: Service, verb: str) -> str:
    """Subject of a request/reply endpoint of `service`."""
    return f"{ROOT}.rpc.{service}.{_verb(verb)}"


def cmd(service: Service, verb: str) -> str:
    """Subject of a command handled by `service`."""
    return f"{ROOT}.cmd.{service}.{_verb(verb)}"


def cmd_filter(service: Service) -> str:
    """The filter of `service`'s durable consumer on the CMD stream."""
    return f"{ROOT}.cmd.{service}.>"


def dead_letter(service: Service | str, subject: str) -> str:
    """Where a message `service` could not handle goes after its last delivery."""
    prefix = f"{ROOT}."
    if not subject.startswith(prefix):
        raise ValueError(f"not a Slipway subject: {subject!r}")
    return f"{ROOT}.dlq.{_token(str(service))}.{subject[len(prefix) :]}"


def dead_letter_filter(service: Service) -> str:
    """All dead letters of one service."""
    return f"{ROOT}.dlq.{service}.>"


def evt(domain: str, fact: str) -> str:
    """Subject of an event."""
    return f"{ROOT}.evt.{_token(domain)}.{_verb(fact)}"


def evt_filter(domain: str) -> str:
    """Every event of one domain."""
    return f"{ROOT}.evt.{_token(domain)}.>"


def live(kind: str, ident: str) -> str:
    """An ephemeral stream to a waiting client (build output, log tail, TTY)."""
    return f"{ROOT}.live.{_token(kind)}.{_token(ident)}"


def live_filter(kind: str) -> str:
    """Every live subject of one kind (one token per id), for a queue-group listener."""
    return f"{ROOT}.live.{_token(kind)}.*"


def lease_subject(service: Service) -> str:
    """Where `service`'s leader lease is written: its key in the `KV_LEASES` bucket."""
    return f"$KV.{KV_LEASES}.{_token(str(service))}"


def inbox_prefix(service: Service | str, instance: str | None = None) -> str:
    """The reply-inbox prefix of a service's connection.

    In the hardened NATS config each service user may subscribe only under its
    own prefix, so the prefix of a request's reply subject names its sender.
    """
    base = f"_INBOX.{_token(str(service))}"
    return f"{base}.{_token(instance)}" if instance else base


def is_inbox(subject: str) -> bool:
    """Whether `subject` is a reply inbox (Slipway's or a plain NATS client's)."""
    return subject.startswith("_INBOX.")


def caller_of(reply_subject: str | None) -> str | None:
    """The service whose inbox a reply subject belongs to, if it is a Slipway inbox."""
    if not reply_subject or not is_inbox(reply_subject):
        return None
    parts = reply_subject.split(".")
    return parts[1] if len(parts) > 2 else None


def durable(service: Service, purpose: str = "cmd") -> str:
    """Name of a durable consumer owned by `service`."""
    return f"{_token(str(service))}-{_token(purpose)}"


def srv_subjects(verb: str, name: str, instance_id: str) -> tuple[str, str, str]:
    """The three subjects a micro-service answers for one discovery verb."""
    return (
        f"{SRV_PREFIX}.{verb}",
        f"{SRV_PREFIX}.{verb}.{name}",
        f"{SRV_PREFIX}.{verb}.{name}.{instance_id}",
    )
