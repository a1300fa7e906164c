"""structlog configured once per process: JSON off a terminal, console on one.

Context (service, subject, request id, app) is bound with `libs.logcontext`,
so every line a handler logs carries it; the bus writes one canonical line per
message. The canonical line is on every message's path, so it has to be cheap:
the context is read from one ContextVar (structlog's own contextvars copy the
whole context on every line), the timestamp reuses its formatted second, and
JSON is encoded with msgspec and written as bytes.

Tracebacks never carry local variables: structlog's `dict_tracebacks` (and a
rich console renderer) show every frame's locals by default, and a handler's
locals hold request bodies, config values, tokens and data keys. Logged
exceptions keep their type, message and frames (file, line, function) only.

A log line never fails what it describes: when the log file cannot be written (its disk
full, say), the line is dropped and counted, and the count is written with the next line
that fits, so a request at 100 % disk is answered instead of turning into a 500.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import msgspec
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from slipway.libs import logcontext

_json = msgspec.json.Encoder(enc_hook=repr)


class _Stamp:
    """ISO-8601 UTC timestamps with microseconds, formatting each second only once."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self.prefix}.{int((now - second) * 1e6):06d}Z"
        return event


# The locals of a frame may be anyone's secrets: render frames without them.
_exceptions_without_locals = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


def _dumps(event: dict[str, Any], **_: Any) -> bytes:
    return _json.encode(event)


class _LineSink:
    """Whole lines to a file descriptor, each in one write; a line that cannot be written
    is dropped and counted instead of raising into the code that logged it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.dropped = 0
        self._torn = False  # the last failed write left half a line in the file

    def write(self, data: bytes) -> int:
        if self.dropped:
            note = {"event": "log.dropped", "level": "warning", "lines": self.dropped}
            start = b"\n" if self._torn else b""
            if not self._put(start + _json.encode(note) + b"\n"):
                self.dropped += 1
                return len(data)
            self.dropped = 0
        if not self._put(data):
            self.dropped += 1
        return len(data)

    def _put(self, data: bytes) -> bool:
        try:
            fd = self._out.fileno()
        except (OSError, ValueError):  # not a real file (a test's BytesIO)
            self._out.write(data)
            return True
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            # A full disk or quota is why this exists; anything else is not ours to hide.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            self._torn = self._torn or len(view) < len(data)
            return False
        self._torn = False
        return True

    def flush(self) -> None:
        """Every line was written (or dropped) by `write`: nothing is buffered here."""


def configure_logging(
    service: str, *, fmt: str = "auto", level: str = "info", file: BinaryIO | None = None
) -> None:
    """Set up structlog for `service`. `fmt` is auto, json or console; `file` defaults to stderr."""
    out = file or sys.stderr.buffer
    use_console = out.isatty() if fmt == "auto" else fmt == "console"
    processors: list[structlog.types.Processor] = [
        logcontext.merge_into_event,
        structlog.processors.add_log_level,
        _Stamp(),
    ]
    factory: Any
    if use_console:
        processors.append(
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        )
        factory = structlog.WriteLoggerFactory(file=sys.stderr if file is None else _text(out))
    else:
        processors += [
            _exceptions_without_locals,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
        factory = structlog.BytesLoggerFactory(file=_LineSink(out))  # type: ignore[arg-type]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logcontext.bind_all({"service": service})


def _text(out: BinaryIO) -> Any:
    import io

    return io.TextIOWrapper(out, write_through=True)
