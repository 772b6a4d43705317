"""Layer 0: mask card data on first touch (pure function).

credit_card_masked = XXXX-XXXX-XXXX-<last 4>, cvv_masked = XXX, card_expiry_masked = MM/XX,
pii_hash = HMAC-SHA256(active key, normalised PAN | expiry). The CVV is never hashed or kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from payflow.cards import brand_of
from payflow.keys import HmacKey, pii_hash
from payflow.models import MaskedPayment
from payflow.validation import ValidatedPayment

MASKING_REASON = "PCI-DSS 4.0 req. 3.3/3.4: PAN masked, SAD (CVV) not retained"


@dataclass(frozen=True)
class MaskingAudit:
    transaction_id: str
    pii_hash: str
    pii_key_id: str
    masking_timestamp: datetime
    masking_reason: str
    user_email: str | None


def mask_pan(pan: str) -> str:
    return "XXXX-XXXX-XXXX-" + pan[-4:]


def mask_expiry(expiry: str) -> str:
    return expiry[:2] + "/XX"


def mask(payment: ValidatedPayment, key: HmacKey, masked_at: datetime,
         partition: int = -1, offset: int = -1) -> MaskedPayment:
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


def audit_of(payment: MaskedPayment) -> MaskingAudit:
    return MaskingAudit(payment.transaction_id, payment.pii_hash, payment.pii_key_id,
                        payment.masked_at, payment.masking_reason, payment.user_email)
