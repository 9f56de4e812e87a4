"""Just enough HTTP/1.1 for SSE clients (stream.py) and a publisher (fanout.py).

httpx costs far more per connection than the servers under test at this scale, so the
clients speak HTTP themselves: one request, a parsed status line and headers, and an
incremental decoder for the chunked body uvicorn sends when no length is known.
"""

import asyncio
from dataclasses import dataclass, field

HOST = "127.0.0.1"
ORIGIN = "http://127.0.0.1"  # sent on every stream request, as a cross-origin page does
READ_SIZE = 65536


@dataclass
class BodyDecoder:
    """Turns raw body bytes into payload bytes; `done` once the body has ended."""

    chunked: bool
    remaining: int | None = None  # Content-Length left to read, for non-chunked bodies
    done: bool = False
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> bytes:
        if not self.chunked:
            if self.remaining is not None:
                data = data[: self.remaining]
                self.remaining -= len(data)
                self.done = self.remaining == 0
            return data
        self._buf += data
        out = bytearray()
        while not self.done:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self._buf[:line_end].split(b";", 1)[0], 16)
            chunk_end = line_end + 2 + size
            if len(self._buf) < chunk_end + 2:
                break
            out += self._buf[line_end + 2 : chunk_end]
            del self._buf[: chunk_end + 2]
            self.done = size == 0
        return bytes(out)


def build_request(method: str, path: str, port: int, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    return parse_head(await reader.readuntil(b"\r\n\r\n"))


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the (lower-cased) headers of a response head ending in CRLF CRLF."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers


def decoder_for(headers: dict[str, str]) -> BodyDecoder:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return BodyDecoder(chunked=True)
    length = headers.get("content-length")
    return BodyDecoder(chunked=False, remaining=int(length) if length is not None else None)


async def read_body(reader: asyncio.StreamReader, decoder: BodyDecoder) -> bytes:
    """Read a whole (short) body; for JSON answers from the publish endpoint."""
    body = bytearray()
    while not decoder.done:
        data = await reader.read(READ_SIZE)
        if not data:
            break
        body += decoder.feed(data)
    return bytes(body)
