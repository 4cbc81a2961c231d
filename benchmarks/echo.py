"""A minimal HTTP/1.1 server with a fixed reply, to measure the load generator's own ceiling.

`python -m benchmarks.echo --port 18002`: answers every request with `200 ok`, no framework, uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

REPLY = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class EchoProtocol(asyncio.Protocol):
    """Counts complete requests (headers + Content-Length body) and answers each with REPLY."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(REPLY)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=18002)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve("127.0.0.1", args.port))


if __name__ == "__main__":
    main()
