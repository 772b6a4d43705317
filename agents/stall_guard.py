"""Timer that un-sticks a partition whose commits wait on offsets Faust will never deliver
(see payflow/stall_guard.py)."""
from __future__ import annotations

import logging
import time

from payflow import faust_fetch, metrics
from payflow.app import app, settings
from payflow.stall_guard import PartitionAcks, StallGuard, forget_acks_from

log = logging.getLogger("payflow.stall_guard")
guard = StallGuard()


def snapshot() -> dict:
    consumer = app.consumer
    in_flight = {m.tp for m in list(consumer._unacked_messages)}
    out = {}
    for tp in consumer.assignment():
        if tp.topic != settings.topics.raw:
            continue
        acked = consumer._acked.get(tp) or []
        out[tp] = PartitionAcks(consumer._committed_offset.get(tp), min(acked) if acked else None, tp in in_flight)
    return out


@app.timer(interval=5.0)
async def unstick_partitions() -> None:
    try:
        partitions = snapshot()
    except Exception:  # noqa: BLE001 - consumer not started or rebalancing: look again later
        return
    consumer = app.consumer
    for tp, offset in guard.check(partitions, time.monotonic()):
        log.warning("partition %s: offsets from %s were read but never delivered (Faust race, "
                    "faust-streaming/faust#596); seeking back to %s, the rest comes back as replays",
                    tp.partition, offset, offset)
        metrics.STALL_RECOVERIES.inc()
        # offsets Faust filed as gaps (never to arrive) will now arrive: forget them, or
        # they would be counted twice when the commit is computed (faust#625's symptom)
        gaps = consumer._gap.get(tp)
        if gaps:
            gaps.chop(offset, 2**63)
        # acks above the seek are read again (replays): kept, they would put acks out of
        # order, and Faust's gap folding (up to the highest ack) would then count a message
        # of the re-read that is delivered but not landed as acked
        forget_acks_from(consumer._acked.get(tp), consumer._acked_index.get(tp), offset)
        faust_fetch.note_seek(tp)  # what the fetch loop still holds for tp is stale
        await consumer.seek(tp, offset)
