"""The request line's fast path writes what structlog would, and nothing when info is off."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
import structlog

from courierguard import logging as cg_logging
from courierguard.logging import configure_logging, log_request


@contextmanager
def stderr_of(level: str) -> Iterator[io.BytesIO]:
    """What the process writes to stderr, logging configured at ``level`` (inside the test body:
    pytest swaps sys.stderr between a test's phases). Read it inside the block: the wrapper closes
    it when the block ends."""
    raw = io.BytesIO()
    text, saved = io.TextIOWrapper(raw, encoding="utf-8", write_through=True), sys.stderr
    sys.stderr = text
    try:
        configure_logging(level)
        yield raw
    finally:
        sys.stderr = saved
        structlog.reset_defaults()
        cg_logging._request_sink.stream = None


def _lines(raw: io.BytesIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in raw.getvalue().decode().splitlines()]


def test_request_line_is_the_structlog_line() -> None:
    with stderr_of("info") as stderr:
        log_request("POST", "/v1/waybills/{number}/reveal", 200, 1.25)
        structlog.get_logger("courierguard.http").info(
            "request", method="POST", route="/v1/waybills/{number}/reveal", status=200, ms=1.25
        )
        fast, slow = _lines(stderr)
    assert list(fast) == list(slow)  # same keys, same order
    for line in (fast, slow):
        stamp = str(line.pop("timestamp"))
        assert stamp.endswith("Z") and datetime.fromisoformat(stamp).utcoffset() is not None
    assert fast == slow == {
        "method": "POST", "route": "/v1/waybills/{number}/reveal", "status": 200, "ms": 1.25,
        "event": "request", "level": "info",
    }  # fmt: skip


def test_no_request_lines_above_info() -> None:
    with stderr_of("warning") as stderr:
        log_request("GET", "/healthz", 200, 0.1)
        structlog.get_logger("courierguard").warning("kept", what="x")
        assert [line["event"] for line in _lines(stderr)] == ["kept"]


def test_before_configuration_structlog_writes_it(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()
    cg_logging._request_sink.stream = None
    log_request("GET", "/healthz", 200, 0.1)
    assert "request" in capsys.readouterr().out  # structlog's default: its console renderer


def test_on_an_event_loop_lines_are_flushed_together_soon_after() -> None:
    raw = io.BytesIO()
    buffered = io.BufferedWriter(raw, buffer_size=1 << 16)  # type: ignore[arg-type]

    async def serve_three() -> tuple[bytes, bytes]:
        for status in (200, 403, 200):
            log_request("POST", "/v1/waybills/{number}/reveal", status, 0.5)
        held = raw.getvalue()
        await asyncio.sleep(cg_logging.FLUSH_AFTER * 3)
        return held, raw.getvalue()

    cg_logging._request_sink.stream, cg_logging._request_sink.enabled = buffered, True
    try:
        held, flushed = asyncio.run(serve_three())
        assert held == b""  # no system call per request
        assert [json.loads(line)["status"] for line in flushed.splitlines()] == [200, 403, 200]
        # Without a running loop nothing would flush later: the line goes out at once.
        log_request("GET", "/healthz", 200, 0.1)
        assert json.loads(raw.getvalue().splitlines()[-1])["route"] == "/healthz"
        # A loop that closed with a flush due: its line waits in the buffer (the interpreter
        # flushes stderr at exit), and the next loop's flush takes it out with its own lines.
        dying = asyncio.new_event_loop()
        dying.run_until_complete(_log_once())
        dying.close()
        before = raw.getvalue().count(b"\n")
        asyncio.run(serve_three())
        assert raw.getvalue().count(b"\n") == before + 4
    finally:
        cg_logging._request_sink.stream = None
        cg_logging._request_sink.flush()


async def _log_once() -> None:
    log_request("GET", "/healthz", 200, 0.1)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_http_client_request_lines_never_reach_the_log(level: str) -> None:
    # httpx logs each request's URL at INFO: an alert webhook's carries its access token.
    import logging

    with stderr_of(level):
        for name in ("httpx", "httpcore"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO)
