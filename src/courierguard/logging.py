"""Structured logs (structlog, JSON lines). Log events name ids and routes, never personal data."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog


def _dumps(value: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    # orjson, not the json module: the gateway writes a line per request, and json's encoder
    # was most of that line's cost. Non-string keys are written as json would (as strings).
    return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
