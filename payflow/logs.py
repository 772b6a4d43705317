"""Logging: JSON lines on stdout by default (PAYFLOW_LOG_FORMAT=text for humans).

Each JSON line has `time` (RFC 3339, UTC), `severity` (DEBUG ... CRITICAL), `logger` and
`message`: the field names Cloud Logging's agents and most log stacks read without a parser
(a line on stderr without `severity` is filed as an error there). The worker also keeps a
size-bounded, rotated JSON copy on its state volume (what `payflow audit pci` scans).

A last-line-of-defence filter masks any card-shaped text in every record before it is
written, and counts it (metric payflow_unmasked_pan_detections_total must stay 0).
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from payflow.stages.cards import find_pans, may_hold_pan
from payflow.stages.redact import mask_text

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "crit": logging.CRITICAL}
# records in which the scrubber found card data, since start (read by the unit tests)
pan_detections = 0
# the worker's file copy: at most LOG_FILE_BACKUPS + 1 files of LOG_FILE_MAX_BYTES each
LOG_FILE_MAX_BYTES = 50 * 1024 * 1024
LOG_FILE_BACKUPS = 3
# the record attributes a formatter may write besides the message
_EXTRA_FIELDS = ("stage", "partition", "batch", "event")


def install_record_scrubber() -> None:
    """Scrub every log record at creation, whoever logs it and whichever handler writes it.

    Faust and mode set up their own handlers at worker start; a record factory is the one
    place every record passes through.
    """
    base = logging.getLogRecordFactory()
    if getattr(base, "_payflow", False):
        return
    scrubber = PanScrubber()

    def factory(*args, **kwargs):
        record = base(*args, **kwargs)
        scrubber.filter(record)
        return record

    factory._payflow = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class PanScrubber(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        global pan_detections
        if getattr(record, "_payflow_scrubbed", False):
            return True
        record._payflow_scrubbed = True
        record.args = _short_floats(record.args)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            message = str(record.msg)
        found = bool(find_pans(message))
        # args () not None: mode's formatter wraps None into (None,) and formats again
        record.msg, record.args = mask_text(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            found = found or bool(find_pans(text))
            record.exc_info, record.exc_text = None, mask_text(text)
        elif isinstance(record.exc_text, str):
            found = found or bool(find_pans(record.exc_text))
            record.exc_text = mask_text(record.exc_text)
        if isinstance(record.stack_info, str):
            found = found or bool(find_pans(record.stack_info))
            record.stack_info = mask_text(record.stack_info)
        # fields given with extra= that the formatters write (JsonFormatter: stage, partition...)
        for key in _EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if may_hold_pan(text):
                found = found or bool(find_pans(text))
                setattr(record, key, mask_text(text))
        if found:
            pan_detections += 1
            from payflow import metrics
            metrics.UNMASKED_PAN.inc()
        return True


class _ShortFloat(float):
    """A float argument written with 6 significant digits by %s and %r (%.3f and the like
    are unchanged). A float's repr has up to 17 digits ("drift of +0.43734976700012345", as
    mode's timers log it), which the card-number detector, finding card numbers right after
    "<digit>.", would count as one about half the time."""

    def __repr__(self) -> str:
        return format(float(self), ".6g")

    __str__ = __repr__


def _short_floats(args: Any) -> Any:
    """The record's args with floats below 10^11 shortened: they are computed values, and
    only their fraction digits could look like a card number (a larger one, which could be
    a card number written as a float, is left as it is, to be found and masked)."""
    def short(value: Any) -> Any:
        if type(value) is float and abs(value) < 1e11:
            return _ShortFloat(value)
        return value

    if isinstance(args, tuple):
        return tuple(short(a) for a in args)
    if isinstance(args, dict):
        return {k: short(v) for k, v in args.items()}
    return args


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            # Cloud Error Reporting reads a stack trace from this field
            entry["exception"] = record.exc_text
        for key in _EXTRA_FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        return json.dumps(entry, default=str)


def stdout_handler(log_format: str = "json", stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(PanScrubber())
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._payflow = True  # type: ignore[attr-defined]
    return handler


def file_handler(path: str, max_bytes: int = LOG_FILE_MAX_BYTES, backups: int = LOG_FILE_BACKUPS) -> logging.Handler:
    """The worker's log file, always JSON lines, rotated at max_bytes (worker.log.1 ...)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    handler.addFilter(PanScrubber())
    handler.setFormatter(JsonFormatter())
    handler._payflow = True  # type: ignore[attr-defined]
    return handler


def level_of(settings) -> int:
    return _LEVELS.get(settings.log_level.lower(), logging.INFO)


def worker_logging_config(settings) -> dict:
    """dictConfig for Faust's worker, which replaces the root handlers when it starts. The
    handlers carry the worker's outage filter (payflow.runtime.health) from the start: the
    libraries' thousands of lines about a broker that does not answer are folded into a few
    from the first one on, while the worker is still starting too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"outages": {"()": "payflow.runtime.health.process_filter"}},
        "handlers": {
            "stdout": {"()": "payflow.logs.stdout_handler", "log_format": settings.log_format,
                       "filters": ["outages"]},
            "file": {"()": "payflow.logs.file_handler", "path": str(settings.data_dir / "logs" / "worker.log"),
                     "filters": ["outages"]},
        },
        "root": {"level": level_of(settings), "handlers": ["stdout", "file"]},
    }


def configure_logging(settings, stream=None) -> None:
    """Logging for payflow's own commands; the worker gets worker_logging_config via Faust."""
    install_record_scrubber()
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_payflow", False):
            root.removeHandler(h)
    root.addHandler(stdout_handler(settings.log_format, stream))
    root.addHandler(file_handler(str(settings.data_dir / "logs" / "worker.log")))
    root.setLevel(level_of(settings))
