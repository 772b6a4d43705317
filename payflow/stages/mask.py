"""Mask card data on first touch (pure function).

credit_card_masked = XXXX-XXXX-XXXX-<last 4>, cvv_masked = XXX, card_expiry_masked = MM/XX,
pii_hash = HMAC-SHA256(active key, normalised PAN | expiry). The CVV is never hashed or kept.

The GDPR erasure check runs here too (ErasedSubjects, erased_outcome): only here does the
card still exist, so only here can a subject erased under an older key be recognised after
a key rotation.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Iterable

from payflow.stages.cards import brand_of, replace_pans
from payflow.keys import HmacKey, KeyRing, pii_hash
from payflow.models import LINK_COLUMNS, MaskedPayment, Rejection

# an anonymized subject's payment: every link to the person (models.LINK_COLUMNS) blank, but
# pii_hash and pii_key_id, which name the subject in the erasure ledger for the landing's join
_BLANKED: dict[str, Any] = {
    name: None if MaskedPayment.__dataclass_fields__[name].default is None else ""
    for links in LINK_COLUMNS.values() for name in links if name not in ("pii_hash", "pii_key_id")}
from payflow.stages.validation import ValidatedPayment

MASKING_REASON = "PCI-DSS 4.0 req. 3.3/3.4: PAN masked, SAD (CVV) not retained"
# the flag of a payment whose text fields held card-like digits (masking_reason ends with it)
CARD_LIKE_FLAG = "; card-like digits replaced by keyed tokens in "
TOKEN_PREFIX = "tok_"
_HEX_AS_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


def mask_pan(pan: str) -> str:
    return "XXXX-XXXX-XXXX-" + pan[-4:]


def mask_expiry(expiry: str) -> str:
    return expiry[:2] + "/XX"


def card_like_token(key: HmacKey, digits: str) -> str:
    """The keyed token that stands for a card-like digit run in a text field: "tok_" and 24
    letters (HMAC-SHA256 of the digits, hex written as a-p, so no digits at all). The same
    run gives the same token under one key, so ids stay distinct and duplicates stay equal."""
    return TOKEN_PREFIX + key.digest(b"card-like|" + digits.encode()).hex()[:24].translate(_HEX_AS_LETTERS)


def mask(payment: ValidatedPayment, key: HmacKey, masked_at: datetime,
         partition: int = -1, offset: int = -1) -> MaskedPayment:
    masked = _mask(payment, key, masked_at, partition, offset)
    if payment.card_like:
        # docs/compliance.md: the card-like run is replaced in place, the payment lands flagged
        for name in payment.card_like:
            value = getattr(masked, name)
            if isinstance(value, str):
                setattr(masked, name, replace_pans(value, lambda digits: card_like_token(key, digits)))
        masked.masking_reason = MASKING_REASON + CARD_LIKE_FLAG + ", ".join(payment.card_like)
    return masked


def _mask(payment: ValidatedPayment, key: HmacKey, masked_at: datetime, partition: int, offset: int
          ) -> MaskedPayment:
    return MaskedPayment(
        transaction_id=payment.transaction_id,
        event_time=payment.event_time,
        sender_account_id=payment.sender_account_id,
        receiver_account_id=payment.receiver_account_id,
        amount=payment.amount,
        currency=payment.currency,
        credit_card_masked=mask_pan(payment.pan),
        cvv_masked="XXX",
        card_expiry_masked=mask_expiry(payment.expiry),
        card_brand=brand_of(payment.pan),
        pii_hash=pii_hash(key, payment.pan, payment.expiry),
        pii_key_id=key.key_id,
        masked_at=masked_at,
        masking_reason=MASKING_REASON,
        ip_address=payment.ip_address,
        geo_region=payment.geo_region,
        device_id=payment.device_id,
        merchant_id=payment.merchant_id,
        user_email=payment.user_email,
        source_partition=partition,
        source_offset=offset,
    )


# The DLQ reason of a payment whose subject is erased (validation.REASONS lists it). The
# record carries the transaction id and the reason only: no remains, hash, device, IP or email.
ERASED_SUBJECT = "erased_subject"
ERASED_DETAIL = "the payment's subject is erased (GDPR Art. 17): dropped before dedup, fraud and publishing"
_ANY_KEY = ""  # a ledger entry whose key id is unknown (erased by --pii-hash alone)


class ErasedSubjects:
    """Every hash of every erased subject (the erasure ledger, gdpr_erasures), as the mask
    step checks it.

    Erasure by card stores the subject's hash under each key of the ring at that time. After
    a rotation the active key is new and the subject's new hash is in no ledger entry, so a
    payment is also hashed under each older key the ledger holds an entry for: one more HMAC
    per such key, none while the ledger is empty or only holds active-key hashes. Erasures
    are never undone, so entries are only ever added (a refresh merges, it never drops one
    the erasure agent added meanwhile).
    """

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring
        self.modes: dict[str, str] = {}  # pii_hash -> erasure mode ("delete" wins)
        self.key_ids: dict[str, str] = {}  # pii_hash -> the key id it was taken under
        self.other_keys: list[HmacKey] = []  # non-active ring keys with a ledger entry
        self.missing_key_ids: set[str] = set()  # ledger key ids no longer in the ring

    def __len__(self) -> int:
        return len(self.modes)

    def add(self, entries: Iterable[tuple[str, str, str]]) -> int:
        """Merge ledger entries (key_id, pii_hash, mode); returns how many hashes were new."""
        new = 0
        ring_ids = {k.key_id for k in self.keyring.keys}
        wanted = {k.key_id for k in self.other_keys}
        for key_id, h, mode in entries:
            if not h:
                continue
            if h not in self.modes:
                new += 1
                self.modes[h] = mode
                self.key_ids[h] = key_id or _ANY_KEY
            elif mode == "delete":
                self.modes[h] = mode
            if not key_id:  # key unknown: it may be any key of the ring
                wanted.update(ring_ids)
            elif key_id in ring_ids:
                wanted.add(key_id)
            else:
                self.missing_key_ids.add(key_id)
        active = self.keyring.active.key_id
        self.other_keys = [k for k in self.keyring.keys if k.key_id in wanted and k.key_id != active]
        return new

    def match(self, payment: ValidatedPayment, active_hash: str) -> str | None:
        """The ledger hash under which this payment's subject is erased, or None."""
        modes = self.modes
        if active_hash in modes:
            return active_hash
        for key in self.other_keys:
            h = pii_hash(key, payment.pan, payment.expiry)
            if h in modes:
                return h
        return None


def erased_outcome(erased: ErasedSubjects, payment: ValidatedPayment,
                   masked: MaskedPayment) -> MaskedPayment | Rejection:
    """The masked payment, unless its subject is erased.

    Erased by delete: a Rejection (DLQ reason erased_subject) with nothing of the person, so
    the payment never reaches dedup, the fraud state, the outputs or the warehouse. Erased by
    anonymize: the payment goes on with every link to the person blank and pii_hash set to
    the ledger's hash, so the landing (which joins the ledger) lands it anonymized and the
    money still counts."""
    h = erased.match(payment, masked.pii_hash)
    if h is None:
        return masked
    if erased.modes[h] != "anonymize":
        return Rejection(ERASED_SUBJECT, ERASED_DETAIL, "", transaction_id=masked.transaction_id)
    return dataclasses.replace(masked, pii_hash=h, pii_key_id=erased.key_ids[h], **_BLANKED)
