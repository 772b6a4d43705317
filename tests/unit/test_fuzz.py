"""Property-based fuzzing (hypothesis) of decode -> validate -> mask -> outputs: no exception
escapes, and nothing payflow emits (DLQ record, masked or enriched payment, warehouse rows)
ever contains the input's PAN, whatever the input looks like or where the PAN hides."""
from __future__ import annotations

import random
from datetime import datetime, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payflow.stages.cards import _MAYBE_PAN, BRANDS, find_pans, may_hold_pan
from payflow.stages.fraud import new_state, score
from payflow.keys import KeyRing
from payflow.stages.mask import mask
from payflow.models import EnrichedPayment, Rejection
from payflow.simulator.population import make_pan
from payflow.stages.validation import decode
from payflow.warehouse.base import LANDING_ORDER, build_batch
from tests.unit.cards_fixtures import event

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=timezone.utc)
KEY = KeyRing.parse("fuzz-1:" + "7e" * 32).active
FIELDS = list(event())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


@st.composite
def pan_and_message(draw):
    brand = draw(st.sampled_from(sorted(BRANDS)))
    pan, _ = make_pan(random.Random(draw(st.integers(0, 2**32))), brand)
    doc = event(pan, transaction_id="txn_" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=12,
                                                              max_size=30)))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        action = draw(st.sampled_from(["drop", "replace", "hide_pan"]))
        if action == "drop":
            doc.pop(field, None)
        elif action == "replace":
            doc[field] = draw(json_values)
        else:  # the PAN where no PAN belongs, as digits, dashed or spaced
            sep = draw(st.sampled_from(["", "-", " "]))
            shown = sep.join(pan[i:i + 4] for i in range(0, len(pan), 4))
            doc[field] = draw(st.sampled_from([shown, f"note {shown} end", f"{shown}@example.com"]))
    raw = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) if draw(st.booleans()) else \
        orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)
    cut = draw(st.sampled_from(["whole", "truncated", "garbage"]))
    if cut == "truncated":
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif cut == "garbage":
        raw = draw(st.binary(max_size=40)) + raw + draw(st.binary(max_size=40))
    return pan, raw


def assert_no_pan(pan: str, blob: bytes | str, where: str) -> None:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    assert pan not in text, f"the PAN reached {where}"
    assert not find_pans(text), f"a card number reached {where}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pan_and_message())
def test_no_exception_escapes_and_no_output_carries_the_pan(case):
    pan, raw = case
    result = decode(raw, now=NOW)
    if isinstance(result, Rejection):
        assert result.reason and result.detail
        assert_no_pan(pan, result.to_dlq_json(NOW), "a DLQ record")
        batch = build_batch([], rejections=[result], now=NOW)
    else:
        payment = mask(result, KEY, NOW, 0, 0)
        assessment = score(payment, new_state()).assessment
        enriched = EnrichedPayment(payment, assessment)
        assert_no_pan(pan, payment.to_masked_json(), "a masked payment")
        assert_no_pan(pan, enriched.to_enriched_json(), "an enriched payment")
        batch = build_batch([enriched], now=NOW)
    rows = {table: batch.rows(table) for table in LANDING_ORDER}
    assert_no_pan(pan, orjson.dumps(rows, default=str), "the warehouse rows")


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789 -x.\x00\u0663\u0967"), max_size=60) | st.text(max_size=40))
def test_the_card_precheck_agrees_with_its_regex(text):
    """may_hold_pan runs on bytes for speed; it must say exactly what the regex says (a
    False skips the full scan, so a false negative would let a PAN through)."""
    assert may_hold_pan(text) == (_MAYBE_PAN.search(text) is not None)
