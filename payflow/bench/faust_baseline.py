"""Baselines for `make bench`: empty Faust agents over the pipeline's topic.

Each consumes the topic, decodes each value as JSON and acks it, nothing else; the gap
between it and the pipeline is what payflow's stages cost. BENCH_MODE picks the delivery:

- `fetch`: the pipeline's own batching, `take_batches` fed straight from Faust's fetch
  loop (payflow.runtime.fetch): the baseline the pipeline is compared with;
- `stream`: Faust's per-event stream with `noack_take` batches, what a Faust agent gets
  without payflow's fetch path (shows what that path saves).

Run by the benchmark as a worker process:
`python -m payflow.bench.faust_baseline worker -l warn`, configured by BENCH_* variables.
"""
from __future__ import annotations

import json
import os
import time

import faust
import orjson

from payflow.kafka_security import current as kafka_security
from payflow.runtime import fetch
from payflow.runtime.take import ack, take_batches
from payflow.settings import kafka_url

TOPIC = os.environ["BENCH_TOPIC"]
EXPECTED = int(os.environ["BENCH_COUNT"])
RESULT = os.environ["BENCH_RESULT"]
BATCH = int(os.environ.get("BENCH_BATCH", "2000"))
MODE = os.environ.get("BENCH_MODE", "fetch")

if MODE == "fetch":
    fetch.install()

app = faust.App(os.environ["BENCH_APP_ID"], broker=kafka_url(os.environ["BENCH_KAFKA"]), store="memory://", datadir=os.environ["BENCH_DATADIR"],
                broker_credentials=kafka_security().faust_broker_credentials(),
                consumer_auto_offset_reset="earliest", broker_max_poll_records=2000,
                stream_buffer_maxsize=4 * BATCH, web_port=int(os.environ["BENCH_WEB_PORT"]),
                autodiscover=False, key_serializer="raw", value_serializer="raw")
source = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class Count:
    seen = 0
    started: float | None = None

    @classmethod
    def add(cls, n: int) -> None:
        cls.seen += n
        if cls.seen >= EXPECTED:
            with open(RESULT, "w") as f:
                json.dump({"events": cls.seen, "seconds": time.perf_counter() - cls.started}, f)
            os._exit(0)  # the measurement is written; nothing to shut down cleanly for


def decode(value: bytes) -> None:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        pass


@app.agent(source)
async def consume(stream):
    if MODE == "fetch":
        async for messages in take_batches(stream, BATCH, 0.5, direct_topic=TOPIC):
            if not messages:
                continue
            Count.started = Count.started or time.perf_counter()
            for message in messages:
                decode(message.value)
            ack(app.consumer, messages)
            Count.add(len(messages))
    else:
        async for events in stream.noack_take(BATCH, within=0.5):
            Count.started = Count.started or time.perf_counter()
            for event in events:
                decode(event.value)
                await stream.ack(event)
            Count.add(len(events))


if __name__ == "__main__":
    app.main()
