"""Faust tables (RocksDB via rocksdict, changelog-backed)."""
