"""The container spec, names, labels and backoff: pure functions, no engine."""

from __future__ import annotations

from slipway.contracts import dynoinit
from slipway.contracts import scheduler as sc
from slipway.contracts.scope import Scope
from slipway.services.scheduler import containers, health
from slipway.services.scheduler.containers import DynoSpec

SPEC = DynoSpec(
    app_id="a1",
    app_name="shop",
    team_id="t1",
    release=7,
    process_type="web",
    index=2,
    size="standard-2x",
    image="img",
    command="python3 app.py",
    host_id="h1",
)


def test_backoff_doubles_and_is_capped() -> None:
    waits = [health.backoff(n, base=1.0, cap=30.0) for n in range(8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert health.backoff(10_000, base=1.0, cap=30.0) == 30.0


def test_names_carry_app_release_and_dyno_and_never_repeat() -> None:
    names = {containers.container_name(SPEC, Scope()) for _ in range(50)}
    assert len(names) == 50
    assert all(name.startswith("slipway-shop-v7-web.2-") for name in names)


def test_names_of_a_scope_start_with_it() -> None:
    """A scoped installation's dyno containers are named `slipway-<scope>-…`."""
    assert containers.container_name(SPEC, Scope("s1")).startswith("slipway-s1-shop-v7-web.2-")


def test_labels_round_trip_to_the_spec() -> None:
    labels = containers.labels(SPEC, Scope("s1"))
    assert labels[sc.LABEL_MANAGED] == "s1"
    back = containers.spec_from_labels(labels, image="img")
    assert back is not None
    assert (back.app_id, back.release, back.name, back.size, back.host_id) == (
        "a1",
        7,
        "web.2",
        "standard-2x",
        "h1",
    )
    assert containers.spec_from_labels({sc.LABEL_APP: "a1"}) is None


def test_the_config_is_hardened_and_runs_the_init_with_platform_values_only() -> None:
    """Hardened; the init runs the command; Env holds PORT/DYNO; no Docker log; mounts."""
    config = containers.container_config(
        SPEC,
        argv=["/usr/local/bin/slipway-launch", "python3 app.py"],
        port=5000,
        address="10.0.0.2",
        publish=True,
        tmp_size="64m",
        scope=Scope(),
        init="/usr/local/lib/slipway/dyno-init-x",
        log_dir="/srv/dynolog/h1",
    )
    host = config["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] and host["MemoryReservation"] == 1024 << 20  # the quota
    assert host["Memory"] == host["MemorySwap"] == 2048 << 20  # R15 past twice it, no swap
    assert host["PortBindings"] == {"5000/tcp": [{"HostIp": "10.0.0.2", "HostPort": ""}]}
    assert host["LogConfig"]["Type"] == "none"
    assert host["Mounts"] == [
        {
            "Type": "bind",
            "Source": "/usr/local/lib/slipway/dyno-init-x",
            "Target": dynoinit.INIT_PATH,
            "ReadOnly": True,
        }
    ]
    assert host["Binds"] == [f"/srv/dynolog/h1:{dynoinit.LOG_DIR}:ro"]
    assert config["User"] == "10000:10000"
    assert config["Entrypoint"] == [dynoinit.INIT_PATH, "--"]
    assert config["Cmd"] == ["/usr/local/bin/slipway-launch", "python3 app.py"]
    assert config["OpenStdin"] and config["StdinOnce"]
    assert sorted(config["Env"]) == sorted(
        ["PORT=5000", "DYNO=web.2", "HOME=/app", "SLIPWAY_RELEASE_VERSION=7"]
    )
    worker = containers.container_config(
        SPEC,
        argv=["x"],
        port=5000,
        address="a",
        publish=False,
        scope=Scope(),
        tmp_size="1m",
        init="/i",
        log_dir="/l",
        tty=True,
    )
    assert "PortBindings" not in worker["HostConfig"]
    assert worker["Entrypoint"] == [dynoinit.INIT_PATH, "--tty", "--"]
    assert worker["HostConfig"]["Binds"] == [] and not worker["StdinOnce"]


def test_the_env_frame_carries_config_under_the_platform_values() -> None:
    """Config vars in the frame; PORT and DYNO set by the platform win over config."""
    frame = containers.env_frame(SPEC, {"SECRET": "x", "PORT": "1"}, 5000, {"TERM": "t"})
    entries = dict(dynoinit.decode_env(frame))
    assert entries["SECRET"] == "x" and entries["PORT"] == "5000"
    assert entries["DYNO"] == "web.2" and entries["TERM"] == "t"


def test_the_command_line_is_what_docker_would_run() -> None:
    """The image's entrypoint, then the process command, or the image's own Cmd."""
    image = {"Config": {"Entrypoint": ["/launch"], "Cmd": ["web"]}}
    assert containers.command_line(image, "python3 app.py") == ["/launch", "python3 app.py"]
    assert containers.command_line(image, "") == ["/launch", "web"]
    assert containers.command_line({"Config": {"Cmd": ["a", "b"]}}, "") == ["a", "b"]


def test_only_references_with_a_registry_host_are_pulled() -> None:
    assert containers.has_registry_host("127.0.0.1:5000/apps/a1@sha256:00")
    assert containers.has_registry_host("registry.example.com/x/y:1")
    assert not containers.has_registry_host("slipway-test/app:1")
    assert not containers.has_registry_host("busybox")
