"""Baseline for `make bench`: an empty Faust agent with the pipeline's batching.

It consumes the same topic as the pipeline through `noack_take`, decodes each value as
JSON and acks it, nothing else; the gap between it and the pipeline is what payflow's
stages cost. Run by the benchmark as a worker process:
`python -m payflow.bench.faust_baseline worker -l warn`, configured by BENCH_* variables.
"""
from __future__ import annotations

import json
import os
import time

import faust
import orjson

from payflow.settings import kafka_url

TOPIC = os.environ["BENCH_TOPIC"]
EXPECTED = int(os.environ["BENCH_COUNT"])
RESULT = os.environ["BENCH_RESULT"]
BATCH = int(os.environ.get("BENCH_BATCH", "2000"))

app = faust.App(os.environ["BENCH_APP_ID"], broker=kafka_url(os.environ["BENCH_KAFKA"]), store="memory://", datadir=os.environ["BENCH_DATADIR"],
                consumer_auto_offset_reset="earliest", broker_max_poll_records=2000,
                stream_buffer_maxsize=4 * BATCH, web_port=int(os.environ["BENCH_WEB_PORT"]),
                autodiscover=False, key_serializer="raw", value_serializer="raw")
source = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def consume(stream):
    seen, started = 0, None
    async for events in stream.noack_take(BATCH, within=0.5):
        if started is None:
            started = time.perf_counter()
        for event in events:
            try:
                orjson.loads(event.value)
            except orjson.JSONDecodeError:
                pass
            await stream.ack(event)
        seen += len(events)
        if seen >= EXPECTED:
            with open(RESULT, "w") as f:
                json.dump({"events": seen, "seconds": time.perf_counter() - started}, f)
            os._exit(0)  # the measurement is written; nothing to shut down cleanly for


if __name__ == "__main__":
    app.main()
