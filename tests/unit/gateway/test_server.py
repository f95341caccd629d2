"""``courierguard.gateway.server.serve``: uvicorn with the settings' options, and the collector tuned."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from courierguard.config import Settings
from courierguard.gateway.server import MAX_HEAD_BYTES, SERVING_GC_THRESHOLDS, bounded_httptools, serve


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_serve_tunes_the_collector_then_runs_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(app: FastAPI, **options: Any) -> None:
        seen.update(options, app=app, threshold=gc.get_threshold(), frozen=gc.get_freeze_count())

    monkeypatch.setattr(uvicorn, "run", fake_run)
    app = FastAPI()
    settings = Settings(data_dir=tmp_path, host="0.0.0.0", port=9123, trusted_proxies="10.0.0.1")
    serve(app, settings)
    assert seen["app"] is app
    assert (seen["host"], seen["port"]) == ("0.0.0.0", 9123)
    assert seen["proxy_headers"] is True and seen["forwarded_allow_ips"] == "10.0.0.1"
    assert seen["access_log"] is False  # request lines carry waybill numbers; the gateway logs its own way
    # Collections are spaced out and the start-up heap is never walked again.
    assert seen["threshold"] == SERVING_GC_THRESHOLDS
    assert seen["frozen"] > 10_000


@pytest.fixture
def bounded_server() -> Iterator[int]:
    """A real uvicorn on an ephemeral port with the protocol ``serve`` uses; yields the port."""
    yield from _running(bounded_httptools())


@pytest.fixture
def impatient_server() -> Iterator[int]:
    """The same, waiting at most half a second for a request's head."""
    yield from _running(bounded_httptools(head_timeout_s=0.5))


def _running(protocol: type[asyncio.Protocol]) -> Iterator[int]:
    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict[str, str]:
        return {"ok": "yes"}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=protocol, log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(5)
    sock.close()


def _exchange(port: int, head: bytes, chunks: int = 0) -> tuple[bytes, int]:
    """Send ``head`` then ``chunks`` MB of header value; the response and how many MB were sent."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    sent = 0
    try:
        conn.sendall(head)
        for _ in range(chunks):
            conn.sendall(b"a" * (1 << 20))
            sent += 1
        conn.sendall(b"\r\n\r\n")
    except OSError:
        pass  # refused and closed before all of it was sent
    reply = b""
    try:
        while chunk := conn.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply and reply.endswith(b"}"):
                break
    except OSError:
        pass
    conn.close()
    return reply, sent


def test_a_huge_header_is_refused_with_a_problem_before_it_is_read(bounded_server: int) -> None:
    start = time.perf_counter()
    reply, sent = _exchange(bounded_server, b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Junk: ", chunks=256)
    assert reply.startswith(b"HTTP/1.1 431 ")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head and b"cache-control: no-store" in head
    problem = json.loads(body)
    assert problem["status"] == 431 and problem["reason"] == "headers_too_large"
    assert sent < 256  # the 256 MB were not read: the connection closed on the first megabytes
    assert time.perf_counter() - start < 3


def test_a_long_url_is_refused_and_normal_heads_pass(bounded_server: int) -> None:
    reply, _ = _exchange(
        bounded_server, b"GET /ok?" + b"a=1&" * (MAX_HEAD_BYTES // 2) + b" HTTP/1.1\r\nHost: x"
    )
    assert reply.startswith(b"HTTP/1.1 431 ")
    # A bearer token and 200 headers (12 KB) are well within the bound.
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(200))
    reply, _ = _exchange(bounded_server, b"GET /ok HTTP/1.1\r\nHost: x\r\n" + many + b"Connection: close")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b'{"ok":"yes"}')


def test_an_unparseable_request_is_answered_with_problem_json(bounded_server: int) -> None:
    reply, _ = _exchange(bounded_server, b"GET /ok HTTP/1.1\r\nHost: x\r\nBad Header\x00: v")
    assert reply.startswith(b"HTTP/1.1 400 ")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head and json.loads(body)["reason"] == "bad_request"


def test_a_head_sent_too_slowly_is_refused_and_the_connection_closed(impatient_server: int) -> None:
    start = time.perf_counter()
    half = socket.create_connection(("127.0.0.1", impatient_server), timeout=5)
    half.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Junk: aaaa")
    silent = socket.create_connection(("127.0.0.1", impatient_server), timeout=5)
    for conn in (half, silent):
        reply = b""
        while chunk := conn.recv(65536):  # until the server closes it
            reply += chunk
        conn.close()
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["reason"] == "request_timeout"
    assert time.perf_counter() - start < 3
    # A request sent in time is served, and its connection kept for the next one.
    conn = socket.create_connection(("127.0.0.1", impatient_server), timeout=5)
    for _ in range(2):
        conn.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.7)  # longer than the head timeout, shorter than keep-alive's 5 s
        assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
    conn.close()
