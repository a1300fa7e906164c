"""The commands and events no consumer has acknowledged yet, carried by a platform snapshot.

`dump` (the backup service, as its own NATS user) reads the CMD and EVT streams with the
read-only JetStream API natsauth grants it (`SNAPSHOT_READS`): each stream's state, each
durable consumer's ack floor, then each message by sequence (`STREAM.MSG.GET`). Nothing is
created, acknowledged or changed. The result is JSON lines, `nats/streams.jsonl` in the
backup service's part of a snapshot:

    {"format": 1, "kind": "slipway.nats.streams", "taken_at": "...",
     "streams": {"CMD": {"subjects": [...], "retention": "workqueue",
                         "first_seq": 1, "last_seq": 9, "messages": 2}, "EVT": {...}},
     "consumers": {"CMD": {"builder-cmd": 7}, "EVT": {"gateway-builds": 40, ...}}}
    {"stream": "CMD", "seq": 8, "subject": "slipway.cmd.builder.build",
     "headers": {"Nats-Msg-Id": "..."}, "data": "<base64>", "time": "..."}
    ...

A consumer's number is its ack floor: the stream sequence up to which it acknowledged
everything. Kept are every message of the work queue CMD (an acknowledged command is
gone from it) and every EVT message after the ack floor of a consumer whose filter it
matches. A message acknowledged out of order above a floor is kept too and will be
delivered again: delivery is at-least-once and every handler is idempotent.

`replay` (the supervisor, before provisioning a restored platform's fresh nats-server)
creates the streams as provisioning would, publishes the messages in their order with
their headers (`Nats-Msg-Id` included), and creates each declared durable consumer so
that it starts at the new sequence of the first message it had not acknowledged.
Provisioning keeps that position (libs/bus/provision.py `keeping_position`). It only
replays into empty streams, so running it twice never doubles a command.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api

from slipway.contracts import subjects
from slipway.libs.bus.provision import declared_consumers, ensure_streams
from slipway.libs.natsauth import SNAPSHOT_STREAMS

FORMAT = 1
KIND = "slipway.nats.streams"
MEMBER = "nats/streams.jsonl"  # its name in the backup service's tar, and under SLIPWAY_HOME
FILE_NAME = "streams.jsonl"  # in nats-server's folder, where a restore puts it
MAX_MESSAGES_ENV = "SLIPWAY_SNAPSHOT_STREAMS_MAX_MESSAGES"
MAX_BYTES_ENV = "SLIPWAY_SNAPSHOT_STREAMS_MAX_BYTES"
DEFAULT_MAX_MESSAGES = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # of message data and headers, before base64
API_TIMEOUT = 10.0
# Headers that state expectations about the old stream (its last sequence, its name):
# true when first published, meaningless (or refused) against the fresh one.
_STALE_HEADER_PREFIX = "Nats-Expected-"
_NOT_FOUND = 10037  # JetStream's "no message found"


class StreamsError(RuntimeError):
    """Root of this module's errors (RuntimeError: the supervisor reports and stops on it)."""


class StreamsTooLarge(StreamsError):
    """More undelivered messages than a snapshot may carry (the bounds are settings)."""


class StreamsReplayError(StreamsError):
    """The file cannot be replayed (not empty, newer format, unreadable); nothing was started."""


@dataclass(frozen=True)
class Replayed:
    """What a replay did: messages per stream, each consumer's new start, what it skipped."""

    messages: dict[str, int]
    starts: dict[str, dict[str, int]]  # stream -> durable -> first stream sequence it gets
    skipped: list[str] = field(default_factory=list)  # consumers not declared here


# ---- dumping --------------------------------------------------------------------------------


async def dump(
    nc: NatsClient, *, max_messages: int | None = None, max_bytes: int | None = None
) -> bytes:
    """The unacknowledged messages of CMD and EVT with every consumer's position, as JSON lines.

    Refuses (StreamsTooLarge) past `max_messages` messages or `max_bytes` bytes, by default
    SLIPWAY_SNAPSHOT_STREAMS_MAX_MESSAGES / _MAX_BYTES or 100000 messages / 64 MiB.
    """
    bound = _Bound(
        max_messages
        if max_messages is not None
        else _env_int(MAX_MESSAGES_ENV, DEFAULT_MAX_MESSAGES),
        max_bytes if max_bytes is not None else _env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES),
    )
    header: dict[str, Any] = {
        "format": FORMAT,
        "kind": KIND,
        "taken_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "streams": {},
        "consumers": {},
    }
    lines: list[str] = []
    for stream in SNAPSHOT_STREAMS:
        info = await _api(nc, f"$JS.API.STREAM.INFO.{stream}")
        config, state = info["config"], info["state"]
        # Positions first, messages after: a consumer that moves on meanwhile gets a
        # message again rather than missing one.
        consumers = await _consumers(nc, stream)
        kept = await _unacknowledged(nc, stream, config, state, consumers, bound)
        header["streams"][stream] = {
            "subjects": config.get("subjects", []),
            "retention": config.get("retention", "limits"),
            "first_seq": state.get("first_seq", 0),
            "last_seq": state.get("last_seq", 0),
            "messages": len(kept),
        }
        header["consumers"][stream] = {name: floor for name, (floor, _) in consumers.items()}
        lines.extend(json.dumps(message, separators=(",", ":")) for message in kept)
    head = json.dumps(header, separators=(",", ":"))
    return "\n".join([head, *lines]).encode() + b"\n"


@dataclass
class _Bound:
    max_messages: int
    max_bytes: int
    messages: int = 0
    size: int = 0

    def take(self, stream: str, size: int) -> None:
        self.messages += 1
        self.size += size
        if self.messages > self.max_messages or self.size > self.max_bytes:
            raise StreamsTooLarge(
                f"more than {self.max_messages} messages or {self.max_bytes} bytes are "
                f"waiting in the NATS streams (reached {stream}): not snapshotting them; "
                f"let the services catch up, or raise {MAX_MESSAGES_ENV} / {MAX_BYTES_ENV}"
            )


async def _consumers(nc: NatsClient, stream: str) -> dict[str, tuple[int, list[str]]]:
    """durable -> (ack floor stream sequence, filter subjects) of every consumer of `stream`."""
    found: dict[str, tuple[int, list[str]]] = {}
    offset = 0
    while True:
        page = await _api(nc, f"$JS.API.CONSUMER.LIST.{stream}", {"offset": offset})
        infos: list[dict[str, Any]] = page.get("consumers") or []
        for info in infos:
            config = info.get("config", {})
            filters = list(config.get("filter_subjects") or [])
            if config.get("filter_subject"):
                filters.append(config["filter_subject"])
            found[info["name"]] = (int(info.get("ack_floor", {}).get("stream_seq", 0)), filters)
        offset += len(infos)
        if not infos or offset >= int(page.get("total", 0)):
            return found


async def _unacknowledged(
    nc: NatsClient,
    stream: str,
    config: Mapping[str, Any],
    state: Mapping[str, Any],
    consumers: Mapping[str, tuple[int, list[str]]],
    bound: _Bound,
) -> list[dict[str, Any]]:
    first, last = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
    work_queue = config.get("retention") == "workqueue"
    if not work_queue and not consumers:
        return []
    start = first if work_queue else max(first, min(floor for floor, _ in consumers.values()) + 1)
    kept: list[dict[str, Any]] = []
    seq = max(start, 1)
    while seq <= last:
        # The next stored message at or after `seq`: a work queue has holes where
        # commands were acknowledged, and this skips them in one request.
        reply = await _api(
            nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": ">"}, found=False
        )
        if reply is None:
            break
        message = reply["message"]
        seq = int(message["seq"])
        if seq > last:  # published after we looked: the next snapshot's
            break
        subject = message["subject"]
        if work_queue or any(
            floor < seq and _wanted(filters, subject) for floor, filters in consumers.values()
        ):
            raw_headers = base64.b64decode(message.get("hdrs") or "")
            data = message.get("data") or ""
            bound.take(stream, len(raw_headers) + len(data) * 3 // 4)
            kept.append(
                {
                    "stream": stream,
                    "seq": seq,
                    "subject": subject,
                    "headers": _parse_headers(raw_headers),
                    "data": data,
                    "time": message.get("time", ""),
                }
            )
        seq += 1
    return kept


def _wanted(filters: Iterable[str], subject: str) -> bool:
    filters = list(filters)
    return not filters or any(subject_matches(f, subject) for f in filters)


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject `subject` matches `pattern` (`*` one token, `>` the rest)."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or part not in ("*", have[i]):
            return False
    return len(want) == len(have)


def _parse_headers(raw: bytes) -> dict[str, str]:
    # "NATS/1.0\r\nName: value\r\n...\r\n\r\n"; a repeated name keeps its first value,
    # as the platform never repeats one.
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers.setdefault(name.strip(), value.strip())
    return headers


async def _api(
    nc: NatsClient, subject: str, request: Mapping[str, Any] | None = None, *, found: bool = True
) -> Any:
    """One JetStream API request; None for "no message found" when `found` is False."""
    payload = json.dumps(request).encode() if request is not None else b""
    try:
        reply = await nc.request(subject, payload, timeout=API_TIMEOUT)
    except nats.errors.NoRespondersError as exc:
        raise StreamsError(f"{subject}: JetStream did not answer (is it enabled?)") from exc
    except nats.errors.TimeoutError as exc:
        raise StreamsError(f"{subject}: no answer in {API_TIMEOUT}s") from exc
    answer: dict[str, Any] = json.loads(reply.data)
    error = answer.get("error")
    if error:
        if not found and error.get("err_code") == _NOT_FOUND:
            return None
        raise StreamsError(f"{subject}: {error.get('description', error)}")
    return answer


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise StreamsError(f"{name} must be a whole number, not {value!r}") from exc


# ---- replaying ------------------------------------------------------------------------------


def parse(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the messages of a dump, checked; StreamsReplayError if it is not one."""
    try:
        lines = [line for line in data.decode("utf-8").split("\n") if line.strip()]
        if not lines:
            raise StreamsReplayError("the streams file is empty")
        header: dict[str, Any] = json.loads(lines[0])
        messages: list[dict[str, Any]] = [json.loads(line) for line in lines[1:]]
    except ValueError as exc:  # UnicodeDecodeError included
        raise StreamsReplayError(f"the streams file is not JSON lines: {exc}") from exc
    if not isinstance(header, dict) or header.get("kind") != KIND:
        raise StreamsReplayError("not a streams file: its first line is no streams header")
    if not isinstance(header.get("format"), int) or header["format"] > FORMAT:
        raise StreamsReplayError(
            f"streams file format {header.get('format')!r} is newer than this platform's "
            f"({FORMAT}): upgrade Slipway before restoring it"
        )
    try:
        _check(header, messages)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise StreamsReplayError(f"the streams file is malformed: {exc!r}") from exc
    return header, messages


def _check(header: Mapping[str, Any], messages: list[dict[str, Any]]) -> None:
    streams: Mapping[str, Any] = header["streams"]
    for stream, floors in header["consumers"].items():
        if stream not in streams or not all(isinstance(f, int) for f in floors.values()):
            raise StreamsReplayError(f"the consumers of {stream!r} are malformed")
    last: dict[str, int] = {}
    for message in messages:
        stream = str(message["stream"])
        if stream not in streams:
            raise StreamsReplayError(f"a message names stream {stream!r}, not in the header")
        seq = int(message["seq"])
        if not isinstance(message["subject"], str):
            raise StreamsReplayError(f"{stream} message {seq} has no subject")
        if seq <= last.get(stream, 0):
            raise StreamsReplayError(f"{stream} messages are out of order at {seq}")
        last[stream] = seq
        base64.b64decode(message.get("data") or "", validate=True)
    for stream, about in streams.items():
        # A file cut at a line's end still parses: the counts tell it is not whole.
        have = sum(1 for m in messages if m["stream"] == stream)
        if have != about["messages"]:
            raise StreamsReplayError(
                f"the streams file holds {have} {stream} messages, its header says "
                f"{about['messages']}: it is truncated or altered"
            )


async def replay(
    js_admin_nc: NatsClient,
    data: bytes,
    *,
    instances: Mapping[str, Iterable[str | None]] | None = None,
) -> Replayed:
    """Publish a dump's messages into empty streams and create the consumers at their places.

    `js_admin_nc` may create streams and consumers and publish commands and events (the
    operator user: the provisioner is deliberately refused publishing commands).
    Consumers the catalog does not declare for `instances` (another host's) are skipped.
    """
    header, messages = parse(data)
    js = js_admin_nc.jetstream(timeout=API_TIMEOUT)
    streams: dict[str, Any] = header["streams"]
    unknown = sorted(set(streams) - set(SNAPSHOT_STREAMS))
    if unknown:
        raise StreamsReplayError(f"the streams file holds streams this platform lacks: {unknown}")
    await ensure_streams(js)
    for stream in streams:
        held = (await js.stream_info(stream)).state.messages
        if held:
            raise StreamsReplayError(
                f"stream {stream} already holds {held} messages: a snapshot's messages are "
                "replayed only into empty streams (a fresh platform), never twice"
            )
    new_seq = await _publish(js, messages)
    starts, skipped = await _create_consumers(js, header, messages, new_seq, instances)
    counts = {stream: sum(1 for m in messages if m["stream"] == stream) for stream in streams}
    return Replayed(messages=counts, starts=starts, skipped=skipped)


async def _create_consumers(
    js: JetStreamContext,
    header: Mapping[str, Any],
    messages: list[dict[str, Any]],
    new_seq: Mapping[tuple[str, int], int],
    instances: Mapping[str, Iterable[str | None]] | None,
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Each declared consumer of the dump, starting at its first unacknowledged message."""
    declared = {
        (stream, str(config.durable_name)): config
        for stream, config in declared_consumers(instances)
    }
    starts: dict[str, dict[str, int]] = {}
    skipped: list[str] = []
    for stream, floors in header.get("consumers", {}).items():
        next_seq = (await js.stream_info(stream)).state.last_seq + 1
        replayed = [
            (m["seq"], new_seq[(stream, m["seq"])]) for m in messages if m["stream"] == stream
        ]
        work_queue = header["streams"][stream].get("retention") == "workqueue"
        for durable, floor in sorted(floors.items()):
            config = declared.get((stream, durable))
            if config is None:
                skipped.append(f"{stream}/{durable}")
                continue
            if work_queue:
                # A work queue holds only what nobody acknowledged: its consumers start at
                # its beginning (the server allows nothing else there).
                start = replayed[0][1] if replayed else next_seq
            else:
                start = next((new for old, new in replayed if old > floor), next_seq)
                config = dataclasses.replace(
                    config, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
                )
            try:
                await js.add_consumer(stream, config)
            except nats.js.errors.Error as exc:
                raise StreamsReplayError(
                    f"consumer {stream}/{durable} could not be created at its place: {exc!r}"
                ) from exc
            starts.setdefault(stream, {})[durable] = start
    return starts, skipped


async def _publish(
    js: JetStreamContext, messages: list[dict[str, Any]]
) -> dict[tuple[str, int], int]:
    """Publish in the file's order, pipelined; (stream, old seq) -> new seq."""
    futures: list[asyncio.Future[api.PubAck]] = []
    for message in messages:
        headers = {
            name: value
            for name, value in message.get("headers", {}).items()
            if not name.startswith(_STALE_HEADER_PREFIX)
        }
        # One connection keeps the order; `stream=` makes the server refuse a subject
        # that would land in another stream.
        futures.append(
            await js.publish_async(
                message["subject"],
                base64.b64decode(message.get("data") or ""),
                stream=message["stream"],
                headers=headers,
            )
        )
    try:
        acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=API_TIMEOUT + len(futures))
    except (nats.js.errors.Error, TimeoutError) as exc:
        raise StreamsReplayError(f"publishing the snapshot's messages failed: {exc!r}") from exc
    return {(m["stream"], m["seq"]): ack.seq for m, ack in zip(messages, acks, strict=True)}


async def replay_file(
    path: Path,
    url: str,
    *,
    user: str | None,
    password: str | None,
    tls: ssl.SSLContext | None = None,
    instances: Mapping[str, Iterable[str | None]] | None = None,
) -> Replayed | None:
    """Replay `path` if it exists, then rename it `<name>.replayed-<time>` (0600); else None.

    On failure the file stays where it is and StreamsError says why.
    """
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        return None
    extra: dict[str, Any] = {"tls": tls} if tls is not None else {}
    nc = await nats.connect(
        url,
        **extra,
        user=user,
        password=password,
        inbox_prefix=subjects.inbox_prefix(user or subjects.OPERATOR),
        allow_reconnect=False,
        max_reconnect_attempts=1,
    )
    try:
        done = await replay(nc, data, instances=instances)
    finally:
        await nc.close()
    await asyncio.to_thread(_keep_replayed, path)
    return done


def _keep_replayed(path: Path) -> Path:
    # Kept for the operator (what came back), owner-only as it holds commands' payloads;
    # renamed, so the next start does not replay it again.
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.replayed-{stamp}")
    path.rename(kept)
    kept.chmod(0o600)
    return kept
