"""A TCP proxy on loopback between a Kafka client and the broker that loses acknowledgements.

It forwards Kafka frames both ways, rewrites the broker's advertised port in Metadata and
FindCoordinator responses (so the client keeps talking through the proxy), and for chosen
Produce requests drops the connection after the broker has answered (so the broker has
appended the batch) but before the answer reaches the client: the client must retry.
"""
from __future__ import annotations

import asyncio
import struct

PRODUCE, METADATA, FIND_COORDINATOR = 0, 3, 10


class AckDroppingProxy:
    def __init__(self, broker_host: str, broker_port: int, *, drop_every: int = 5, max_drops: int = 10):
        self.broker = (broker_host, broker_port)
        self.drop_every = drop_every
        self.max_drops = max_drops
        self.produce_responses = 0
        self.dropped = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> "AckDroppingProxy":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(*self.broker)
        except OSError:
            client_w.close()
            return
        api_of: dict[int, int] = {}

        async def upstream() -> None:
            while True:
                frame = await _read_frame(client_r)
                api_key, _version, correlation = struct.unpack(">hhi", frame[4:12])
                api_of[correlation] = api_key
                broker_w.write(frame)
                await broker_w.drain()

        async def downstream() -> None:
            while True:
                frame = await _read_frame(broker_r)
                correlation = struct.unpack(">i", frame[4:8])[0]
                api_key = api_of.pop(correlation, None)
                if api_key in (METADATA, FIND_COORDINATOR):
                    frame = self._rewrite_port(frame)
                elif api_key == PRODUCE:
                    self.produce_responses += 1
                    if self.dropped < self.max_drops and self.produce_responses % self.drop_every == 0:
                        self.dropped += 1
                        raise ConnectionResetError("acknowledgement dropped on purpose")
                client_w.write(frame)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (client_w, broker_w):
                w.close()

    def _rewrite_port(self, frame: bytes) -> bytes:
        host, port = self.broker
        old = host.encode() + struct.pack(">i", port)
        new = host.encode() + struct.pack(">i", self.port)
        return frame.replace(old, new)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    size = struct.unpack(">i", head)[0]
    return head + await reader.readexactly(size)


class FreezableKafkaProxy:
    """A Kafka proxy on loopback that can freeze: while frozen it accepts connections and
    reads nothing, forwards nothing, answers nothing; sockets stay open. What a client sees
    of a broker whose process is stopped (SIGSTOP) or whose host hangs, without stopping
    the broker other tests share. Runs its own event loop in a thread (for sync tests)."""

    def __init__(self, broker_host: str, broker_port: int):
        import threading

        self.broker = (broker_host, broker_port)
        self.port = 0
        self._running = asyncio.Event()
        self._running.set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=30)

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(self._running.clear)

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(self._running.set)

    def stop(self) -> None:
        async def close() -> None:
            self._running.set()
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await self._running.wait()
        try:
            broker_r, broker_w = await asyncio.open_connection(*self.broker)
        except OSError:
            client_w.close()
            return
        api_of: dict[int, int] = {}

        async def upstream() -> None:
            while True:
                await self._running.wait()
                frame = await _read_frame(client_r)
                await self._running.wait()
                api_key, _version, correlation = struct.unpack(">hhi", frame[4:12])
                api_of[correlation] = api_key
                broker_w.write(frame)
                await broker_w.drain()

        async def downstream() -> None:
            while True:
                await self._running.wait()
                frame = await _read_frame(broker_r)
                await self._running.wait()
                correlation = struct.unpack(">i", frame[4:8])[0]
                if api_of.pop(correlation, None) in (METADATA, FIND_COORDINATOR):
                    host, port = self.broker
                    frame = frame.replace(host.encode() + struct.pack(">i", port),
                                          host.encode() + struct.pack(">i", self.port))
                client_w.write(frame)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (client_w, broker_w):
                w.close()
