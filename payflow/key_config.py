"""The HMAC key ring from the settings: PAYFLOW_HMAC_KEYS, or outside production a local key
file made once (development only). Kept apart from payflow/keys.py, which the pure masking
stage imports and which reads no environment and no file."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from payflow.keys import KeyConfigError, KeyRing
from payflow.settings import Settings

log = logging.getLogger("payflow.keys")


def key_ring_from_settings(settings: Settings, *, generate: bool = True) -> KeyRing:
    """The configured ring. Outside production with PAYFLOW_HMAC_KEYS empty, the local key
    file; `generate=False` (erasure) never makes one: a new key could find nobody."""
    if settings.hmac_keys:
        return KeyRing.parse(settings.hmac_keys)
    if settings.production:
        raise KeyConfigError(
            "PAYFLOW_PRODUCTION is on and PAYFLOW_HMAC_KEYS is empty: set it to KEY_ID:HEX_SECRET "
            "(at least 32 random bytes, from your secret store); refusing to start"
        )
    if not generate and not settings.hmac_key_file.is_file():
        raise KeyConfigError(
            f"no HMAC key configured: PAYFLOW_HMAC_KEYS is empty and there is no local key file "
            f"{settings.hmac_key_file} (PAYFLOW_HMAC_KEY_FILE); set PAYFLOW_HMAC_KEYS to the keys the "
            "worker hashes with")
    try:
        return KeyRing.parse(_local_key(settings.hmac_key_file))
    except KeyConfigError as exc:
        raise KeyConfigError(f"the local key file {settings.hmac_key_file} (PAYFLOW_HMAC_KEY_FILE): {exc}") from None


def _local_key(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = f"local-1:{secrets.token_hex(32)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(spec + "\n")
    log.warning("generated a local HMAC key (development only) in %s", path)
    return spec
