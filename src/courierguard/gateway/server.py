"""Running the HTTP API in this process: uvicorn with the settings' proxy rules, and a garbage
collector tuned for serving requests.

CPython's collector starts a young collection every 700 allocations of container objects and a
full one whenever enough objects have survived into the old generation. A request waiting for its
durable audit commit keeps its objects (request, models, Access Event) alive across young
collections, so they are promoted, and full collections walk every object of the process (FastAPI,
pydantic and SQLAlchemy's start-up heap included). So after start-up the heap built so far is
frozen (never walked again; it lives as long as the process anyway), and collections run about 30
times less often. Reference cycles are still collected, only later. Measured on one core under the
gateway benchmark's load: 3-7% more guarded reveals per second, resident memory unchanged (about
190 MB either way). Before the audit writer kept a database connection of its own (SQLAlchemy's
per-transaction objects for every commit), the same tuning measured about 20%.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
from typing import Literal

from fastapi import FastAPI

from courierguard.config import Settings

# (young, middle, old) thresholds; CPython's defaults are (700, 10, 10).
SERVING_GC_THRESHOLDS = (20_000, 50, 100)

HttpParser = Literal["auto", "httptools", "h11"]
"""uvicorn's HTTP/1.1 parser. ``auto`` is httptools (C, a dependency of Courier Guard) when it
imports, else h11 (pure Python). Measured on one core under the gateway benchmark: httptools
serves about 30% more guarded reveals per second than h11, and about 55% more unguarded ones."""


def tune_gc_for_serving() -> None:
    """Freeze the start-up heap and space out collections (see the module docstring). Idempotent."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


MAX_HEAD_BYTES = 64 * 1024
"""Largest request line and headers accepted (give or take one read of the socket, at most 256 KB);
a larger head is refused with a 431 problem and the connection closed. httptools sets no limit of its
own: eight anonymous connections each sending a 64 MB header took the worker from 267 to 834 MB (459 MB
kept after), and its event loop 82 s (the parser concatenates a header's pieces as they come)."""


def _problem_response(status: int, phrase: str, title: str, detail: str, reason: str) -> bytes:
    """A complete HTTP/1.1 response carrying an RFC 9457 problem, the connection to be closed."""
    from courierguard.gateway.http import SECURITY_HEADERS
    from courierguard.gateway.problems import MEDIA_TYPE, PROBLEM_TYPE_BASE

    body = json.dumps(
        {
            "type": PROBLEM_TYPE_BASE + reason,
            "title": title,
            "status": status,
            "detail": detail,
            "reason": reason,
        }
    ).encode()
    head = [f"HTTP/1.1 {status} {phrase}".encode(), f"content-type: {MEDIA_TYPE}".encode()]
    head += [f"content-length: {len(body)}".encode(), b"connection: close"]
    head += [name + b": " + value for name, value in SECURITY_HEADERS]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


HEAD_TIMEOUT_S = 10.0
"""Longest a client may take to send a request's line and headers, from its connection or its first
byte. uvicorn sets no such limit: 300 connections each holding a 60 KB head half sent were all still
open 21 s later (about 33 KB of the worker's memory each, and a file descriptor; 20,000 allowed)."""


def bounded_httptools(head_timeout_s: float = HEAD_TIMEOUT_S) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the head bounded by :data:`MAX_HEAD_BYTES` and, in time, by
    ``head_timeout_s`` (a 408 problem, the connection closed), and its own refusals (a request it
    cannot parse) answered as problem JSON rather than plain text."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    too_large = _problem_response(
        431, "Request Header Fields Too Large", "Request header fields too large",
        f"request line and headers over {MAX_HEAD_BYTES} bytes", "headers_too_large",
    )  # fmt: skip
    malformed = _problem_response(
        400, "Bad Request", "Bad request", "not a valid HTTP/1.1 request", "bad_request"
    )

    too_slow = _problem_response(
        408, "Request Timeout", "Request timeout",
        f"request line and headers not received within {head_timeout_s:g} s", "request_timeout",
    )  # fmt: skip

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _in_head = False
        _head_bytes = 0
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0
            self._start_head_timer()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._stop_head_timer()
            super().on_headers_complete()

        def _start_head_timer(self) -> None:
            self._stop_head_timer()
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            # Never began, or its head is still arriving.
            if (self.cycle is None or self._in_head) and not self.transport.is_closing():
                self.transport.write(too_slow)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head:  # every byte of this read belongs to a head not yet complete
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                    self._in_head = False
                    self.transport.write(too_large)
                    self.transport.close()

        def send_400_response(self, msg: str) -> None:
            self.transport.write(malformed)
            self.transport.close()

    return BoundedHttpToolsProtocol


def serve(app: FastAPI, settings: Settings, *, http: HttpParser = "auto") -> None:
    """Serve ``app`` on ``settings.host:port`` until interrupted (one worker, this process)."""
    import uvicorn

    protocol: HttpParser | type[asyncio.Protocol] = http
    if http != "h11" and importlib.util.find_spec("httptools") is not None:
        protocol = bounded_httptools()
    tune_gc_for_serving()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        log_level="warning",
        access_log=False,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies,
    )
