"""The supervisor with real processes: tiny python children and a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from slipway.libs.health import wait_for_services
from slipway.libs.natsserver import NatsServer
from slipway.libs.supervisor import Backoff, ChildSpec, Supervisor
from tests.conftest import assert_eventually

pytestmark = pytest.mark.integration

# A child that records its starts (and its graceful stops) in a shared file. "crash" exits
# at once; "serve" runs until SIGTERM. The handler is installed before the start is
# recorded, so a test that saw the start knows a SIGTERM will be handled.
CHILD = """
import signal, sys, time
from pathlib import Path

mode, name, record = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def note(line):
    with record.open("a") as f:
        f.write(line + "\\n")

def stop(signum, frame):
    note(f"stop {name}")
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
note(f"start {name} {time.time()}")
if mode == "crash":
    sys.exit(1)
while True:
    signal.pause()
"""


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def child_argv(script: Path, mode: str, name: str, record: Path) -> tuple[str, ...]:
    return (sys.executable, str(script), mode, name, str(record))


def lines(record: Path, kind: str) -> list[list[str]]:
    if not record.exists():
        return []
    return [line.split()[1:] for line in record.read_text().splitlines() if line.startswith(kind)]


def alive(pid: int) -> bool:
    """True if `pid` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_in(pidfile: Path) -> int:
    return int(pidfile.read_text().split()[0])


@contextlib.asynccontextmanager
async def supervisor_process(
    home: Path, children: list[tuple[str, tuple[str, ...]]]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m slipway.libs.supervisor` with these children and its own nats-server."""
    args = [f"--child={name}={shlex.join(argv)}" for name, argv in children]
    with (home.parent / "supervisor.stderr").open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "slipway.libs.supervisor",
            "--home",
            str(home),
            "--nats-port",
            "0",
            "--grace",
            "5",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "SLIPWAY_LOG_FORMAT": "json"},
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        assert process.stdout is not None
        await process.stdout.read()


async def test_crashed_child_is_restarted_with_growing_backoff(
    tmp_path: Path, child_script: Path
) -> None:
    """A child that keeps crashing is started again after delays that double each time."""
    record = tmp_path / "record"
    supervisor = Supervisor(
        tmp_path / "home",
        [ChildSpec("crasher", child_argv(child_script, "crash", "crasher", record))],
        backoff=Backoff(initial=0.1, maximum=10.0, reset_after=60.0),
    )
    with capture_logs() as logs:
        running = asyncio.create_task(supervisor.run(install_signals=False))

        def started_five_times() -> None:
            assert len(lines(record, "start")) >= 5

        await assert_eventually(started_five_times, timeout=15)
        supervisor.stop()
        await running

    delays = [e["restart_in"] for e in logs if e["event"] == "child.exited"][:4]
    assert delays == [0.1, 0.2, 0.4, 0.8]
    starts = [float(fields[1]) for fields in lines(record, "start")][:5]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # Each start really waited at least its delay after the one before.
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=True)), (gaps, delays)
    assert (tmp_path / "home" / "logs" / "crasher.log").exists()


async def test_sigterm_stops_children_in_reverse_order_and_exits_zero(
    tmp_path: Path, child_script: Path
) -> None:
    """SIGTERM stops the children last-started first, then nats-server, and exits 0."""
    home, record = tmp_path / "home", tmp_path / "record"
    children = [
        (name, child_argv(child_script, "serve", name, record)) for name in ("first", "second")
    ]
    async with supervisor_process(home, children) as supervisor:

        def all_running() -> None:
            assert sorted(fields[0] for fields in lines(record, "start")) == ["first", "second"]
            for name in ("first", "second", "nats-server"):
                assert (home / "run" / f"{name}.pid").exists()

        await assert_eventually(all_running)
        pids = {
            name: pid_in(home / "run" / f"{name}.pid")
            for name in ("first", "second", "nats-server")
        }
        assert all(alive(pid) for pid in pids.values())
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(supervisor.wait(), 30)

    assert code == 0
    assert [fields[0] for fields in lines(record, "stop")] == ["second", "first"]
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert sorted(p.name for p in (home / "run").iterdir()) == []


async def test_second_supervisor_refuses_to_start_while_one_runs(
    tmp_path: Path, child_script: Path
) -> None:
    """A second supervisor on the same home says where the running one is and exits 0."""
    home, record = tmp_path / "home", tmp_path / "record"
    children = [("only", child_argv(child_script, "serve", "only", record))]
    async with supervisor_process(home, children) as first:

        def running() -> None:
            assert lines(record, "start")
            assert (home / "run" / "supervisor.pid").read_text().strip() == str(first.pid)

        await assert_eventually(running)
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "slipway.libs.supervisor",
            "--home",
            str(home),
            "--nats-port",
            "0",
            f"--child=only={shlex.join(children[0][1])}",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(second.communicate(), 20)

        assert second.returncode == 0
        assert f"already running (pid {first.pid})" in out.decode()
        assert first.returncode is None
        assert (home / "run" / "supervisor.pid").read_text().strip() == str(first.pid)
        assert len(lines(record, "start")) == 1


async def test_crashed_nats_server_is_restarted_on_the_same_port(tmp_path: Path) -> None:
    """A nats-server that dies is started again on its port, so clients reconnect to one URL."""
    nats = NatsServer(tmp_path / "nats")
    supervisor = Supervisor(tmp_path / "home", [], nats=nats, backoff=Backoff(initial=0.1))
    running = asyncio.create_task(supervisor.run(install_signals=False))
    try:
        await supervisor.started.wait()
        url, first = nats.url, pid_in(tmp_path / "home" / "run" / "nats-server.pid")
        os.kill(first, signal.SIGKILL)

        def restarted() -> None:
            assert nats.process is not None and nats.process.pid != first
            assert nats.process.poll() is None

        await assert_eventually(restarted)
        assert nats.url == url
        report = await wait_for_services(url, [], timeout=5)
        assert report.nats_reachable
    finally:
        supervisor.stop()
        await running
    assert nats.process is None


async def test_each_service_child_gets_its_own_nats_user(tmp_path: Path) -> None:
    """Under a hardened nats-server a service child connects as itself, and only as itself."""
    record = tmp_path / "env.txt"
    script = (
        "import os, sys; from pathlib import Path; "
        "Path(sys.argv[1]).write_text(os.environ.get('SLIPWAY_NATS_USER', '-') + ' ' "
        "+ os.environ.get('SLIPWAY_NATS_PASSWORD', '-')); import signal; signal.pause()"
    )
    nats = NatsServer(tmp_path / "nats", hardened=True)
    supervisor = Supervisor(
        tmp_path / "home",
        [ChildSpec("keyring", (sys.executable, "-c", script, str(record)))],
        nats=nats,
    )
    running = asyncio.create_task(supervisor.run(install_signals=False))
    try:
        await supervisor.started.wait()

        def written() -> None:
            assert record.exists() and record.read_text()

        await assert_eventually(written)
        user, password = record.read_text().split()
        assert user == "keyring" and password == nats.users["keyring"]
        assert password != nats.users["operator"]
    finally:
        supervisor.stop()
        await running
