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
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Set
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
    options_digest,
    page_files,
    render,
    server_name,
    server_options,
    split_value,
    valid_hosts,
    written_digest,
)
from slipway.services.network_wirer.names import plain_dns_name
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


def desired_layout(
    routes: Iterable[AppRoute], running: Running, busy_elsewhere: Set[str] = frozenset()
) -> Layout:
    """The layout for `routes`, keeping each app on the backend it already has.

    The pool grows (the caller reloads) only when more apps need a backend than are free.
    `busy_elsewhere`: backends held by apps left out of `routes` and `running` (a pass
    over the changed apps only), never given to another app.
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
    busy |= busy_elsewhere
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
            hosts.setdefault(host, map_value(backend, route_state(route), route.hsts))
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
        if options.check_interval > 0:
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


CHALLENGE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")  # base64url, RFC 8555 8.3
KEY_AUTHORIZATION = re.compile(r"^[A-Za-z0-9_-]{1,128}(?:\.[A-Za-z0-9_-]{1,128})?\Z")


def _check_challenge(token: str, key_authorization: str) -> None:
    # Both come from the ACME server; checked anyway, as they land in a runtime command.
    if not CHALLENGE_TOKEN.match(token) or not KEY_AUTHORIZATION.match(key_authorization):
        raise ValueError("an ACME token and key authorization are base64url")


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
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
        write_private(options.pages_dir / name, data, 0o644)
    if not options.crt_list.exists():
        write_private(options.crt_list, b"")
    if not options.acme_map_path.exists():
        # Challenges live in HAProxy's memory only (a reload mid-order fails that order,
        # which is retried); the file exists because HAProxy refuses a missing map.
        write_private(options.acme_map_path, b"")
    write_private(options.map_path, map_text(layout.hosts).encode())
    write_private(options.paths.config, render(layout, options).encode())


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
        self.digest = options_digest(options)
        self.reloads = 0
        self.full_reads = 0
        self.partial_passes = 0  # passes over the changed apps only
        self._view: Running | None = None
        self._worker = ""
        # The last pass's routes (by app) and layout: the next pass looks at changed apps only.
        self._routes: dict[str, AppRoute] | None = None
        self._layout: Layout | None = None
        self._owners_cache: dict[str, set[str]] = {}
        self._owners_of: Layout | None = None
        self._draining: set[tuple[str, str]] = set()

    async def close(self) -> None:
        await self.runtime.close()

    @property
    def view(self) -> Running | None:
        """What the reconciler believes HAProxy holds (None: it reads it back next pass)."""
        return self._view

    # ACME and certificates: the same runtime session, no reload ------------------------

    async def set_challenge(self, token: str, key_authorization: str) -> None:
        """Answer `GET /.well-known/acme-challenge/<token>` with `key_authorization`."""
        _check_challenge(token, key_authorization)
        acme_map = self.options.acme_map_path
        # `add map` would keep an older entry for the token beside the new one.
        await self.runtime.expect(f"del map {acme_map} {token}", "Key not found")
        await self.runtime.expect(f"add map {acme_map} {token} {key_authorization}")

    async def clear_challenge(self, token: str) -> None:
        """Stop answering `token` (an unknown token is fine: clearing twice is harmless)."""
        _check_challenge(token, "x")
        await self.runtime.expect(f"del map {self.options.acme_map_path} {token}", "Key not found")

    async def install_certificate(self, domain: str, pem: str) -> Path:
        """Serve `pem` (chain, then key) for `domain` by SNI: written for the next reload,
        then loaded or replaced in memory with no reload. The certificate's file."""
        domain = plain_dns_name(domain, wildcard=True)
        crt_list = self.options.crt_list
        path = crt_list.parent / f"{domain.replace('*', '_wildcard_')}.pem"
        write_private(path, pem.encode())
        listed = crt_list.read_text().splitlines() if crt_list.exists() else []
        if str(path) not in listed:
            write_private(crt_list, "".join(f"{line}\n" for line in [*listed, str(path)]).encode())
        await self.runtime.put_certificate(str(path), pem, str(crt_list))
        return path

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
            view = self._view
            running = await self._running(full)
            if running is view and self._routes is not None and self._layout is not None:
                outcome = await self._changed_only(routes, running, self._routes, self._layout)
                if outcome is not None:
                    return outcome
            layout = desired_layout(routes, running)
            reloaded = False
            stale = written_digest(self.options.paths.config) != self.digest
            if layout.pool_size > running.pool_size or stale:
                # 2.6 cannot add a backend at runtime: write the whole layout, reload once.
                # The same when the file was written under other settings: HAProxy reads
                # timeouts and server options from it only.
                write_files(layout, self.options, self.pages)
                await self.server.reload()
                await self.runtime.close()  # the old worker's session ends with it
                self.reloads += 1
                reloaded = True
                log.info(
                    "router.reloaded",
                    backends=layout.pool_size,
                    apps=len(routes),
                    settings_changed=stale,
                )
                running = await self._running(full=True)
                layout = desired_layout(routes, running)
            outcome = await apply(
                self.runtime, plan_changes(layout, running), self.options, running
            )
        except BaseException:
            self._view = None  # whatever HAProxy holds now, the next pass reads it back
            self._routes = self._layout = None
            raise
        self._view = after(layout, outcome)
        self._remember(routes, layout, outcome)
        outcome.reloaded = reloaded
        outcome.layout = layout
        return outcome

    def _remember(self, routes: list[AppRoute], layout: Layout, outcome: Outcome) -> None:
        by_app = {route.app_id: route for route in routes}
        ok = len(by_app) == len(routes)
        self._routes, self._layout = (by_app, layout) if ok else (None, None)
        # Servers in maintenance still finishing requests: every next pass retries them.
        self._draining = set(outcome.draining)

    async def _changed_only(
        self,
        routes: list[AppRoute],
        running: Running,
        before: Mapping[str, AppRoute],
        layout: Layout,
    ) -> Outcome | None:
        """The pass for the apps that changed since the last one, when that is the same as
        a whole pass; None when it might not be (the caller makes a whole pass).

        A whole pass over 10,000 apps costs ~100 ms of Python for one app's change; this
        one costs a comparison per app. It is equivalent when every host a changed app
        had or wants belongs to changed apps only and no backend is missing (a pool to
        grow); servers of other apps still draining are retried by name.
        tests/network_wirer/haproxy/test_incremental.py checks each pass against a whole one.
        """
        now = {route.app_id: route for route in routes}
        if len(now) != len(routes):
            return None
        changed = [app for app, route in now.items() if before.get(app) != route]
        changed += [app for app in before if app not in now]
        if len(changed) * 4 > len(now) + 4:
            return None  # many changes: a whole pass costs about the same
        old_hosts = {h for app in changed if app in before for h in valid_hosts(before[app].hosts)}
        new_routes = [now[app] for app in changed if app in now]
        new_hosts = {h for route in new_routes for h in valid_hosts(route.hosts)}
        mine = {split_value(layout.hosts[h])[0] for h in old_hosts if h in layout.hosts}
        if any(h not in layout.hosts for h in old_hosts):
            return None  # a host another app had first: the whole pass decides
        owners = self._owners(layout)
        for backend in mine:
            if not owners.get(backend, set()) <= old_hosts:
                return None  # the backend also serves an unchanged app's host
        for host in new_hosts - old_hosts:
            if host in layout.hosts:
                return None  # wanted from an unchanged app
        if any(
            route.app_id in before and not valid_hosts(before[route.app_id].hosts)
            for route in new_routes
        ):
            return None  # an app without a host: its backend is known by servers only
        sub = Running(
            pool_size=running.pool_size,
            hosts={h: running.hosts[h] for h in old_hosts if h in running.hosts},
            servers=tuple(s for s in running.servers if s.backend in mine),
        )
        elsewhere = {split_value(v)[0] for v in layout.hosts.values()} | set(layout.servers)
        elsewhere |= {s.backend for s in running.servers}
        sub_layout = desired_layout(new_routes, sub, elsewhere - mine)
        if sub_layout.pool_size > running.pool_size:
            return None
        outcome = await apply(self.runtime, plan_changes(sub_layout, sub), self.options, sub)
        self.partial_passes += 1
        # Servers of unchanged apps still draining (in maintenance since an earlier pass):
        # deleted once idle, as a whole pass would.
        deleted: set[tuple[str, str]] = set()
        for backend, name in sorted(self._draining):
            if backend in mine:
                continue  # the sub-plan above handled it
            outcome.commands += 1
            answer = await self.runtime.expect(
                f"del server {backend}/{name}", "Server deleted", STILL_CONNECTED
            )
            if answer.startswith(STILL_CONNECTED):
                outcome.draining.append((backend, name))
            else:
                deleted.add((backend, name))
        hosts = {h: v for h, v in layout.hosts.items() if h not in old_hosts}
        hosts.update(sub_layout.hosts)
        servers = {b: g for b, g in layout.servers.items() if b not in mine}
        servers.update(sub_layout.servers)
        merged = Layout(pool_size=layout.pool_size, hosts=hosts, servers=servers)
        # The view too, without rebuilding every server's state (after() would).
        kept = tuple(
            s
            for s in running.servers
            if s.backend not in mine and (s.backend, s.name) not in deleted
        )
        self._view = Running(running.pool_size, hosts, kept + after(sub_layout, outcome).servers)
        self._remember(routes, merged, outcome)
        outcome.layout = merged
        return outcome

    def _owners(self, layout: Layout) -> dict[str, set[str]]:
        """backend → the hosts pointing at it, for `layout` (kept until it changes)."""
        if self._owners_of is not layout:
            owners: dict[str, set[str]] = {}
            for host, value in layout.hosts.items():
                owners.setdefault(split_value(value)[0], set()).add(host)
            self._owners_cache, self._owners_of = owners, layout
        return self._owners_cache
