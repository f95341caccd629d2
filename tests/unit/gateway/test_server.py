"""``courierguard.gateway.server.serve``: uvicorn with the settings' options, and the collector tuned."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from courierguard.config import Settings
from courierguard.gateway.server import SERVING_GC_THRESHOLDS, serve


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
