"""The log line format (Cloud Logging's field names, on stdout) and the bounded file copy."""
from __future__ import annotations

import io
import json
import logging
import logging.config
import random
from datetime import datetime, timezone
from types import SimpleNamespace

from payflow import logs
from tests.unit.cards_fixtures import issuer_pan


def record(msg: str, level: int = logging.INFO, args: tuple = (), name: str = "payflow.test", **extra):
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_line_has_severity_message_time_and_logger():
    stream = io.StringIO()
    handler = logs.stdout_handler("json", stream)
    handler.handle(record("batch %d landed", logging.WARNING, (7,), stage="sink", partition=3))
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "batch 7 landed"
    assert entry["logger"] == "payflow.test"
    assert entry["stage"] == "sink" and entry["partition"] == 3
    assert not {"level", "msg", "ts"} & set(entry)
    # RFC 3339 in UTC with a Z suffix, milliseconds
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2026-01-01T00:00:00.000Z")
    when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert when.tzinfo == timezone.utc
    assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 60


def test_every_level_maps_to_a_cloud_logging_severity():
    stream = io.StringIO()
    handler = logs.stdout_handler("json", stream)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        handler.handle(record("x", level))
    severities = [json.loads(line)["severity"] for line in stream.getvalue().splitlines()]
    assert severities == ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def test_the_default_stream_is_stdout_not_stderr(capsys):
    handler = logs.stdout_handler("json")
    handler.handle(record("to stdout"))
    captured = capsys.readouterr()
    assert json.loads(captured.out)["message"] == "to stdout"
    assert captured.err == ""


def test_the_worker_logs_to_stdout_and_a_rotating_file(tmp_path):
    config = logs.worker_logging_config(SimpleNamespace(log_format="json", log_level="info", data_dir=tmp_path))
    kinds = {name: spec["()"] for name, spec in config["handlers"].items()}
    assert kinds == {"stdout": "payflow.logs.stdout_handler", "file": "payflow.logs.file_handler"}
    handler = logs.file_handler(str(tmp_path / "logs" / "worker.log"))
    try:
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        assert handler.maxBytes == logs.LOG_FILE_MAX_BYTES > 0 and handler.backupCount == logs.LOG_FILE_BACKUPS > 0
    finally:
        handler.close()


def test_the_file_copy_rotates_and_stays_bounded(tmp_path):
    path = tmp_path / "logs" / "worker.log"
    handler = logs.file_handler(str(path), max_bytes=2_000, backups=2)
    try:
        for i in range(500):
            handler.handle(record("event %d processed with some padding text", args=(i,)))
    finally:
        handler.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["worker.log", "worker.log.1", "worker.log.2"]
    assert all(p.stat().st_size <= 2_000 for p in path.parent.iterdir())
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["message"] == "event 499 processed with some padding text" and last["severity"] == "INFO"


def test_card_numbers_are_masked_and_counted_in_json_lines():
    pan = issuer_pan(random.Random(11), "visa", 16)
    stream = io.StringIO()
    handler = logs.stdout_handler("json", stream)
    before = logs.pan_detections
    handler.handle(record("retrying card %s", args=(pan,), event={"note": f"card {pan}"}))
    try:
        raise ValueError(f"bad card {pan}")
    except ValueError:
        import sys
        rec = record("failed")
        rec.exc_info = sys.exc_info()
        handler.handle(rec)
    text = stream.getvalue()
    assert pan not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["message"].startswith("retrying card ") and first["message"] != f"retrying card {pan}"
    assert "ValueError" in second["exception"] and second["severity"] == "INFO"
    assert logs.pan_detections == before + 2
