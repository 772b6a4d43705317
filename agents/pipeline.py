"""The pipeline agent: raw payment events -> decode, mask, dedup, fraud -> outputs + warehouse.

One agent over batches (`take_batches`): the stages share the raw topic's partitioning, so
folding them avoids a Kafka hop (a full pass through Faust) per stage. The raw topic's
messages reach the batches straight from Faust's fetch loop (payflow.runtime.fetch). Each
batch is processed (payflow.pipeline.runtime) and handed to the checkpoint, which lands
it and acks its offsets only once its rows, outputs and state changes are durable
(payflow.pipeline.checkpoint lists the steps).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.types import TP

from payflow.app import app, raw_events, settings
from payflow.runtime import worker
from payflow.pipeline.assemble import start_runtime
from payflow.pipeline.runtime import PipelineRuntime
from payflow.runtime.take import take_batches
from payflow.pipeline.sink import SinkStopped
from payflow.tables.definitions import STATE_TABLES

log = logging.getLogger("payflow.pipeline")


@app.agent(raw_events, name="process-payments")
async def process_payments(stream):
    """Any failure stops the worker (PipelineRuntime.fail_stop: worker.fail_stop) instead of Faust's
    restart of the agent: nothing after the failure is committed, the exit is non-zero."""
    fail_stop = worker.fail_stop if app.pipeline_runtime is None else app.pipeline_runtime.fail_stop
    try:
        if app.pipeline_runtime is None:  # started here unless set before (tests: tests/fakes.py)
            app.pipeline_runtime = await start_runtime(app, settings, STATE_TABLES)
        await run(stream, app.pipeline_runtime)
    except asyncio.CancelledError:
        if process_payments.should_stop or app.should_stop:
            raise  # shutdown: nothing was acked that did not land
        # cancelled while the worker runs: Faust would restart the agent beside its
        # predecessor's unacked messages, which would hold commits and rebalances for good
        fail_stop("the pipeline agent", asyncio.CancelledError("cancelled outside shutdown"))
    except Exception as exc:  # noqa: BLE001 - every failure, known or not, stops the worker
        fail_stop("the warehouse sink" if isinstance(exc, SinkStopped) else "the pipeline agent", exc)


async def run(stream: Any, runtime: PipelineRuntime) -> None:
    log.info("stages decode -> mask -> dedup (watermark %ss) -> fraud -> sink: consuming %s",
             settings.watermark_seconds, settings.topics.raw)
    checkpoint = runtime.checkpoint
    async for messages in take_batches(stream, settings.batch_size, settings.batch_seconds,
                                       wake=checkpoint.landed, direct_topic=settings.topics.raw):
        # the landing in flight, if the warehouse is done with it (refused: these messages
        # are read again with it, not processed)
        messages = await checkpoint.commit_landed(messages)
        if messages:
            checkpoint.add(await runtime.process(messages))
        await checkpoint.advance()  # launch the next landing; wait if too much is pending


@app.on_partitions_assigned.connect
async def note_assignment(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
    """After a rebalance, the processor reloads what it cached about the raw topic's
    assigned partitions before their next batch (the tables hold the current state)."""
    if app.pipeline_runtime is not None:
        app.pipeline_runtime.processor.assigned({tp.partition for tp in assigned if tp.topic == settings.topics.raw},
                                           getattr(app, "consumer_generation_id", None))
