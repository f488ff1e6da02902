"""structlog set-up: one log format for every command, the request id bound per request.

Every line carries the same fields: ``timestamp``, ``level``, ``event``, ``logger`` (the module,
or the library's stdlib logger) and ``command`` (``serve``, ``billing run``, ...), then
``request_id`` inside a request and the event's own fields.  Lines are JSON objects, one per
line, unless ``log_format`` says ``console``, or says ``auto`` (the default) and standard error
is a terminal: then they are rendered for people.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

FIELDS = ("timestamp", "level", "event", "logger", "command")
_command = "metering"  # set by the CLI for the whole process


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was asked for (``get_logger(__name__)``)."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file)
        self.name = name


def _logger_factory(*args: Any) -> _NamedPrintLogger:
    return _NamedPrintLogger(sys.stderr, args[0] if args else "metering")


def _add_command(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event["command"] = _command
    return event


def renders_json(fmt: str = "auto") -> bool:
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def configure_logging(level: str = "INFO", fmt: str = "auto", command: str | None = None) -> None:
    """Log ``level`` and up to standard error; ``command`` names the process (kept when None)."""
    global _command
    if command is not None:
        _command = command
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if renders_json(fmt)
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.add_logger_name, _add_command,
                    structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_logger_factory,
        cache_logger_on_first_use=False,
    )
    # Route stdlib loggers (uvicorn, alembic, apscheduler) through the same lines.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _add_command],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Every command migrates first: alembic's "Context impl SQLiteImpl." lines are noise.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
