"""An asyncio client of HAProxy's runtime API and of its master CLI."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from slipway.libs.haproxy.errors import RuntimeCommandError, RuntimeUnavailable

# A runtime answer is a few KB; 10,000 map entries are ~600 KB. Bounded so a runaway
# answer cannot eat the wirer's memory.
MAX_ANSWER = 64 * 1024 * 1024
PROMPT = b"\n> "
MASTER_PROMPT = b"\nmaster> "
CONTINUATION = re.compile(r"^(?:\+ ?)+")


class Runtime:
    """An asyncio client of HAProxy's runtime API on its unix socket.

    One persistent `prompt` session, commands sent one after the other under a lock:
    HAProxy answers a session's commands in order, and a connection per command costs a
    connect, an accept and a close on both sides (bench/haproxy_runtime.py measures it).
    A broken session (HAProxy reloaded or restarted) is reopened once per command.
    """

    def __init__(self, socket_path: Path | str, *, timeout: float = 30.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(
                    self.socket_path, limit=MAX_ANSWER
                )
        except (OSError, TimeoutError) as exc:
            raise RuntimeUnavailable(f"haproxy runtime socket {self.socket_path}: {exc}") from exc
        writer.write(b"prompt\n")
        await writer.drain()
        async with asyncio.timeout(self.timeout):
            await reader.readuntil(b"> ")
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def _exchange(self, command: str) -> str:
        if self._writer is None or self._reader is None:
            await self._open()
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(command.encode() + b"\n")
        await self._writer.drain()
        async with asyncio.timeout(self.timeout):
            answer = await self._reader.readuntil(PROMPT)
        return answer[: -len(PROMPT)].decode("utf-8", "replace")

    async def command(self, command: str, payload: str | None = None) -> str:
        """Send one command (with an optional `<<` payload); HAProxy's answer, stripped."""
        if "\n" in command or "\r" in command:
            raise ValueError("a runtime command is one line")
        text = command
        if payload is not None:
            # The payload ends at the first empty line, so it may hold none.
            lines = [line for line in payload.splitlines() if line.strip()]
            text = f"{command} <<\n" + "\n".join(lines) + "\n"
        async with self._lock:
            for attempt in (1, 2):
                try:
                    answer = await self._exchange(text)
                    # In prompt mode each payload line is acknowledged with a "+ " prompt.
                    return CONTINUATION.sub("", answer).strip() if payload else answer.strip()
                except (OSError, EOFError, asyncio.IncompleteReadError, RuntimeUnavailable) as exc:
                    await self.close()
                    if attempt == 2:
                        raise RuntimeUnavailable(f"haproxy runtime: {exc!r}") from exc
                except (TimeoutError, asyncio.LimitOverrunError) as exc:
                    # The answer's end was never seen: the session is out of step.
                    await self.close()
                    raise RuntimeUnavailable(f"haproxy runtime: no whole answer: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def expect(self, command: str, *ok: str, payload: str | None = None) -> str:
        """Run `command`; RuntimeCommandError unless it answered nothing or one of `ok`."""
        answer = await self.command(command, payload)
        if answer and not any(answer.startswith(prefix) for prefix in ok):
            raise RuntimeCommandError(command, answer)
        return answer

    # Typed helpers for what the reconciler needs ------------------------------------

    async def show_map(self, map_path: str, *, missing_ok: bool = False) -> dict[str, str]:
        """The entries of a loaded map file: key → value ({} for an unknown map, if
        `missing_ok`: the configuration running does not use it)."""
        answer = await self.command(f"show map {map_path}")
        if missing_ok and answer.startswith("Unknown map identifier"):
            return {}
        entries: dict[str, str] = {}
        for line in answer.splitlines():
            parts = line.split(" ")
            if len(parts) == 3 and parts[0].startswith("0x"):
                entries[parts[1]] = parts[2]
            elif line:
                raise RuntimeCommandError(f"show map {map_path}", answer)
        return entries

    async def show_servers(self, backend: str | None = None) -> list[ServerState]:
        """Every server (or one backend's) with its address, admin state and sessions."""
        answer = await self.command(f"show servers state {backend or ''}".strip())
        states = _parse_servers_state(answer)
        sessions = _parse_stat_sessions(await self.command("show stat -1 4 -1"))
        return [replace(s, sessions=sessions.get((s.backend, s.name), 0)) for s in states]

    async def certificates(self) -> set[str]:
        """The names (paths) of the certificates HAProxy holds in memory."""
        answer = await self.command("show ssl cert")
        return {line.strip() for line in answer.splitlines() if line and not line.startswith("#")}

    async def put_certificate(self, name: str, pem: str, crt_list: str | None = None) -> None:
        """Load or replace the certificate `name` (chain and key in one PEM) in memory.

        Handshakes under way keep the old one; the next ones get the new one. A new name
        is added to `crt_list`, where its SNI names select it (HAProxy reads them from the
        certificate). No file is read: the caller writes `name` too, for the next reload.
        """
        if name not in await self.certificates():
            await self.expect(f"new ssl cert {name}", "New empty certificate store")
            if crt_list is None:
                raise ValueError("a new certificate needs the crt-list that selects it")
            await self._commit(name, pem)
            answer = await self.command(f"add ssl crt-list {crt_list} {name}")
            if not answer.rstrip().endswith("Success!"):
                raise RuntimeCommandError(f"add ssl crt-list {crt_list} {name}", answer)
            return
        await self._commit(name, pem)

    async def _commit(self, name: str, pem: str) -> None:
        await self.expect(f"set ssl cert {name}", "Transaction", payload=pem)
        answer = await self.command(f"commit ssl cert {name}")
        if not answer.rstrip().endswith("Success!"):
            # A failed commit leaves the transaction open; the next `set` would build on it.
            await self.command(f"abort ssl cert {name}")
            raise RuntimeCommandError(f"commit ssl cert {name}", answer)


@dataclass(frozen=True)
class ServerState:
    """One server as `show servers state` and `show stat` report it."""

    backend: str
    name: str
    address: str
    port: int
    admin_state: int  # bit 0x01: forced maintenance, 0x08: forced drain
    sessions: int = 0

    @property
    def in_maintenance(self) -> bool:
        return bool(self.admin_state & 0x01)

    @property
    def draining(self) -> bool:
        return bool(self.admin_state & 0x08)

    @property
    def dial(self) -> str:
        return f"{self.address}:{self.port}"


def _parse_servers_state(answer: str) -> list[ServerState]:
    header: list[str] = []
    states = []
    for line in answer.splitlines():
        if line.startswith("# be_id"):
            header = line[2:].split(" ")
            continue
        if not header or not line or line.startswith("#"):
            continue
        row = dict(zip(header, line.split(" "), strict=False))
        states.append(
            ServerState(
                backend=row["be_name"],
                name=row["srv_name"],
                address=row["srv_addr"],
                port=int(row["srv_port"]),
                admin_state=int(row["srv_admin_state"]),
            )
        )
    return states


def _parse_stat_sessions(answer: str) -> dict[tuple[str, str], int]:
    lines = answer.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    current: dict[tuple[str, str], int] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        with contextlib.suppress(KeyError, ValueError):
            current[(row["pxname"], row["svname"])] = int(row["scur"] or 0)
    return current


async def master_command(master_socket: Path | str, command: str, timeout: float = 10.0) -> str:
    """One command on the master CLI; its answer ('' when the master closed, as on reload)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(master_socket))
    try:
        writer.write(b"prompt\n")
        await writer.drain()
        async with asyncio.timeout(timeout):
            await reader.readuntil(b"master> ")
        writer.write(command.encode() + b"\n")
        await writer.drain()
        try:
            async with asyncio.timeout(timeout):
                answer = await reader.readuntil(MASTER_PROMPT)
        except asyncio.IncompleteReadError as exc:
            return exc.partial.decode("utf-8", "replace")
        return answer[: -len(MASTER_PROMPT)].decode("utf-8", "replace")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
