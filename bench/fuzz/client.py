"""A raw HTTP/1.1 client for the fuzz benchmark: bytes out, bytes in, nothing normalised.

Design rule: the client never fixes a request up (no quoting, no header checks, no default
Content-Type) and never trusts a response: it frames the body itself (Content-Length or
chunked), so a body cut short is seen as such, and every exchange has one deadline. HTTP
libraries refuse or rewrite exactly the inputs a fuzzer wants to send (a NUL in the path, a
Latin-1 byte in a header, no Content-Type at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

HEAD_LIMIT = 1 << 20  # a response head larger than this is an error of its own
STREAM_PEEK_BYTES = 4096


@dataclass(slots=True)
class Outcome:
    """What came back. kind: ok, stream (an SSE response, peeked at and closed), hang (no
    complete answer within the deadline), truncated (a body cut short, broken chunked
    framing, or a JSON content type whose body does not parse), dropped (the connection
    closed with no answer at all)."""

    kind: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed: float = 0.0
    detail: str = ""


class Truncated(Exception):
    pass


class Connection:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.stage = ""  # where the exchange is, for a hang's description

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=HEAD_LIMIT
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def exchange(
        self, raw: bytes, *, head: bool, timeout: float, stream_peek: float
    ) -> Outcome:
        """Send one request and read its answer; a reused connection that the server had
        already closed (keep-alive expiry) is retried once on a fresh one."""
        reused = self.writer is not None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                try:
                    return await self._exchange(raw, head, stream_peek, started)
                except _NoAnswer:
                    self.close()
                    if not reused:
                        raise
                    return await self._exchange(raw, head, stream_peek, started)
        except TimeoutError:
            self.close()
            return Outcome("hang", elapsed=time.perf_counter() - started, detail=self.stage)
        except _NoAnswer as exc:
            self.close()
            return Outcome("dropped", elapsed=time.perf_counter() - started, detail=str(exc))

    async def _exchange(
        self, raw: bytes, head: bool, stream_peek: float, started: float
    ) -> Outcome:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        self.stage = "no status line"
        self.writer.write(raw)
        # The server may answer (413) and stop reading: read that answer anyway.
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        try:
            status, headers = await self._head()
            while 100 <= status < 200:  # Expect: 100-continue, interim answers
                status, headers = await self._head()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _NoAnswer(f"no response: {type(exc).__name__}") from None
        except (asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            return Outcome("truncated", status=None, detail=f"unreadable head: {exc}")
        self.stage = f"status {status} sent, body incomplete"
        ctype = headers.get("content-type", "")
        if ctype.startswith("text/event-stream") and 200 <= status < 300:
            body = await self._peek(stream_peek)
            self.close()  # a live stream is never reused
            return Outcome("stream", status, headers, body, time.perf_counter() - started)
        try:
            body = await self._body(status, headers, head)
        except Truncated as exc:
            self.close()
            return Outcome(
                "truncated", status, headers, b"", time.perf_counter() - started, str(exc)
            )
        if "close" in headers.get("connection", "").lower():
            self.close()
        elapsed = time.perf_counter() - started
        if body and "json" in ctype:
            try:
                json.loads(body)
            except ValueError as exc:
                return Outcome("truncated", status, headers, body, elapsed, f"bad JSON: {exc}")
        return Outcome("ok", status, headers, body, elapsed)

    async def _head(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        blob = await self.reader.readuntil(b"\r\n\r\n")
        lines = blob.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return int(parts[1]), headers

    async def _body(self, status: int, headers: dict[str, str], head: bool) -> bytes:
        assert self.reader is not None
        if head or status in (204, 304):
            return b""
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return await self._chunked()
            if "content-length" in headers:
                length = int(headers["content-length"])
                return await self.reader.readexactly(length)
            body = await self.reader.read()  # framed by the connection's end
            self.close()
            return body
        except asyncio.IncompleteReadError as exc:
            raise Truncated(f"body cut after {len(exc.partial)} of {exc.expected} bytes") from None
        except (ConnectionError, ValueError) as exc:
            raise Truncated(f"body unreadable: {type(exc).__name__}: {exc}") from None

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            line = await self.reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            chunk = await self.reader.readexactly(size + 2)
            if not chunk.endswith(b"\r\n"):
                raise Truncated("chunk not followed by CRLF")
            parts.append(chunk[:-2])

    async def _peek(self, seconds: float) -> bytes:
        """The first bytes of a live stream, read for at most `seconds`."""
        assert self.reader is not None
        got = b""
        deadline = time.monotonic() + seconds
        while len(got) < STREAM_PEEK_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(self.reader.read(STREAM_PEEK_BYTES), left)
            except TimeoutError:
                break
            if not data:
                break
            got += data
        return got


class _NoAnswer(Exception):
    pass
