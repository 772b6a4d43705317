"""Logging: JSON lines by default (PAYFLOW_LOG_FORMAT=text for humans).

A last-line-of-defence filter masks any card-shaped text in every record before it is
written, and counts it (metric payflow_unmasked_pan_detections_total must stay 0).
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

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
        record.msg, record.args = mask_text(message), None
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


def configure_logging(settings, stream=None) -> None:
    install_record_scrubber()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(PanScrubber())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_payflow", False):
            root.removeHandler(h)
    handler._payflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(settings.log_level.lower(), logging.INFO))
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_dir / "worker.log")
    file_handler.addFilter(PanScrubber())
    file_handler.setFormatter(JsonFormatter())
    file_handler._payflow = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
