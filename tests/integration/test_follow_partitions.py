"""The topics keyed like the raw topic follow its partition count (real broker)."""
from __future__ import annotations

import asyncio

import pytest

from payflow.kafka_admin import PartitionsAhead, ensure_topics, follow_partitions, partition_counts
from tests.helpers import KAFKA, unique, wait_until

pytestmark = pytest.mark.integration


def test_followers_grow_to_the_raw_topic_and_one_ahead_of_it_is_refused_in_one_line(kafka):
    prefix = unique("follow-") + "-"
    raw, changelog, missing = prefix + "payment-events", prefix + "dedup-changelog", prefix + "not-yet"
    asyncio.run(ensure_topics(KAFKA, [raw], 8))
    asyncio.run(ensure_topics(KAFKA, [changelog], 4))
    # a topic just created takes a moment to appear in the brokers' metadata
    wait_until(lambda: asyncio.run(partition_counts(KAFKA, [raw, changelog])) == {raw: 8, changelog: 4}, 30,
               what="the topics created")
    assert asyncio.run(follow_partitions(KAFKA, raw, [changelog, missing])) == 8
    # the brokers learn the new partitions from the controller a moment later
    wait_until(lambda: asyncio.run(partition_counts(KAFKA, [raw, changelog, missing])) == {raw: 8, changelog: 8},
               30, what="the changelog grown to 8 partitions")
    assert asyncio.run(follow_partitions(KAFKA, raw, [changelog])) == 8  # idempotent

    ahead = prefix + "erasure-requests"
    asyncio.run(ensure_topics(KAFKA, [ahead], 12))
    wait_until(lambda: asyncio.run(partition_counts(KAFKA, [ahead])) == {ahead: 12}, 30, what="the topic created")
    with pytest.raises(PartitionsAhead) as refused:
        asyncio.run(follow_partitions(KAFKA, raw, [changelog, ahead]))
    message = str(refused.value)
    assert "\n" not in message and f"--topic {raw} --partitions 12" in message


def test_no_raw_topic_yet_leaves_everything_to_the_worker(kafka):
    prefix = unique("follow-") + "-"
    assert asyncio.run(follow_partitions(KAFKA, prefix + "payment-events", [prefix + "x"])) is None
