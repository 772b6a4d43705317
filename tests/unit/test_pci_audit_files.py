"""The PCI audit's file and warehouse readers, without services: a PAN across a read
window's edge is found once, RocksDB's info log keeps its data lines scanned, every table
and row of a DuckDB file is read, and nothing read is never clean."""
from __future__ import annotations

from pathlib import Path

import pytest

from payflow.stages.cards import luhn_check_digit
from payflow.compliance import pci
from payflow.compliance.pci import Place, ScanResult, scan_all, scan_file_bytes, scan_rocksdb_info_log

PAN = "455673012345678" + luhn_check_digit("455673012345678")


@pytest.mark.parametrize("at", [0, 30, 32 - 8, 32 - 1, 32, 64 - 3])
def test_a_pan_across_a_window_edge_is_found_once(tmp_path, monkeypatch, at):
    monkeypatch.setattr(pci, "_WINDOW", 32)
    monkeypatch.setattr(pci, "_MARGIN", 24)
    data = bytearray(b"x" * 100)
    spelled = ".".join(PAN[i:i + 4] for i in range(0, 16, 4)).encode()
    data[at:at + len(spelled)] = spelled
    path = tmp_path / "blob"
    path.write_bytes(bytes(data))
    result, place = ScanResult(), Place("state", str(tmp_path), "files")
    scan_file_bytes(path, result, place)
    full = [f for f in result.findings if f.masked == "X" * 12 + PAN[-4:]]
    assert [f.location for f in full] == [f"{path} byte {at}"]
    assert place.count == 1 and place.bytes == 100


def test_rocksdb_info_log_numbers_are_blanked_but_a_pan_in_a_line_is_found(tmp_path):
    log = tmp_path / "LOG"
    log.write_text(
        "2026/11/27-10:44:22.934944 140193355262848 Compile date 2025-07-09 11:14:20\n"
        '2026/11/27-10:44:22.983007 140193321445056 (Original Log Time 2026/11/27-10:44:22.982960) '
        'EVENT_LOG_v1 {"time_micros": 1795776262982955, "job": 2, "event": "flush_finished"}\n'
        f"2026/11/27-10:44:22.983007 140193321445056 [WARN] corrupted key {PAN}\n"
        # a memory address that reads as a Luhn-valid 12-digit Maestro number (seen in CI)
        "2026/11/27-11:46:59.367201 140682685684608 [db/db_impl/db_impl_open.cc:2250] "
        "SstFileManager instance 0x562690160410\n")
    assert pci.find_pans("0x562690160410")
    result, place = ScanResult(), Place("state", str(tmp_path), "info log lines")
    scan_rocksdb_info_log(log, result, place)
    assert place.count == 4
    assert pci.find_pans(log.read_text().splitlines()[0]), "the line's own numbers read as a card number"
    assert {f.location for f in result.findings} == {f"state file {log}:3"}


def test_every_table_and_row_of_a_duckdb_file_is_read(tmp_path):
    import duckdb

    from payflow.warehouse.duck import DuckDBWarehouse

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE notes (id INTEGER, a VARCHAR, b VARCHAR)")
    con.execute("INSERT INTO notes VALUES (1, 'x', NULL), (2, NULL, 'y'), (3, 'z', ?)",
                [" ".join(PAN[i:i + 4] for i in range(0, 16, 4))])
    con.execute("CREATE VIEW v AS SELECT * FROM notes")
    con.close()
    wh = DuckDBWarehouse(str(path))
    try:
        result = scan_all(wh)
    finally:
        wh.close()
    assert [(p.name, p.count) for p in result.places] == [("notes", 3)]
    assert {f.location for f in result.findings} == {"warehouse notes.b [row #3]"}
    assert "X" * 12 + PAN[-4:] in {f.masked for f in result.findings}


def test_nothing_read_is_not_clean(tmp_path):
    result = scan_all(log_dirs=[tmp_path / "absent"])
    assert result.ok and result.read_nothing
    assert "NOTHING READ" in result.summary() and "clean, no card data" not in result.summary()


def test_a_missing_named_log_file_is_an_error(tmp_path):
    with pytest.raises(pci.AuditError, match="does not exist"):
        scan_all(log_files=[tmp_path / "nope.log"])


def test_findings_never_hold_the_number(tmp_path: Path):
    log = tmp_path / "app.log"
    log.write_text(f"card {PAN} cvv: 123 expiry: 12/29\n")
    result = scan_all(log_files=[log])
    text = result.summary()
    assert PAN not in text and "123" not in text.replace(str(tmp_path), "") and "12/29" not in text
    assert {f.kind for f in result.findings} == {"pan", "cvv", "expiry"}


def test_columns_that_are_not_strings_are_read_too(tmp_path):
    """A PAN in a BIGINT, a DECIMAL, a BLOB or a STRUCT column is card data at rest too."""
    import duckdb

    from payflow.warehouse.duck import DuckDBWarehouse

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE odd (n BIGINT, d DECIMAL(38, 9), b BLOB, s STRUCT(pan VARCHAR), ok INTEGER)")
    con.execute("INSERT INTO odd VALUES (?, NULL, NULL, NULL, 1), (NULL, ?, NULL, NULL, 2), "
                "(NULL, NULL, ?, NULL, 3), (NULL, NULL, NULL, {'pan': ?}, 4)",
                [int(PAN), PAN, PAN.encode(), PAN])
    # ordinary amounts read back as NUMERIC(38, 9) ("4532.100000000"): never card numbers
    con.execute("CREATE TABLE amounts (amount DECIMAL(38, 9))")
    con.executemany("INSERT INTO amounts VALUES (?)", [[f"{4000 + i // 7}.{i % 100:02d}"] for i in range(3000)])
    con.close()
    wh = DuckDBWarehouse(str(path))
    try:
        result = scan_all(wh)
    finally:
        wh.close()
    assert {f.location for f in result.findings} == {
        "warehouse odd.n [row #1]", "warehouse odd.d [row #2]", "warehouse odd.b [row #3]", "warehouse odd.s [row #4]"}


def test_a_character_device_is_a_readable_log_file(tmp_path):
    """Issue 26: `audit pci --log-file /dev/null` said the file does not exist."""
    result = scan_all(log_files=[Path("/dev/null")])
    assert [(p.name, p.count) for p in result.places] == [("/dev/null", 0)]
    with pytest.raises(pci.AuditError, match="is a directory"):
        scan_all(log_files=[tmp_path])


def test_records_left_unread_are_not_clean():
    """Issue 26: a scan that left topic records unread (--max-per-topic) exited 0 "clean"."""
    result = pci.ScanResult(places=[pci.Place("topic", "t", "records", count=5, not_read=7)])
    assert result.ok and not result.complete and result.exit_code == 2
    assert "INCOMPLETE" in result.verdict() and "clean, no card data" not in result.verdict()
    assert result.to_json()["verdict"] == "incomplete"
    done = pci.ScanResult(places=[pci.Place("topic", "t", "records", count=5)])
    assert done.exit_code == 0 and "clean" in done.verdict()
