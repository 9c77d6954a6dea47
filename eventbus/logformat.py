"""The log output of ``eventbus serve``: text for people, or JSON lines for log
collectors (``--log-format json``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["TEXT_FORMAT", "JsonFormatter", "configure_logging"]

#: The text format: ``2024-05-01 12:00:00,123 INFO eventbus.cli: listening on ...``.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Its keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``; then the record's extra fields (``logger.info(..., extra={"sid":
    sid})``), except one named like a key before it; then ``exception`` and
    ``stack``, the text of a traceback, when there is one. The output is ASCII
    (other characters escaped), so that no character of a message can end the line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Log to stderr from ``level`` up, as text or as JSON lines (``log_format``).

    Like :func:`logging.basicConfig`, it does nothing if the root logger already
    has handlers (an application, or pytest, configured logging itself).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
