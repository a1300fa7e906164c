"""Dyno metrics from the kernel: cgroup layouts, and the numbers `docker stats` prints."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from slipway.services.log_shipper import metrics
from slipway.services.log_shipper.metrics import Reading, cpu_percent, find_cgroup, memory
from tests.log_shipper.conftest import Dynos, new_id

CID = "4818ed0f9e4b7821221d0e09e9fa4374114d59f491ad0c09050497cc2a18deb6"
MB = 1024 * 1024


def reading(cpu_ns: int, system_ns: int, stats: dict[str, int], usage: int = 0) -> Reading:
    return Reading(
        cpu_ns=cpu_ns, system_ns=system_ns, online_cpus=2, usage=usage, stats=stats, limit=512 * MB
    )


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("0\n")


def test_cgroup_v1_with_cgroupfs_is_found(tmp_path: Path) -> None:
    """/sys/fs/cgroup/{cpuacct,memory}/docker/<id>: the layout of this machine's engine."""
    touch(tmp_path / "cpuacct" / "docker" / CID, "cpuacct.usage")
    (tmp_path / "memory" / "docker" / CID).mkdir(parents=True)
    found = find_cgroup(CID, tmp_path)
    assert found is not None and not found.v2
    assert (found.cpu, found.memory) == (
        tmp_path / "cpuacct" / "docker" / CID,
        tmp_path / "memory" / "docker" / CID,
    )
    assert find_cgroup("f" * 64, tmp_path) is None


@pytest.mark.parametrize("place", [f"system.slice/docker-{CID}.scope", f"docker/{CID}"])
def test_cgroup_v2_with_systemd_or_cgroupfs_is_found(tmp_path: Path, place: str) -> None:
    """The unified hierarchy: one folder per container, under systemd's slice or `docker/`."""
    touch(tmp_path, "cgroup.controllers")
    touch(tmp_path / place, "cpu.stat")
    found = find_cgroup(CID, tmp_path)
    assert found is not None and found.v2 and found.cpu == found.memory == tmp_path / place


def test_cpu_is_the_containers_share_of_the_hosts_time_times_its_cpus() -> None:
    """0.5 s of CPU in 2 s of host time (2 CPUs): 50% of one CPU, as `docker stats` says."""
    before, after = reading(0, 0, {}), reading(500_000_000, 2_000_000_000, {})
    assert cpu_percent(before, after) == pytest.approx(50.0)
    assert cpu_percent(after, after) == 0.0


def test_memory_in_use_leaves_inactive_file_pages_out_in_v1_and_v2() -> None:
    """v1 `total_inactive_file`, v2 `inactive_file`: usage minus them, as `docker stats`."""
    v1 = {"total_inactive_file": 2 * MB, "total_rss": 7 * MB, "total_cache": 3 * MB}
    assert memory(reading(0, 0, v1, usage=10 * MB)) == (8.0, 7.0, 3.0, 512.0)
    v2 = {"inactive_file": 1 * MB, "anon": 6 * MB, "file": 4 * MB}
    assert memory(reading(0, 0, v2, usage=10 * MB)) == (9.0, 6.0, 4.0, 512.0)


def test_the_hosts_cpu_time_counts_the_first_seven_fields() -> None:
    """user nice system idle iowait irq softirq, in clock ticks; steal and guests are not."""
    ticks = metrics._CLK_TCK
    line = f"cpu  {ticks} 0 0 {ticks} 0 0 0 {ticks} 0 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n"
    assert metrics.system_cpu_ns(line) == 2_000_000_000


def docker_stats(container_id: str) -> dict[str, Any]:
    done = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", container_id],
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def mib(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]i?B|B)", text.strip()).groups()  # type: ignore[union-attr]
    scale = {"B": 1 / MB, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}[unit]
    return float(number) * scale


@pytest.mark.docker
@pytest.mark.integration
async def test_a_busy_dynos_numbers_match_docker_stats(dynos: Dynos) -> None:
    """CPU and memory from the cgroup agree with `docker stats --no-stream`, within noise."""
    busy = "x = bytearray(40 * 1024 * 1024)\nwhile True:\n    pass\n"
    container_id = await dynos.raw(dynos.labels(new_id(), new_id(), "web.1"), busy)
    config = await dynos.docker.containers.container(container_id).show()
    assert config["State"]["Running"]
    await asyncio.sleep(1.0)  # the loop spins and the bytes are touched
    # Side by side, so both read over about the same second of a shared, busy machine.
    ours, theirs = await asyncio.gather(
        metrics.measure(container_id, None), asyncio.to_thread(docker_stats, container_id)
    )
    assert ours is not None
    cpu, now = ours
    total, _, _, quota = memory(now)
    docker_cpu = float(theirs["CPUPerc"].rstrip("%"))
    docker_used, docker_limit = (mib(part) for part in theirs["MemUsage"].split("/"))
    assert docker_cpu > 25  # busy indeed: one CPU spinning (on a machine shared with others)
    assert abs(cpu - docker_cpu) < 25, (cpu, docker_cpu)
    assert abs(total - docker_used) < 3, (total, docker_used)
    assert abs(quota - docker_limit) < 1, (quota, docker_limit)
