"""Readiness probe for a Kafka broker: send one Metadata request, print the brokers.

Standard library only, so `make services-up` needs no virtualenv. Speaks Metadata v4
(the oldest version Kafka 4.x still serves, KIP-896) with request header v1.
Exit status 0 when the broker answered with at least --brokers brokers, 1 otherwise.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

METADATA_API_KEY = 3
METADATA_VERSION = 4
CLIENT_ID = b"services-ready"


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf.extend(chunk)
    return bytes(buf)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def unpack(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str | None:
        length = self.unpack(">h")
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value


def fetch_brokers(host: str, port: int, timeout: float) -> tuple[str | None, list[tuple[int, str, int]]]:
    """Return (cluster_id, [(node_id, host, port)]) from one Metadata request."""
    body = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, 1, len(CLIENT_ID)) + CLIENT_ID
    body += struct.pack(">i?", -1, False)  # all topics (null array), no auto-create
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read_exact(sock, 4))[0]
        reader = _Reader(_read_exact(sock, size))
    reader.unpack(">i")  # correlation id
    reader.unpack(">i")  # throttle time
    brokers = []
    for _ in range(reader.unpack(">i")):
        node_id = reader.unpack(">i")
        broker_host = reader.string()
        broker_port = reader.unpack(">i")
        reader.string()  # rack
        brokers.append((node_id, broker_host or "", broker_port))
    return reader.string(), brokers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="broker address, HOST:PORT")
    parser.add_argument("--wait", type=float, default=0.0, help="keep trying for this many seconds")
    parser.add_argument("--brokers", type=int, default=1, help="ready only when the metadata lists this many brokers")
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            cluster_id, brokers = fetch_brokers(host, int(port), timeout=2.0)
            if len(brokers) >= args.brokers:
                listed = ", ".join(f"{h}:{p} (node {n})" for n, h, p in brokers)
                print(f"kafka ready at {args.address}: cluster {cluster_id}, brokers {listed}")
                return 0
            error = f"{len(brokers)} of {args.brokers} brokers in the metadata response"
        except (OSError, ConnectionError, struct.error, ValueError) as exc:
            error = str(exc)
        if time.monotonic() >= deadline:
            print(f"kafka not ready at {args.address}: {error}", file=sys.stderr)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
