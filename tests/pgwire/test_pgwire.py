"""libs/pgwire.py against a real PostgreSQL 15 container made the way the scheduler makes one.

One container for the module (`slipway/addon-postgresql:bookworm`, scripts/build-addons),
configured by `services.scheduler.addons.container_config` with a temporary run folder
mounted at /run/slipway: the backup service's socket appears there, and these tests
connect to it as `slipway_backup`, as the backup service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest
import pytest_asyncio

from slipway.contracts import addons as ac
from slipway.contracts import backup as bk
from slipway.contracts.scheduler import LABEL_MANAGED
from slipway.libs import pgwire
from slipway.services.scheduler.addons import backup_role_sql, container_config, image
from tests.conftest import assert_eventually, new_scope, remove_scope_objects

pytestmark = [
    pytest.mark.docker,
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
]

START_TIMEOUT = 90.0  # two CPUs shared with other suites: initdb can be slow
DATABASE = "dtest"


@dataclass
class Server:
    """The module's database: its container's name and the host run folder with the socket."""

    container: str
    run_dir: Path

    async def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` as the superuser `postgres` inside the container (peer on its socket)."""
        done = await asyncio.to_thread(
            subprocess.run,
            ["docker", "exec", "-i", "-u", str(ac.POSTGRES_UID), self.container,
             "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d", database],
            input=sql, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    async def replication(self) -> pgwire.Connection:
        return await pgwire.connect(self.run_dir, user=bk.BACKUP_ROLE, replication=True)

    async def plain(self, database: str = DATABASE) -> pgwire.Connection:
        return await pgwire.connect(self.run_dir, user=bk.BACKUP_ROLE, database=database)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder as the scheduler makes it (here: root's, the backup user's default)."""
    path = tmp_path_factory.mktemp("pgrun")
    path.chmod(0o2770)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(run_dir: Path, postgres_image: str) -> AsyncIterator[Server]:
    """A database container configured by the scheduler's own container_config."""
    scope = new_scope()
    token = uuid.uuid4().hex[:8]
    want = ac.AddonDesired(
        addon_id=f"pgwire-{token}",
        addon_name=f"pgwire{token}",
        app_id=f"pgwire-app-{token}",
        app_name="pgwire",
        team_id="team",
        plan="postgresql:mini",
        database=DATABASE,
        user="utest",
    )
    labels = {LABEL_MANAGED: scope.managed, ac.LABEL_ADDON: want.addon_id}
    network = scope.network(want.app_id)
    volume = scope.container(f"pgwire-{token}")
    name = scope.container(f"pgwire-{token}")
    config = container_config(want, network, volume, labels, run_dir=run_dir, run_gid=0)
    async with aiodocker.Docker() as docker:
        await docker.networks.create({"Name": network, "Labels": labels})
        await docker.volumes.create({"Name": volume, "Labels": labels})  # type: ignore[no-untyped-call]
        try:
            container = await docker.containers.create(config, name=name)
            await container.start()
            found = Server(container=name, run_dir=run_dir)

            # Peer authentication refuses our `postgres` (we are root): 28000 once the
            # server takes connections (57P03 while it starts).
            async def answering() -> None:
                try:
                    conn = await pgwire.connect(run_dir, user="postgres", database="postgres")
                except OSError as exc:
                    raise AssertionError(str(exc)) from exc
                except pgwire.PgError as exc:
                    if exc.code != "28000":
                        raise AssertionError(str(exc)) from exc
                    return
                await conn.close()

            await assert_eventually(answering, timeout=START_TIMEOUT, interval=0.2)
            await found.psql(f"CREATE DATABASE {DATABASE};\n{backup_role_sql(DATABASE)}")
            yield found
        finally:
            await asyncio.to_thread(remove_scope_objects, scope)
            await aiodocker.volumes.DockerVolume(docker, volume).delete()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def postgres_image() -> str:
    """The add-on image, which scripts/build-addons makes (scripts/test runs it first)."""
    found = subprocess.run(["docker", "image", "inspect", image()], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"{image()} is missing: run scripts/build-addons")
    return image()


async def test_identify_system(server: Server) -> None:
    """IDENTIFY_SYSTEM names the cluster, its timeline and a WAL position."""
    async with await server.replication() as conn:
        system = await conn.identify_system()
    assert system.systemid.isdigit() and len(system.systemid) >= 10
    assert system.timeline == 1
    assert system.xlogpos > 0
    assert system.dbname is None


async def test_query_errors_carry_sqlstate_and_leave_the_connection_usable(server: Server) -> None:
    """An ErrorResponse is a PgError with its SQLSTATE; the next query still works."""
    async with await server.plain() as conn:
        with pytest.raises(pgwire.PgError) as caught:
            await conn.query("SELECT 1/0")
        assert caught.value.code == "22012"
        assert await conn.query("SELECT 41 + 1, NULL::text") == [("42", None)]


async def test_slot_creation_is_idempotent(server: Server) -> None:
    """Creating the slot twice is no error; it reserves WAL from the first creation."""
    slot = f"s{uuid.uuid4().hex[:8]}"
    async with await server.replication() as conn:
        assert await conn.slot_restart_lsn(slot) is None
        await conn.create_physical_slot(slot)
        first = await conn.slot_restart_lsn(slot)
        await conn.create_physical_slot(slot)
        assert first is not None and await conn.slot_restart_lsn(slot) == first
    async with await server.plain() as conn:
        assert await conn.slot_restart_lsn(slot) == first
        await conn.create_physical_slot(slot)  # the SQL way is idempotent too
    await server.psql(f"SELECT pg_drop_replication_slot('{slot}')")


async def test_base_backup_yields_a_tar_and_its_manifest(server: Server, tmp_path: Path) -> None:
    """BASE_BACKUP: start, one archive that `tar -t` reads (PG_VERSION, WAL), the manifest, end."""
    tar = tmp_path / "base.tar"
    pieces: list[pgwire.BackupPiece] = []
    manifest = b""
    async with await server.replication() as conn:
        with tar.open("wb") as out:
            async for piece in conn.base_backup(label="pgwire test"):
                if piece.kind == "data":
                    out.write(piece.data)
                elif piece.kind == "manifest":
                    manifest += piece.data
                else:
                    pieces.append(piece)
        # The connection is usable again after the backup.
        assert (await conn.identify_system()).timeline == 1
    assert [p.kind for p in pieces] == ["start", "archive", "end"]
    start, archive, end = pieces
    assert archive.name == "base.tar"
    assert start.timeline == end.timeline == 1
    assert 0 < start.lsn <= end.lsn
    listed = await asyncio.to_thread(
        subprocess.run, ["tar", "-tf", str(tar)], capture_output=True, text=True, check=True
    )
    names = listed.stdout.split()
    assert "PG_VERSION" in names and "backup_label" in names
    wal = pgwire.segment_name(start.timeline, start.lsn)
    assert f"pg_wal/{wal}" in names  # WAL true: the backup is consistent by itself
    parsed = json.loads(manifest)
    assert parsed["PostgreSQL-Backup-Manifest-Version"] == 1
    assert any(f["Path"] == "PG_VERSION" for f in parsed["Files"])


async def test_stream_wal_receives_an_insert_and_confirm_moves_the_slot(server: Server) -> None:
    """WAL of an INSERT made after streaming started arrives; confirm() moves restart_lsn."""
    slot = f"s{uuid.uuid4().hex[:8]}"
    marker = f"canary-{uuid.uuid4().hex}"
    async with await server.replication() as conn:
        await conn.create_physical_slot(slot)
        system = await conn.identify_system()
        stream = conn.stream_wal(slot=slot, start_lsn=system.xlogpos, timeline=system.timeline)
        await stream.start()
        await server.psql(
            "CREATE TABLE IF NOT EXISTS wal_test (t text);"  # noqa: S608 - our own uuid
            f" INSERT INTO wal_test VALUES ('{marker}')",
            database=DATABASE,
        )
        seen = b""
        end = system.xlogpos
        async for piece in stream:
            assert piece.start_lsn == end  # contiguous
            seen += piece.data
            end = piece.start_lsn + len(piece.data)
            if marker.encode() in seen:
                break
        before = await _restart_lsn(server, slot)
        assert before is not None and before < end
        stream.confirm(end)

        async def moved() -> None:
            assert await _restart_lsn(server, slot) == end

        await assert_eventually(moved, timeout=30)
        await stream.close()
        # After CopyDone the connection takes commands again.
        assert (await conn.identify_system()).timeline == system.timeline
    await server.psql(f"SELECT pg_drop_replication_slot('{slot}')")


async def _restart_lsn(server: Server, slot: str) -> int | None:
    async with await server.plain("postgres") as conn:
        rows = await conn.query(
            f"SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"  # noqa: S608
        )
    assert rows and rows[0][0]
    return pgwire.parse_lsn(rows[0][0])


async def test_a_password_request_is_refused_clearly(server: Server) -> None:
    """A server asking for a password (SCRAM) gets no answer: PgError 28000 saying trust only."""
    await server.psql(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'scramuser') THEN"
        " CREATE ROLE scramuser LOGIN PASSWORD 'secret'; END IF; END$$;\n"
        "CREATE TEMP TABLE hba (line text);\n"
        "INSERT INTO hba VALUES ('local all scramuser scram-sha-256');\n"
        "INSERT INTO hba SELECT *"
        " FROM regexp_split_to_table(pg_read_file('pg_hba.conf'), E'\\n');\n"
        "COPY (SELECT line FROM hba) TO '/var/lib/postgresql/data/pg_hba.conf';\n"
        "SELECT pg_reload_conf();\n"
    )
    with pytest.raises(pgwire.PgError) as caught:
        await pgwire.connect(server.run_dir, user="scramuser", database="postgres")
    assert caught.value.code == "28000"
    assert "SASL" in caught.value.message and "trust only" in caught.value.message
    # A role pg_hba.conf does not know at all: the server's own refusal, as a PgError.
    with pytest.raises(pgwire.PgError) as refused:
        await pgwire.connect(server.run_dir, user="nobody", database="postgres")
    assert refused.value.code == "28000"


async def test_base_backup_needs_a_replication_connection(server: Server) -> None:
    """Replication commands on a plain connection are refused before anything is sent."""
    async with await server.plain() as conn:
        with pytest.raises(pgwire.PgError):
            conn.base_backup(label="x")
        with pytest.raises(pgwire.PgError):
            conn.stream_wal(slot="x", start_lsn=0, timeline=1)
        assert await conn.query("SELECT 1") == [("1",)]


async def test_keepalive_requests_are_answered(server: Server) -> None:
    """With a 1 s wal_sender_timeout only answers to the server's keepalives keep a stream up."""
    slot = f"s{uuid.uuid4().hex[:8]}"
    await server.psql("ALTER SYSTEM SET wal_sender_timeout = '1s'; SELECT pg_reload_conf()")
    try:
        async with await server.replication() as conn:
            await conn.create_physical_slot(slot)
            system = await conn.identify_system()
            stream = conn.stream_wal(slot=slot, start_lsn=system.xlogpos, timeline=system.timeline)
            await stream.start()

            async def drain() -> None:
                async for _ in stream:
                    pass

            reader = asyncio.create_task(drain())
            replies: set[str] = set()

            async def answered_several_times() -> None:
                assert not reader.done(), reader  # the server ended the stream
                rows = await server.psql(
                    "SELECT reply_time FROM pg_stat_replication"  # noqa: S608 - our own name
                    f" WHERE pid = (SELECT active_pid FROM pg_replication_slots"
                    f" WHERE slot_name = '{slot}')"
                )
                replies.add(rows.strip())
                assert len(replies - {""}) >= 4

            try:
                await assert_eventually(answered_several_times, timeout=30, interval=0.3)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            await stream.close()
    finally:
        await server.psql("ALTER SYSTEM RESET wal_sender_timeout; SELECT pg_reload_conf()")
        await server.psql(f"SELECT pg_drop_replication_slot('{slot}')")
