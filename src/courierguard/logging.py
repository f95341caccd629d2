"""Structured logs (structlog, JSON lines). Log events name ids and routes, never personal data."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
import structlog


def _dumps(value: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> bytes:
    # orjson, not the json module: the gateway writes a line per request, and json's encoder
    # was most of that line's cost. Non-string keys are written as json would (as strings).
    return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS)


def _dumps_text(value: Any, default: Callable[[Any], Any] | None = None, **kw: Any) -> str:
    return _dumps(value, default, **kw).decode()


def _renderer_and_factory(buffer: BinaryIO | None) -> tuple[structlog.processors.JSONRenderer, Any]:
    """orjson's bytes straight to stderr's buffer: no decode and re-encode of every line.

    A stderr without a binary buffer (a test's capture, an embedding host) gets text lines.
    """
    if buffer is not None:
        return structlog.processors.JSONRenderer(serializer=_dumps), structlog.BytesLoggerFactory(file=buffer)
    return structlog.processors.JSONRenderer(serializer=_dumps_text), structlog.PrintLoggerFactory(
        file=sys.stderr
    )


FLUSH_AFTER = 0.05
"""Longest a request line waits in stderr's buffer while an event loop runs (seconds)."""


@dataclass(slots=True)
class _RequestSink:
    """Where :func:`log_request` writes: set by :func:`configure_logging` when stderr is binary.

    On an event loop, lines are flushed together at most :data:`FLUSH_AFTER` after the first of
    them: a flush per line was a system call per request. Every other writer to stderr (structlog,
    the ``logging`` module) goes through the same buffer, so lines keep their order.
    """

    stream: BinaryIO | None = None
    enabled: bool = True
    _due_on: asyncio.AbstractEventLoop | None = None

    def flush_soon(self) -> None:
        due_on = self._due_on
        if due_on is not None and not due_on.is_closed():
            return  # a flush is already due on a live loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing would flush later
            self.flush()
            return
        self._due_on = loop
        loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        self._due_on = None
        stream = self.stream
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # stderr gone: nowhere to report it
                stream.flush()


_request_sink = _RequestSink()


def log_request(method: str, route: str, status: int, ms: float) -> None:
    """The line the gateway writes for every HTTP request (route template, never the URL).

    The same JSON object as ``structlog.get_logger().info("request", ...)`` under
    :func:`configure_logging`, written without structlog's processor chain, which cost about three
    times the line itself on a path taken by every request. Before logging is configured (a test,
    an embedding host), structlog writes it.
    """
    sink = _request_sink
    if sink.stream is None:
        structlog.get_logger("courierguard.http").info(
            "request", method=method, route=route, status=status, ms=ms
        )
        return
    if not sink.enabled:
        return
    line = {
        "method": method, "route": route, "status": status, "ms": ms, "event": "request", "level": "info",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }  # fmt: skip
    sink.stream.write(orjson.dumps(line) + b"\n")
    sink.flush_soon()


def configure_logging(level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    # httpx logs every request's full URL at INFO: the alert webhook's, which for DingTalk and WeCom
    # robots carries the access token in its query string. Never below WARNING, even at debug.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    buffer = getattr(sys.stderr, "buffer", None)
    renderer, factory = _renderer_and_factory(buffer)
    _request_sink.flush()  # lines still buffered for the stream being replaced
    _request_sink.stream = buffer
    _request_sink.enabled = numeric <= logging.INFO
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        # Not cached on the module-level proxies, so that configuring again (a test, an embedding
        # host) takes effect everywhere. The one hot line, a request's, goes through
        # ``log_request`` and pays for no proxy at all.
        cache_logger_on_first_use=False,
    )
