"""docs/event-contract.md names every DLQ reason the code can give, and no other."""
from __future__ import annotations

import re

from payflow.compliance.gdpr import INVALID_ERASURE_REQUEST
from payflow.pipeline.fraud_labels import INVALID_FRAUD_LABEL
from payflow.settings import ROOT
from payflow.stages.validation import REASONS
from payflow.warehouse.base import ID_CONFLICT


def test_every_dlq_reason_is_documented_and_every_documented_one_exists():
    text = (ROOT / "docs" / "event-contract.md").read_text()
    section = text[text.index("## Dead-letter reasons"):]
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", section, re.M))
    assert documented == {*REASONS, ID_CONFLICT, INVALID_ERASURE_REQUEST, INVALID_FRAUD_LABEL}
