"""The card-number detector (payflow.stages.cards.find_pans) and what rests on it: the input guard
(card_data_in_field), the DLQ record, the log scrubber. Issue 17: PANs written with dots,
mixed separators, unusual groupings or right after "<digit>." passed all of them."""
from __future__ import annotations

import itertools
import logging
import random
import re
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payflow.stages.cards import find_pans, find_pans_bytes, luhn_valid, mask_pans, may_hold_pan, redact_card_like
from payflow.logs import PanScrubber
from payflow.models import Rejection
from payflow.simulator.generator import EventStream, SimOptions
from payflow.keys import HmacKey
from payflow.models import MaskedPayment
from payflow.stages.mask import CARD_LIKE_FLAG, TOKEN_PREFIX, mask
from payflow.stages.validation import TOKENIZED_FIELDS, ValidatedPayment, decode
from tests.unit.cards_fixtures import ISSUERS, event, issuer_pan

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=timezone.utc)
NON_CARD_FIELDS = ("transaction_id", "event_time", "sender_account_id", "receiver_account_id", "amount",
                   "currency", "ip_address", "geo_region", "device_id", "merchant_id", "user_email")
CARD_FIELDS = ("credit_card", "cvv", "card_expiry")
# space, dash, dot, and what an outside attack also used: tab, underscore, apostrophe,
# ideographic and no-break space, zero-width space, soft hyphen, en dash
SEPARATORS = " -.\t_'\u3000\u00a0\u200b\u00ad\u2013"


def strip_separators(text: str) -> str:
    return re.sub("[" + re.escape(SEPARATORS) + "]", "", text)


@st.composite
def issuer_pans(draw) -> str:
    brand = draw(st.sampled_from(sorted(ISSUERS)))
    length = draw(st.sampled_from(ISSUERS[brand][1]))
    return issuer_pan(random.Random(draw(st.integers(0, 2**32))), brand, length)


@st.composite
def written(draw, pan: str) -> str:
    """pan in any grouping, with one to three separators between groups, mixed."""
    cuts = sorted(draw(st.sets(st.integers(1, len(pan) - 1), max_size=len(pan) - 1)))
    groups = [pan[a:b] for a, b in zip([0, *cuts], [*cuts, len(pan)])]
    out = groups[0]
    for g in groups[1:]:
        out += "".join(draw(st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=3))) + g
    return out


# letters, digits, dots, punctuation and some non-ASCII (accents, CJK, Arabic-Indic digits, emoji)
surroundings = st.text(alphabet=st.sampled_from(
    list("abcxyzXYZ0123456789..,;:_/@#()[]'\"!? -+=\t") + list("éßЖ中日٣٤\u00a0€🙂")), max_size=8)


@st.composite
def hidden_pans(draw) -> tuple[str, str, str]:
    pan = draw(issuer_pans())
    shown = draw(written(pan))
    return pan, shown, draw(surroundings) + shown + draw(surroundings)


def test_the_generated_pans_cover_every_length_from_12_to_19():
    lengths = {n for _, ns in ISSUERS.values() for n in ns}
    assert lengths == set(range(12, 20))
    rng = random.Random(3)
    for brand, (_, ns) in ISSUERS.items():
        for n in ns:
            pan = issuer_pan(rng, brand, n)
            assert len(pan) == n and luhn_valid(pan)
            assert pan in [h.digits for h in find_pans(pan)], (brand, pan)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_pans())
def test_the_detector_finds_every_written_form_next_to_anything(case):
    pan, shown, text = case
    hits = find_pans(text)
    assert pan in [h.digits for h in hits], f"{pan} not found in {text!r}"
    hit = next(h for h in hits if h.digits == pan)
    assert strip_separators(text[hit.start:hit.end]) == pan
    assert may_hold_pan(text)
    # the masking over the same runs leaves no PAN behind
    for masked in (mask_pans(text), redact_card_like(text)):
        assert pan not in strip_separators(masked) and not find_pans(masked)
    # the bytes view (the audit of binary files) finds it at the same offsets in ASCII text
    if text.isascii():
        assert [(h.start, h.end, h.digits) for h in find_pans_bytes(text.encode())] == \
            [(h.start, h.end, h.digits) for h in hits]


KEY = HmacKey("test", b"k" * 32)


def outcome_of(raw: bytes) -> MaskedPayment | Rejection:
    """What the pipeline makes of a message: a Rejection, or the masked payment it lands."""
    result = decode(raw, now=NOW)
    return result if isinstance(result, Rejection) else mask(result, KEY, NOW)


def written_out(outcome: MaskedPayment | Rejection) -> str:
    """Everything of the outcome that is written anywhere (DLQ record, or every landed field)."""
    if isinstance(outcome, Rejection):
        return outcome.to_dlq_json(NOW).decode()
    return outcome.to_masked_json().decode() + str(outcome.user_email)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden_pans(), st.sampled_from(NON_CARD_FIELDS))
def test_a_pan_in_any_non_card_field_never_lands_and_never_reaches_the_dlq(case, field):
    """Issue 26: in a text field that lands (ids, device, IP, region, email) the card-like run
    is replaced by a keyed token and the payment lands flagged; elsewhere it is refused."""
    pan, shown, text = case
    outcome = outcome_of(orjson.dumps(event(issuer_pan(random.Random(1), "visa", 16), **{field: text})))
    if field in TOKENIZED_FIELDS:
        assert isinstance(outcome, MaskedPayment), (field, outcome)
        assert outcome.masking_reason.endswith(CARD_LIKE_FLAG + field)
        assert TOKEN_PREFIX in (getattr(outcome, field) or "")
    else:
        assert isinstance(outcome, Rejection), f"{text!r} in {field} was accepted"
    out = written_out(outcome)
    assert pan not in out and pan not in strip_separators(out), f"the PAN was written: {out}"
    assert shown not in out
    assert not find_pans(out)


def test_issue_17_written_forms_are_found_and_never_land():
    visa, amex, visa13 = "4111111111111111", "378282246310005", "4222222222222"
    forms = [
        ("4111.1111.1111.1111", visa), ("4111 1111-1111.1111", visa), ("41-1111 1111.1111-11", visa),
        ("4111-1111-1111-111 1", visa), ("4111 1111 11111 111", visa), ("3782 8224 6310 005", amex),
        ("3782.822463.10005", amex), ("3782 82246 310005", amex), ("4222 2222 22222", visa13),
        ("1.4111111111111111", visa), ("v2.4111111111111111", visa), ("ref 12.4111 1111 1111 1111.5", visa),
        ("04111111111111111", visa), ("41111111111111110", visa), ("4111111111111111.00", visa),
    ]
    for form, pan in forms:
        assert pan in [h.digits for h in find_pans(form)], form
        landed = outcome_of(orjson.dumps(event(visa, transaction_id=form)))
        assert isinstance(landed, MaskedPayment) and landed.transaction_id.count(TOKEN_PREFIX) == 1, form
        assert pan not in strip_separators(written_out(landed)), landed
        refused = outcome_of(orjson.dumps(event(visa, amount=form)))
        assert isinstance(refused, Rejection) and refused.reason == "card_data_in_field", form
        assert pan not in strip_separators(written_out(refused)), refused


def test_numbers_that_are_not_card_numbers_are_left_alone():
    for text in ("203.255.255.254", "3.1.2.3", "2026-11-20T10:00:00.000Z", "1732096800123", "125.50",
                 "4111111111111112", "1111 1111 1111 1111", "4111---------1111---------1111---------1111", "4111x1111x1111x1111",
                 "411111111111", "2026-11-20 10:45:00,123456789"):
        assert not find_pans(text), text
    # up to three marks in a gap, and white space of any length, still join (issue 26: slash,
    # plus, colon, comma and runs of spaces were written by an outside attack)
    for text in ("4111--1111--1111--1111", "4111_1111_1111_1111", "4111 - 1111 - 1111 - 1111",
                 "4111,1111,1111,1111", "4111/1111/1111/1111", "4111 -- 1111 -- 1111 -- 1111"):
        assert [h.digits for h in find_pans(text)] == ["4111111111111111"], text


def test_digits_of_other_scripts_count():
    arabic = "4111111111111111".translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert [h.digits for h in find_pans(f"x{arabic}y")] == ["4111111111111111"]
    landed = outcome_of(orjson.dumps(event(device_id=arabic)))
    assert isinstance(landed, MaskedPayment) and landed.device_id.startswith(TOKEN_PREFIX)
    refused = outcome_of(orjson.dumps(event(amount=arabic)))
    assert isinstance(refused, Rejection) and refused.reason == "card_data_in_field"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789 -.x\x00\u0663\u00a0\u2013"), max_size=60)
       | st.text(max_size=40))
def test_the_precheck_never_hides_a_hit(text):
    """may_hold_pan is the hot path's shortcut: a False must mean find_pans finds nothing."""
    if not may_hold_pan(text):
        assert not find_pans(text)
        assert redact_card_like(text) == text


def test_the_log_scrubber_masks_every_written_form():
    scrubber = PanScrubber()
    record = logging.LogRecord("payflow", logging.INFO, __file__, 1, "payment ref %s failed", ("1.4111.1111.1111.1111",),
                               None)
    record.event = "4111 1111-1111.1111"
    scrubber.filter(record)
    for text in (record.getMessage(), record.event):
        assert "4111111111111111" not in strip_separators(text) and not find_pans(text), text


def test_simulated_valid_traffic_has_no_false_positives():
    """20,000 simulated messages: no non-card field of a well-formed payment holds a card
    number, and decode accepts every one (duplicates and late events are well-formed)."""
    options = SimOptions(count=20_000, seed=17, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
    stream = list(itertools.islice(EventStream(options), options.count))
    well_formed = [m for m in stream if m.kind != "malformed"]
    assert len(well_formed) > 19_000
    end = max(orjson.loads(m.value)["event_time"] for m in well_formed)
    now = datetime.fromisoformat(end.replace("Z", "+00:00"))
    for m in well_formed:
        doc = orjson.loads(m.value)
        for key, value in doc.items():
            if key not in CARD_FIELDS:
                assert not find_pans(str(value)), (key, value)
        result = decode(m.value, now=now)
        assert isinstance(result, ValidatedPayment), (result, m.value)


@pytest.mark.parametrize("text", ["", "no digits", "4111 1111 1111 1111", "x" * 1000 + "4111.1111.1111.1111"])
def test_find_pans_bytes_reports_byte_offsets(text):
    data = b"\x00\xff\x01" + text.encode() + b"\x9c"
    hits = find_pans_bytes(data)
    for h in hits:
        assert strip_separators(data[h.start:h.end].decode()) == h.digits
    assert bool(hits) == ("4111" in text)


def test_float_arguments_in_logs_are_not_counted_as_card_numbers():
    """mode's timers log drifts with %r (17 digits): the fraction of one holds a Luhn-valid
    window at a card prefix about half the time. The scrubber writes float arguments with 6
    significant digits; a float that could be a card number (>= 10^11) is still found."""
    from payflow import logs

    rng = random.Random(8)
    before = logs.pan_detections
    for _ in range(200):
        record = logging.LogRecord("mode.timers", logging.INFO, __file__, 1,
                                   "Timer %s woke up too late, with a drift of +%r runtime=%r sleeptime=%r",
                                   ("Monitor.sampler", rng.uniform(0.1, 3), rng.uniform(0, 1e-3), rng.uniform(0.5, 2)),
                                   None)
        PanScrubber().filter(record)
    assert logs.pan_detections == before
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", (4111111111111111.0,), None)
    PanScrubber().filter(record)
    assert logs.pan_detections == before + 1 and "4111111111111111" not in record.getMessage()


def test_random_uuids_are_not_card_numbers_but_a_pan_beside_one_is():
    """UUIDs are the usual transaction ids; about one in 250 held a Luhn-valid, plausible
    window across its dashes and its payment went to the DLQ (an outside attack)."""
    import uuid

    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(30_000)]
    ids += [str(uuid.uuid1()) for _ in range(2_000)]
    assert [u for u in ids if find_pans(u)] == []
    pan = issuer_pan(random.Random(3), "visa", 16)
    assert pan in [h.digits for h in find_pans(f"{ids[0]} {pan}")]
    # shaped like a UUID but not one (variant nibble 1): the digits across its dashes are found
    assert pan in [h.digits for h in find_pans(f"abcdabcd-{pan[:4]}-{pan[4:8]}-{pan[8:12]}-{pan[12:]}abcdefab")]



def test_a_uuid_glued_to_a_name_is_still_a_uuid():
    # a RocksDB table file: the db identity follows its property name with no separator, and
    # this one holds a Luhn-valid window across its dashes (a PCI scan of the state flagged it)
    from payflow.stages.cards import find_pans_bytes

    sst = b"\x13$reating.db.identityee9fa2c4-6532-4995-9228-969647f9ad13\x11\r\x02host.identity"
    assert find_pans_bytes(sst) == []
    assert find_pans_bytes(b"x6532 4995 9228 9696 47x") != []  # the same digits, not in a UUID
