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
