"""RFC 9457 problem details: the one place errors become HTTP responses.

Validation errors never echo the submitted value (it may be a phone or a name): only the field's
location and a message.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from courierguard.errors import CourierGuardError, InvalidInput, Throttled, Unauthenticated

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://courierguard.dev/problems/"
MEDIA_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str, reason: str, **extra: Any) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + reason,
        "title": title,
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "retry_after" in extra and extra["retry_after"] is not None:
        headers["Retry-After"] = str(extra["retry_after"])
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI, *, pattern_rules: dict[str, str] | None = None) -> None:
    """Turn every error into problem JSON. ``pattern_rules`` words each input pattern's rule for a
    person ("must not contain NUL characters"), in place of pydantic's "should match pattern '^…$'"."""
    rules = pattern_rules or {}

    def message(err: Any) -> str:
        if err.get("type") == "string_pattern_mismatch":
            rule = rules.get(str((err.get("ctx") or {}).get("pattern", "")))
            if rule is not None:
                return rule
        if err.get("type") == "extra_forbidden":
            return "is not a field of this request"
        return str(err.get("msg", "")).removeprefix("Value error, ")

    def field(err: Any) -> str:
        raw = [str(p) for p in err.get("loc", ())]
        loc = [p for p in raw if p != "body"]
        if err.get("type") == "extra_forbidden" and loc:
            # The unknown key is the client's text, and may be anything (a phone, a name): not echoed.
            loc[-1] = "(unknown)"
        # A request without its JSON body at all is located at "body", not at "" (": Field required").
        return ".".join(loc) or ("body" if raw else "")

    @app.exception_handler(CourierGuardError)
    async def _domain(_: Request, exc: CourierGuardError) -> JSONResponse:
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidInput):
            extra["field"] = exc.field
        if isinstance(exc, Throttled):
            extra["retry_after"] = exc.retry_after
        status = 401 if isinstance(exc, Unauthenticated) else exc.status
        return problem(status, exc.title, exc.detail, str(exc.reason), **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": field(err),
                "message": message(err),
            }
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "request", "message": "invalid"}
        return problem(
            422, "Invalid input", f"{first['field']}: {first['message']}", "invalid_input",
            field=first["field"], errors=errors,
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(exc.status_code, str(exc.detail), str(exc.detail), reason)

    # SQLAlchemy's wrappers, and the drivers' own errors: the request path's fast reads
    # (courierguard.db.fast) talk to the DBAPI connection directly.
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    @app.exception_handler(sqlite3.OperationalError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # Fail closed, as ever (nothing was served), but say it is the database, so that a client
        # retries and a load balancer drains this worker; not the driver's text (host, user).
        log.warning("database unavailable (%s)", exc.__class__.__name__)
        return problem(
            503, "Database unavailable", f"the database cannot be reached ({exc.__class__.__name__})",
            "database_unavailable", retry_after=5,
        )  # fmt: skip

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The class name only: an exception's text may carry data the request touched.
        return problem(500, "Internal error", f"unexpected {exc.__class__.__name__}", "internal")
