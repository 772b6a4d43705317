"""Logging: JSON lines by default (PAYFLOW_LOG_FORMAT=text for humans).

A last-line-of-defence filter masks any card-shaped text in every record before it is
written, and counts it (metric payflow_unmasked_pan_detections_total must stay 0).
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from payflow.cards import find_pans
from payflow.masking_remains import mask_text

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "crit": logging.CRITICAL}
pan_detections = 0


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
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            message = str(record.msg)
        if find_pans(message):
            pan_detections += 1
            from payflow import metrics
            metrics.UNMASKED_PAN.inc()
        # args () not None: mode's formatter wraps None into (None,) and formats again
        record.msg, record.args = mask_text(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, mask_text(text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            entry["exc"] = record.exc_text
        for key in ("stage", "partition", "batch", "event"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        return json.dumps(entry, default=str)


def stderr_handler(log_format: str = "json", stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(PanScrubber())
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._payflow = True  # type: ignore[attr-defined]
    return handler


def file_handler(path: str) -> logging.Handler:
    """The worker's log file, always JSON lines (what `payflow audit pci` scans)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.addFilter(PanScrubber())
    handler.setFormatter(JsonFormatter())
    handler._payflow = True  # type: ignore[attr-defined]
    return handler


def level_of(settings) -> int:
    return _LEVELS.get(settings.log_level.lower(), logging.INFO)


def worker_logging_config(settings) -> dict:
    """dictConfig for Faust's worker, which replaces the root handlers when it starts."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "stderr": {"()": "payflow.logs.stderr_handler", "log_format": settings.log_format},
            "file": {"()": "payflow.logs.file_handler", "path": str(settings.data_dir / "logs" / "worker.log")},
        },
        "root": {"level": level_of(settings), "handlers": ["stderr", "file"]},
    }


def configure_logging(settings, stream=None) -> None:
    """Logging for payflow's own commands; the worker gets worker_logging_config via Faust."""
    install_record_scrubber()
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_payflow", False):
            root.removeHandler(h)
    root.addHandler(stderr_handler(settings.log_format, stream))
    root.addHandler(file_handler(str(settings.data_dir / "logs" / "worker.log")))
    root.setLevel(level_of(settings))
