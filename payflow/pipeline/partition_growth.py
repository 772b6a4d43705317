"""The raw topic grown while the pipeline runs: the topics keyed like it follow.

A sender's state (dedup, watermarks, activity) sits in the partition its payments arrive on,
and each state table logs a partition's changes to the same partition of its changelog; the
erasure requests are keyed by sender too. So those topics must have as many partitions as
the raw topic: when an operator grows it, a worker that saw a payment on a partition its
changelogs do not have would fail to log its state, and Faust's assignor, which keeps topics
together only when their partition counts match, would hand a raw partition and its state to
different workers. `PartitionFollowers` grows them to the raw topic's count at the worker's
start, when a rebalance brings partitions, and before a batch from a partition they lack is
processed (payflow.pipeline.runtime); the consumer sees the new counts at its next metadata
refresh and the group rebalances once more, with every topic co-partitioned again.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable

from payflow.kafka_admin import follow_partitions, partition_counts
from payflow.pipeline.outputs import partitions_including
from payflow.runtime import internals

log = logging.getLogger("payflow.pipeline")


class PartitionFollowers:
    """Keeps `followers()` at the raw topic's partition count (see the module's docstring)."""

    def __init__(self, app: Any, *, bootstrap: str, raw_topic: str, followers: Callable[[], list[str]],
                 follow: Callable[..., Any] = follow_partitions, counts: Callable[..., Any] = partition_counts):
        self.app = app
        self.bootstrap = bootstrap
        self.raw_topic = raw_topic
        self.followers = followers
        self._follow = follow
        self._counts = counts
        self.partitions: int | None = None  # what every follower is known to have
        self._lock = asyncio.Lock()

    async def follow(self) -> int | None:
        """Grow the followers to the raw topic's count (idempotent); returns that count."""
        async with self._lock:
            count = await self._follow(self.bootstrap, self.raw_topic, self.followers())
            if count is not None and self.partitions is not None and count > self.partitions:
                log.warning("%s now has %d partitions (was %d): its changelogs and erasure requests follow; "
                            "the consumer group rebalances onto them", self.raw_topic, count, self.partitions)
                # the producer learns the new partitions now, not at its next metadata refresh
                # (minutes): a state record for one of them must not wait for it. Topics Faust
                # has not created yet are learnt by the producer when first sent to.
                producer = internals.kafka_producer(self.app)
                for topic in await self._counts(self.bootstrap, self.followers()):
                    await partitions_including(producer, topic, count - 1)
            if count is not None:
                self.partitions = count
            return count
