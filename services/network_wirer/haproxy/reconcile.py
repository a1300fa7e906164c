"""Make a running HAProxy route as desired, through its runtime API only.

    running = await reconciler.read()          # show map, show backend, show servers state
    layout = desired_layout(routes, running)   # pure: which app keeps which backend
    plan = plan_changes(layout, running)       # pure: the runtime commands' content
    await apply(runtime, plan, options)        # add/enable servers, set/add/del map, drain

Everything HAProxy needs is read back from HAProxy itself, so a crash of either side
costs nothing: the next pass reads what runs and finishes the job, and a pass over an
HAProxy that already matches sends no command at all.

Order matters for clients: a new dyno's server is added and enabled before the map
points a host at it, a host leaves the map before its servers are drained, and a
server is deleted only once it is in maintenance with no connection left (HAProxy
refuses otherwise, and the next pass tries again: `Outcome.pending`).

A backend belongs to the app whose hosts point at it. A backend no host points at and
with no server left is free; when none is free, `Reconciler` grows the pool: it writes
the configuration for the whole desired layout and reloads seamlessly (the only reload).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from slipway.libs.haproxy import HAProxyServer, Runtime, ServerState
from slipway.services.network_wirer.haproxy.config import (
    HAProxyOptions,
    Layout,
    Server,
    State,
    backend_index,
    backend_name,
    map_text,
    map_value,
    page_files,
    render,
    server_name,
    server_options,
    split_value,
    valid_hosts,
)
from slipway.services.network_wirer.pages import Pages
from slipway.services.network_wirer.routes import AppRoute

log = structlog.get_logger("slipway.network_wirer.haproxy")

# Bytes per `add map` payload: one round trip for hundreds of entries, while the whole
# command stays within HAProxy's buffer (tune.bufsize, 16 KB): a longer one is cut and
# the session closed.
MAP_PAYLOAD = 8 * 1024
STILL_CONNECTED = "Server still has connections"
MAINTENANCE = 0x01  # srv_admin_state: forced maintenance


@dataclass(frozen=True)
class Running:
    """What HAProxy runs now, as read back through the runtime API."""

    pool_size: int
    hosts: Mapping[str, str]
    servers: tuple[ServerState, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The runtime changes that take `Running` to a `Layout`, in the order they apply."""

    add_servers: tuple[tuple[str, Server], ...] = ()
    ready_servers: tuple[tuple[str, str], ...] = ()
    map_add: tuple[tuple[str, str], ...] = ()
    map_set: tuple[tuple[str, str], ...] = ()
    map_del: tuple[str, ...] = ()
    remove: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.add_servers,
                self.ready_servers,
                self.map_add,
                self.map_set,
                self.map_del,
                self.remove,
            )
        )


@dataclass
class Outcome:
    """What one pass did: commands sent, whether it reloaded, and whether work remains."""

    commands: int = 0
    reloaded: bool = False
    draining: list[tuple[str, str]] = field(default_factory=list)  # in flight: run again
    layout: Layout | None = field(default=None, repr=False)

    @property
    def pending(self) -> bool:
        return bool(self.draining)


def route_state(route: AppRoute) -> str:
    if route.maintenance:
        return State.MAINTENANCE
    if route.upstreams:
        return State.UP
    return State.CRASHED if route.crashed else State.NO_WEB


def grown_pool(size: int, needed: int) -> int:
    """The next pool size: doubled (reloads stay rare as apps grow), at least `needed`."""
    return max(size * 2, needed, 16)


def desired_layout(routes: Iterable[AppRoute], running: Running) -> Layout:
    """The layout for `routes`, keeping each app on the backend it already has.

    The pool grows (the caller reloads) only when more apps need a backend than are free.
    """
    routes = list(routes)
    owner: dict[str, str] = {}
    taken: set[str] = set()
    for route in routes:
        # The backend of its first host still in the map that no other app took (a
        # plain loop: this runs once per app, 10,000 times a pass).
        for host in route.hosts:
            value = running.hosts.get(host.lower())
            if value is None:
                continue
            backend = split_value(value)[0]
            index = backend_index(backend)
            if index is not None and index < running.pool_size and backend not in taken:
                owner[route.app_id] = backend
                taken.add(backend)
                break
    # An app none of whose hosts is in the map (a lost or edited map) is recognised by
    # its dynos' servers, so that it keeps them rather than starting a backend afresh.
    holding: dict[str, set[str]] = {}
    for state in running.servers:
        holding.setdefault(state.name, set()).add(state.backend)
    for route in routes:
        if route.app_id in owner:
            continue
        dynos = {server_name(u.dyno, u.dial) for u in route.upstreams}
        found = Counter(b for name in dynos for b in holding.get(name, ()) if b not in taken)
        for backend, _ in found.most_common(1):
            owner[route.app_id] = backend
            taken.add(backend)
    # Not free: pointed at by any host (a removed app's host leaves the map this pass),
    # or still holding servers (draining ones finish their requests first).
    busy = taken | {split_value(v)[0] for v in running.hosts.values()}
    busy |= {s.backend for s in running.servers}
    homeless = [r for r in routes if r.app_id not in owner]
    free = [backend_name(i) for i in range(running.pool_size) if backend_name(i) not in busy]
    pool_size = running.pool_size
    if len(homeless) > len(free):
        pool_size = grown_pool(running.pool_size, running.pool_size + len(homeless) - len(free))
        free += [backend_name(i) for i in range(running.pool_size, pool_size)]
    for route, backend in zip(homeless, free, strict=False):
        owner[route.app_id] = backend

    hosts: dict[str, str] = {}
    servers: dict[str, frozenset[Server]] = {}
    for route in routes:
        backend = owner[route.app_id]
        for host in valid_hosts(route.hosts):
            hosts.setdefault(host, map_value(backend, route_state(route)))
        if route.upstreams:
            servers[backend] = frozenset(
                Server(server_name(u.dyno, u.dial), u.dial) for u in route.upstreams
            )
    return Layout(pool_size=pool_size, hosts=hosts, servers=servers)


def plan_changes(layout: Layout, running: Running) -> Plan:
    """The runtime commands' content that make `running` hold `layout` (pure)."""
    current = {(s.backend, s.name): s for s in running.servers}
    wanted = {(backend, s.name): s for backend, group in layout.servers.items() for s in group}
    add = tuple(
        (backend, server)
        for (backend, name), server in sorted(wanted.items())
        if (backend, name) not in current
    )
    ready = tuple(
        key
        for key in sorted(wanted)
        if key in current and (current[key].in_maintenance or current[key].draining)
    )
    remove = tuple(
        key
        for key, state in sorted(current.items())
        if key not in wanted and backend_index(state.backend) is not None
    )
    map_add = tuple(sorted((h, v) for h, v in layout.hosts.items() if h not in running.hosts))
    map_set = tuple(
        sorted(
            (h, v) for h, v in layout.hosts.items() if h in running.hosts and running.hosts[h] != v
        )
    )
    map_del = tuple(sorted(h for h in running.hosts if h not in layout.hosts))
    return Plan(
        add_servers=add,
        ready_servers=ready,
        map_add=map_add,
        map_set=map_set,
        map_del=map_del,
        remove=remove,
    )


async def apply(runtime: Runtime, plan: Plan, options: HAProxyOptions, running: Running) -> Outcome:
    """Send `plan`'s commands in the order that never routes a client to nowhere."""
    outcome = Outcome()
    extra = server_options(options)
    map_path = options.map_path
    states = {(s.backend, s.name): s for s in running.servers}

    async def run(command: str, *ok: str, payload: str | None = None) -> str:
        outcome.commands += 1
        return await runtime.expect(command, *ok, payload=payload)

    for backend, server in plan.add_servers:
        await run(
            f"add server {backend}/{server.name} {server.dial} {extra}".rstrip(),
            "New server registered",
        )
        if extra:
            await run(f"enable health {backend}/{server.name}")
        await run(f"enable server {backend}/{server.name}")
    for backend, name in plan.ready_servers:
        await run(f"set server {backend}/{name} state ready")
    for payload in map_payloads(f"{h} {v}\n" for h, v in plan.map_add):
        await run(f"add map {map_path}", payload=payload)
    for host, value in plan.map_set:
        await run(f"set map {map_path} {host} {value}")
    for host in plan.map_del:
        await run(f"del map {map_path} {host}")
    for backend, name in plan.remove:
        # Maintenance drains: no new request goes to the dyno, those in flight finish
        # (HAProxy cuts them only when told `shutdown sessions`), and `del server` is
        # refused until the last one has.
        state = states.get((backend, name))
        if state is None or not state.in_maintenance:
            await run(f"set server {backend}/{name} state maint")
        answer = await run(f"del server {backend}/{name}", "Server deleted", STILL_CONNECTED)
        if answer.startswith(STILL_CONNECTED):
            outcome.draining.append((backend, name))
    return outcome


def map_payloads(lines: Iterable[str]) -> Iterator[str]:
    """`lines` joined into payloads of at most MAP_PAYLOAD bytes."""
    batch: list[str] = []
    size = 0
    for line in lines:
        if batch and size + len(line) > MAP_PAYLOAD:
            yield "".join(batch)
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield "".join(batch)


def after(layout: Layout, outcome: Outcome) -> Running:
    """What HAProxy runs once `outcome`'s pass applied `layout` (servers still draining
    stay, in maintenance)."""
    servers = [
        ServerState(backend, s.name, *_address(s.dial), admin_state=0)
        for backend, group in layout.servers.items()
        for s in group
    ]
    servers += [
        ServerState(backend, name, "", 0, admin_state=MAINTENANCE)
        for backend, name in outcome.draining
    ]
    return Running(pool_size=layout.pool_size, hosts=dict(layout.hosts), servers=tuple(servers))


def _address(dial: str) -> tuple[str, int]:
    host, _, port = dial.rpartition(":")
    return host, int(port)


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` whole (a reader never sees half a file)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def write_files(layout: Layout, options: HAProxyOptions, pages: Pages) -> None:
    """Write what HAProxy reads at start or reload: configuration, host map, pages.

    The certificates (the default one, the crt-list) are written by the TLS side; the
    crt-list is created empty here when missing, as HAProxy refuses a missing one.
    """
    for name, data in page_files(pages).items():
        _write(options.pages_dir / name, data, 0o644)
    if not options.crt_list.exists():
        _write(options.crt_list, b"")
    _write(options.map_path, map_text(layout.hosts).encode())
    _write(options.paths.config, render(layout, options).encode())


class Reconciler:
    """Drives one HAProxy: reads it back, plans, applies; grows the pool by reloading.

    After a pass it remembers what HAProxy holds, so the next pass reads back only the
    worker's PID (`show info`): a full read of 10,000 map entries and servers costs
    hundreds of milliseconds, a route change should not. A new worker (reload, restart),
    a refused command or `full=True` (the periodic pass, to catch any drift) reads all.
    """

    def __init__(self, server: HAProxyServer, options: HAProxyOptions, pages: Pages) -> None:
        self.server = server
        self.options = options
        self.pages = pages
        self.runtime = server.runtime()
        self.reloads = 0
        self.full_reads = 0
        self._view: Running | None = None
        self._worker = ""

    async def close(self) -> None:
        await self.runtime.close()

    async def read(self) -> Running:
        """What HAProxy runs: its pool of backends, host map and dyno servers."""
        self.full_reads += 1
        backends = (await self.runtime.command("show backend")).splitlines()
        indexes = [i for i in (backend_index(b.strip()) for b in backends) if i is not None]
        hosts = await self.runtime.show_map(str(self.options.map_path), missing_ok=True)
        servers = await self.runtime.show_servers()
        return Running(
            pool_size=max(indexes, default=-1) + 1,
            hosts=hosts,
            servers=tuple(s for s in servers if backend_index(s.backend) is not None),
        )

    async def _worker_pid(self) -> str:
        for line in (await self.runtime.command("show info")).splitlines():
            if line.startswith("Pid:"):
                return line.split(":", 1)[1].strip()
        return ""

    async def _running(self, full: bool) -> Running:
        worker = await self._worker_pid()
        if full or self._view is None or worker != self._worker:
            self._view = await self.read()
            self._worker = worker
        return self._view

    async def reconcile(self, routes: Iterable[AppRoute], *, full: bool = False) -> Outcome:
        """One pass: HAProxy routes `routes` afterwards (pending: drained servers remain)."""
        routes = list(routes)
        try:
            running = await self._running(full)
            layout = desired_layout(routes, running)
            reloaded = False
            if layout.pool_size > running.pool_size:
                # 2.6 cannot add a backend at runtime: write the whole layout, reload once.
                write_files(layout, self.options, self.pages)
                await self.server.reload()
                await self.runtime.close()  # the old worker's session ends with it
                self.reloads += 1
                reloaded = True
                log.info("router.pool_grown", backends=layout.pool_size, apps=len(routes))
                running = await self._running(full=True)
                layout = desired_layout(routes, running)
            outcome = await apply(
                self.runtime, plan_changes(layout, running), self.options, running
            )
        except BaseException:
            self._view = None  # whatever HAProxy holds now, the next pass reads it back
            raise
        self._view = after(layout, outcome)
        outcome.reloaded = reloaded
        outcome.layout = layout
        return outcome
