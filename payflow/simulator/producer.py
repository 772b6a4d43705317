"""Send the simulated stream with aiokafka's idempotent producer.

acks=all + enable_idempotence: a retry after a lost acknowledgement cannot create a second
copy (the broker de-duplicates by producer id and sequence). aiokafka retries a batch with
retry_backoff_ms=100 until request_timeout_ms; a batch that still fails is reported as
unconfirmed and the run exits non-zero (re-sending it from here would defeat idempotence).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import asdict
from pathlib import Path

from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from payflow.kafka_admin import ensure_topics
from payflow.kafka_security import current as kafka_security
from payflow.simulator.generator import EventStream, Message, SimOptions
from payflow.simulator.manifest import Manifest

log = logging.getLogger(__name__)
IN_FLIGHT_WINDOW = 20_000  # futures awaited in windows, so memory stays bounded


def make_producer(bootstrap: str, *, idempotent: bool = True, **overrides) -> AIOKafkaProducer:
    config = dict(
        bootstrap_servers=bootstrap,
        client_id="payflow-simulator",
        enable_idempotence=idempotent,
        acks="all",
        retry_backoff_ms=100,
        request_timeout_ms=30_000,
        linger_ms=20,
        max_batch_size=256 * 1024,
        max_request_size=2 * 1024 * 1024,
        compression_type="lz4",
        **kafka_security().client_kwargs(),
    )
    config.update(overrides)
    return AIOKafkaProducer(**config)


async def simulate(options: SimOptions, *, bootstrap: str, topic: str, partitions: int,
                   manifest_path: Path | None, rate: float | None = None, progress: bool = True,
                   idempotent: bool = True, producer_overrides: dict | None = None) -> Manifest:
    stream = EventStream(options)
    opts = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(options).items()}
    opts["start_time"] = stream.start.isoformat()
    manifest = Manifest(seed=options.seed, options=opts, start_time=stream.start.isoformat(), topic=topic)
    await ensure_topics(bootstrap, [topic], partitions)
    producer = make_producer(bootstrap, idempotent=idempotent, **(producer_overrides or {}))
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError):
        pass
    bar = tqdm(total=options.count, unit="ev", disable=not progress, smoothing=0.1, mininterval=0.5)
    pending: list[tuple[asyncio.Future, Message]] = []
    failed = 0
    started = time.perf_counter()

    async def settle() -> None:
        nonlocal failed
        for fut, msg in pending:
            try:
                await fut
                manifest.record(msg)
            except Exception as exc:  # noqa: BLE001 - counted and reported, run exits non-zero
                failed += 1
                log.error("delivery of a %s message not confirmed: %s", msg.kind, type(exc).__name__)
        bar.update(len(pending))
        pending.clear()

    try:
        for i, msg in enumerate(stream):
            if stop.is_set():
                manifest.interrupted = True
                break
            if rate:
                ahead = i / rate - (time.perf_counter() - started)
                if ahead > 0.005:
                    await asyncio.sleep(ahead)
            fut = await producer.send(topic, msg.value, key=msg.key)
            pending.append((fut, msg))
            if len(pending) >= IN_FLIGHT_WINDOW or (rate and len(pending) >= max(1, int(rate / 10))):
                await settle()
        await producer.flush()
        await settle()
    finally:
        bar.close()
        await producer.stop()
        try:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError):
            pass
    elapsed = time.perf_counter() - started
    manifest.throughput = {"seconds": round(elapsed, 3),
                           "events_per_second": round(manifest.messages_sent / elapsed, 1) if elapsed else 0.0,
                           "unconfirmed": failed}
    if manifest_path:
        manifest.write(manifest_path)
    return manifest
