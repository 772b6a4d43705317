"""Layer 0: masking rules for every brand and length, keyed hashes, and what never leaks."""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone

import orjson
import pytest

from payflow.stages.cards import BRANDS, find_pans, luhn_valid
from payflow.key_config import key_ring_from_settings
from payflow.keys import KeyConfigError, KeyRing, pii_hash
from payflow.stages.mask import mask
from payflow.models import EnrichedPayment, FraudAssessment
from payflow.settings import Settings
from payflow.stages.validation import ValidatedPayment, decode
from tests.unit.cards_fixtures import event, pans_by_brand

NOW = datetime(2026, 11, 20, 10, 5, tzinfo=timezone.utc)
RING = KeyRing.parse("k1:" + "11" * 32 + ",k0:" + "22" * 32)


@pytest.mark.parametrize("brand", list(BRANDS))
def test_every_brand_and_length_is_masked_to_last_four(brand):
    pan, cvv = pans_by_brand()[brand]
    assert luhn_valid(pan) and len(pan) == BRANDS[brand][1] and len(cvv) == BRANDS[brand][2]
    decoded = decode(orjson.dumps(event(pan, cvv)), now=NOW)
    assert isinstance(decoded, ValidatedPayment)
    masked = mask(decoded, RING.active, NOW)
    assert masked.credit_card_masked == "XXXX-XXXX-XXXX-" + pan[-4:]
    assert masked.cvv_masked == "XXX"
    assert masked.card_expiry_masked == "08/XX"
    assert masked.pii_key_id == "k1"
    assert masked.pii_hash == pii_hash(RING.active, pan, "08/29")
    out = EnrichedPayment(masked, FraudAssessment(0, [], 0, 1, 1)).to_enriched_json().decode()
    late = masked.to_masked_json().decode()
    for text in (out, late, repr(masked)):
        assert pan not in text and not find_pans(text)
        assert '"123"' not in text and cvv not in text.replace(pan[-4:], "")
        assert "08/29" not in text
    assert "someone@example.com" not in out and "someone@example.com" not in late


def test_pii_hash_is_keyed_and_ignores_cvv_and_formatting():
    key_a, key_b = RING.keys
    h = pii_hash(key_a, "4111111111111111", "08/29")
    assert h == pii_hash(key_a, "4111-1111-1111-1111", "8/29")
    assert h != pii_hash(key_b, "4111111111111111", "08/29")
    assert h != pii_hash(key_a, "4111111111111111", "09/29")
    # no digits at all, so the hash itself can never look like a PAN
    assert not find_pans(h) and len(h) == 64 and set(h) <= set("abcdefghijklmnop")
    # it is HMAC-SHA256(key, "PAN|MMYY") (what erasure by card and other tools recompute)
    expected = hmac.new(key_a.secret, b"4111111111111111|0829", hashlib.sha256).hexdigest()
    assert h == expected.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))
    assert pii_hash(key_a, "4111111111111111", "08/2029") == h  # a four-digit year normalises too
    d1 = decode(orjson.dumps(event(cvv="123")), now=NOW)
    d2 = decode(orjson.dumps(event(cvv="999")), now=NOW)
    assert mask(d1, key_a, NOW).pii_hash == mask(d2, key_a, NOW).pii_hash


def test_key_ring_rotation_keeps_old_keys_for_lookups():
    hashes = RING.hashes_for("4111111111111111", "08/29")
    assert [k for k, _ in hashes] == ["k1", "k0"]
    assert len({h for _, h in hashes}) == 2


def test_production_refuses_to_start_without_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PAYFLOW_PRODUCTION", "true")
    monkeypatch.delenv("PAYFLOW_HMAC_KEYS", raising=False)
    monkeypatch.setenv("PAYFLOW_HMAC_KEY_FILE", str(tmp_path / "k"))
    with pytest.raises(KeyConfigError, match="refusing to start"):
        key_ring_from_settings(Settings.from_env())
    assert not (tmp_path / "k").exists()


def test_development_generates_and_reuses_a_local_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PAYFLOW_PRODUCTION", "false")
    monkeypatch.delenv("PAYFLOW_HMAC_KEYS", raising=False)
    monkeypatch.setenv("PAYFLOW_HMAC_KEY_FILE", str(tmp_path / "k"))
    first = key_ring_from_settings(Settings.from_env())
    second = key_ring_from_settings(Settings.from_env())
    assert first.active.secret == second.active.secret and len(first.active.secret) == 32
    assert (tmp_path / "k").stat().st_mode & 0o077 == 0
    assert first.active.secret.hex() not in repr(first)


@pytest.mark.parametrize("spec", ["", "nocolon", "k1:zz", "k1:abcd", "k1:" + "11" * 32 + ",k1:" + "22" * 32])
def test_bad_key_specs_are_rejected_with_a_reason(spec):
    with pytest.raises(KeyConfigError):
        KeyRing.parse(spec)
