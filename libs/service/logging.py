"""structlog configured once per process: JSON off a terminal, console on one.

Context (service, subject, request id, app) is bound with contextvars, so every
line a handler logs carries it; the bus writes one canonical line per message.
JSON lines are encoded with msgspec and written as bytes: the canonical line is
on every message's path, so it has to be cheap (about 10 µs).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO

import msgspec
import structlog

_json = msgspec.json.Encoder(enc_hook=repr)


def _dumps(event: dict[str, Any], **_: Any) -> bytes:
    return _json.encode(event)


def configure_logging(
    service: str, *, fmt: str = "auto", level: str = "info", file: BinaryIO | None = None
) -> None:
    """Set up structlog for `service`. `fmt` is auto, json or console; `file` defaults to stderr."""
    out = file or sys.stderr.buffer
    use_console = out.isatty() if fmt == "auto" else fmt == "console"
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Any
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer())
        factory = structlog.WriteLoggerFactory(file=sys.stderr if file is None else _text(out))
    else:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
        factory = structlog.BytesLoggerFactory(file=out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def _text(out: BinaryIO) -> Any:
    import io

    return io.TextIOWrapper(out, write_through=True)
