"""Wait until a Kafka broker answers a Metadata request (stdlib only, runs before any venv exists).

usage: wait_for_kafka.py HOST:PORT [--timeout SECONDS] [--pid PID]
Exit 0 once the broker lists itself and a controller; 1 on timeout or if PID dies.
"""
import argparse
import os
import socket
import struct
import sys
import time


def metadata_ready(host: str, port: int) -> bool:
    # Metadata v1 request: header (api_key=3, version=1, correlation_id, client_id), topics=null (all)
    client_id = b"payflow-wait"
    body = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id + struct.pack(">i", -1)
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read(sock, 4))[0]
        payload = _read(sock, size)
    correlation_id, broker_count = struct.unpack(">ii", payload[:8])
    if correlation_id != 7 or broker_count < 1:
        return False
    offset = 8
    for _ in range(broker_count):
        offset += 4  # node_id
        host_len = struct.unpack(">h", payload[offset:offset + 2])[0]
        offset += 2 + host_len + 4  # host, port
        rack_len = struct.unpack(">h", payload[offset:offset + 2])[0]
        offset += 2 + max(rack_len, 0)
    controller_id = struct.unpack(">i", payload[offset:offset + 4])[0]
    return controller_id >= 0


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--pid", type=int)
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if args.pid:
            try:
                os.kill(args.pid, 0)
            except ProcessLookupError:
                print(f"broker process {args.pid} exited", file=sys.stderr)
                return 1
        try:
            if metadata_ready(host, int(port)):
                return 0
        except (OSError, struct.error):
            pass
        time.sleep(0.5)
    print(f"no Metadata answer from {args.address} within {args.timeout:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
