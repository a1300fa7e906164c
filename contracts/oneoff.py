"""One-off dynos (`slipway run`): the scheduler starts them, the gateway bridges their TTY.

    client ──websocket── gateway ──live subjects── scheduler ──Docker attach── container

`ONEOFF_RUN` asks the scheduler to create the container (config from the release,
`env` on top). With `attach`, the scheduler attaches to the container, listens on
`tty_in(session)` and starts the process only when the gateway sends the `ready`
frame (the client is connected, so no output is lost); output goes to
`tty_out(session)` and the last frame is `exit` with the process's status.
Without `attach` the process starts at once and its output goes to the logs.
Attached with `tty=False`, the dyno has no terminal: bytes pass unchanged both ways
(stdout and stderr merged), and an `eof` frame from the gateway closes its stdin.

`time_to_live` is enforced by the scheduler, even across its own restarts: the
deadline is a label on the container.
"""

from __future__ import annotations

from typing import Literal

from slipway.contracts import subjects
from slipway.contracts.base import LiveSpec, Message, Rpc, only
from slipway.contracts.scheduler import Dyno
from slipway.contracts.subjects import Service

LABEL_DEADLINE = "org.slipway.deadline"  # epoch seconds after which the dyno is killed
LABEL_ATTACHED = "org.slipway.attached"  # "true" while a client's TTY is bridged to it

# "eof": the client's input ended (a no-TTY session closes the dyno's stdin); added later,
# an older scheduler skips it as undecodable.
FrameKind = Literal["data", "resize", "ready", "close", "exit", "error", "eof"]


class RunOneOff(Message, tag="scheduler.oneoff.run.v1", frozen=True, kw_only=True):
    app_id: str
    app_name: str
    team_id: str
    release_version: int
    image: str
    config_version: str | None = None
    command: str
    env: dict[str, str] = {}
    size: str = "standard-1x"
    time_to_live: int = 3600  # seconds
    attach: bool = False
    session: str = ""  # the live-subject id of an attached session
    # Attached without a TTY (`force_no_tty`, `slipway run --no-tty`, input not a
    # terminal): raw bytes both ways, the client's end of input closes the dyno's stdin.
    tty: bool = True
    tty_cols: int = 80
    tty_rows: int = 24
    # "psql": run from the PostgreSQL add-on image (`pg:psql`), which has the client that
    # an app's image may lack; the scheduler picks that image, never the caller.
    tool: Literal["", "psql"] = ""


class OneOffStarted(Message, tag="scheduler.oneoff.started.v1", frozen=True, kw_only=True):
    dyno: Dyno


class TtyFrame(Message, tag="tty.frame.v1", frozen=True, kw_only=True):
    """One frame either way: bytes, a resize, the handshake, or the end with its status."""

    kind: FrameKind
    data: bytes = b""
    cols: int = 0
    rows: int = 0
    exit_code: int | None = None
    message: str = ""


ONEOFF_RUN: Rpc[RunOneOff, OneOffStarted] = Rpc(
    Service.SCHEDULER,
    "oneoff.run",
    subjects.rpc(Service.SCHEDULER, "oneoff.run"),
    RunOneOff,
    OneOffStarted,
    callers=only(Service.GATEWAY),
)


TTY_IN = LiveSpec("ttyin", writers=only(Service.GATEWAY), readers=only(Service.SCHEDULER))
TTY_OUT = LiveSpec("ttyout", writers=only(Service.SCHEDULER), readers=only(Service.GATEWAY))


def tty_in(session: str) -> str:
    """Client → dyno: keystrokes, resizes, the ready handshake."""
    return TTY_IN.subject(session)


def tty_out(session: str) -> str:
    """Dyno → client: output, then one exit frame."""
    return TTY_OUT.subject(session)
