"""What a processed batch publishes: the enriched records' bytes, however masked_at is written."""
from __future__ import annotations

import zlib
from datetime import datetime, timezone

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.pipeline.outputs import enriched_records, landed_records
from payflow.stages.batch import RawItem
from tests.fakes import dict_processor
from payflow.settings import Topics
from payflow.simulator.generator import EventStream, SimOptions
from tests.helpers import TEST_HMAC_KEYS


@pytest.mark.parametrize("masked_at", [datetime(2026, 11, 20, 10, 5, 7, 123456, tzinfo=timezone.utc),
                                       datetime(2026, 11, 20, 10, 5, 7, tzinfo=timezone.utc)])
def test_enriched_records_are_the_payments_own_json(masked_at):
    """enriched_records writes a batch's shared masked_at once; each record must still be the
    bytes the payment writes alone (microseconds present or not)."""
    msgs = list(EventStream(SimOptions(count=300, seed=3, start_time=datetime(2026, 11, 20, 9, tzinfo=timezone.utc))))
    processor = dict_processor(keyring=KeyRing.parse(TEST_HMAC_KEYS), dedup_table={}, watermark_table={},
                               sender_table={}, card_table={}, now=lambda: masked_at)
    result = processor.process([RawItem(zlib.crc32(m.key or b"") % 4, i, m.value) for i, m in enumerate(msgs)])
    topics = Topics()
    published = landed_records(enriched_records(result), [], topics, masked_at)
    assert len(published) == len(result.enriched) > 200
    for (_, _, key, value), e in zip(published, result.enriched):
        assert value == e.to_enriched_json()
        assert key == e.payment.sender_account_id.encode()
    assert datetime.fromisoformat(orjson.loads(published[0][3])["masked_at"]) == masked_at
