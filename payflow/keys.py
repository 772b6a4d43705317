"""The HMAC key ring behind pii_hash.

Keys come from PAYFLOW_HMAC_KEYS as KEY_ID:HEX_SECRET pairs; the first is active for new
events, the others stay valid for erasure look-ups (key rotation). Pure: the ring is read
from the settings by payflow/key_config.py.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

MIN_SECRET_BYTES = 32


class KeyConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class HmacKey:
    key_id: str
    secret: bytes
    # the key already mixed into HMAC's inner and outer hash: a copy per hash skips that
    # step (~0.5 µs of ~2 per payment)
    _keyed: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyed", hmac.new(self.secret, digestmod=hashlib.sha256))

    def digest(self, message: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.digest()

    def __repr__(self) -> str:  # never print the secret
        return f"HmacKey({self.key_id!r})"


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[HmacKey, ...]

    @property
    def active(self) -> HmacKey:
        return self.keys[0]

    def hashes_for(self, pan: str, expiry: str) -> list[tuple[str, str]]:
        """(key_id, pii_hash) under every key: what erasure by card looks up."""
        return [(k.key_id, pii_hash(k, pan, expiry)) for k in self.keys]

    @classmethod
    def parse(cls, spec: str) -> "KeyRing":
        keys = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            key_id, sep, hex_secret = part.partition(":")
            if not sep or not key_id:
                raise KeyConfigError("PAYFLOW_HMAC_KEYS entries must look like KEY_ID:HEX_SECRET")
            try:
                secret = bytes.fromhex(hex_secret)
            except ValueError:
                raise KeyConfigError(f"HMAC key {key_id!r}: secret is not hex") from None
            if len(secret) < MIN_SECRET_BYTES:
                raise KeyConfigError(f"HMAC key {key_id!r}: secret must be at least {MIN_SECRET_BYTES} bytes")
            keys.append(HmacKey(key_id, secret))
        if not keys:
            raise KeyConfigError("no HMAC key configured")
        if len({k.key_id for k in keys}) != len(keys):
            raise KeyConfigError("HMAC key ids must be unique")
        return cls(tuple(keys))

    @property
    def key_ids(self) -> list[str]:
        return [k.key_id for k in self.keys]


def normalise_expiry(expiry: str) -> str:
    mm, _, yy = expiry.partition("/")
    if len(mm) == 2 and len(yy) == 2 and (mm + yy).isdigit() and mm.isascii() and yy.isascii():
        return mm + yy  # MM/YY as validated: already normal
    return f"{int(mm):02d}{int(yy[-2:]):02d}"


# hex digits 0-9a-f written as the letters a-p (as Chrome writes extension ids): the
# digest has no digits at all, so it can never look like a PAN to a scanner (plain hex
# often holds 13+ digit runs), and str.translate keeps it at C speed
_HEX_AS_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
PII_HASH_LENGTH = 64


def pii_hash(key: HmacKey, pan: str, expiry: str) -> str:
    """HMAC-SHA256 of the normalised PAN and expiry: 64 lowercase letters a-p (hex, no digits)."""
    digits = pan if pan.isdigit() else "".join(ch for ch in pan if ch.isdigit())
    return key.digest(f"{digits}|{normalise_expiry(expiry)}".encode()).hex().translate(_HEX_AS_LETTERS)
