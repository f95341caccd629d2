"""One uvicorn worker for the gateway benchmark, pinned to one CPU (run by ``benchmarks.gateway``).

Usage: ``python -m benchmarks._gateway_server DATA_DIR PORT CPU MODE [DATABASE_URL]`` where MODE is

* ``guarded``: the product app (``create_app(open_deployment(settings))``), real risk engine;
* ``allow-all``: the product app with the risk hook set to :class:`AllowAll`;
* ``plain``: an UNGUARDED app that exists only in this benchmark. It serves the same records in
  the same JSON shapes with the same request parsing (path pattern, body model, response model),
  but with no identity, policy, risk hook or audit record: the baseline of the guarded routes.

With DATABASE_URL (PostgreSQL, as in production) the records are read and the audit trail written
there; DATA_DIR still holds the key file.

A mode may end in ``+h11``: served on uvicorn's pure-Python h11 parser instead of httptools, to
show how much of the ratio is the HTTP parser's cost rather than the guard's.

Every mode is served as ``courierguard serve`` serves (``courierguard.gateway.server.serve``: the
same uvicorn options and the same garbage-collector tuning) and logs as it does
(``configure_logging(settings.log_level)``).
"""

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI
from fastapi import Path as PathParam

from courierguard.config import Settings
from courierguard.gateway.http import NUMBER, RevealIn, RevealOut, WaybillOut, _waybill, create_app
from courierguard.gateway.server import serve
from courierguard.gateway.wiring import Deployment, open_deployment
from courierguard.logging import configure_logging
from courierguard.risk.interfaces import AllowAll
from courierguard.vault import Vault
from courierguard.vault.keys import key_provider_from_settings

MODES = ("guarded", "allow-all", "plain", "plain-sync")


def plain_app(vault: Vault, *, sync: bool = False) -> FastAPI:
    """The unguarded baseline: the same reads of the same records, nothing else.

    By default coroutines reading SQLite on the event loop, as the product's read routes do (no
    thread hop); with ``sync`` plain functions on FastAPI's thread pool (one hop per request).
    """
    app = FastAPI(title="unguarded baseline (benchmark only)")
    number_type = Annotated[str, PathParam(pattern=NUMBER)]

    def view(number: number_type) -> WaybillOut:
        return _waybill(vault.masked(number))

    def reveal(number: number_type, body: RevealIn) -> RevealOut:
        clear = vault.reveal(number, body.fields)
        return RevealOut(number=number, fields={f.value: v for f, v in clear.items()})

    async def view_async(number: number_type) -> WaybillOut:
        return view(number)

    async def reveal_async(number: number_type, body: RevealIn) -> RevealOut:
        return reveal(number, body)

    app.get("/v1/waybills/{number}", response_model=WaybillOut)(view if sync else view_async)
    app.post("/v1/waybills/{number}/reveal", response_model=RevealOut)(reveal if sync else reveal_async)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str]) -> int:
    data_dir, port, cpu, mode = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    database_url = argv[4] if len(argv) > 4 else None
    mode, h11, _ = mode.partition("+h11")
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {MODES}")
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu})
    settings = Settings(
        data_dir=data_dir, tenant="bench", host="127.0.0.1", port=port, database_url=database_url
    )
    configure_logging(settings.log_level)
    deployment: Deployment | None = None
    if mode in ("plain", "plain-sync"):
        from courierguard.db import create_db_engine

        engine = create_db_engine(settings.resolved_database_url)
        keys = key_provider_from_settings(settings.key_provider, settings.resolved_key_file)
        app = plain_app(Vault(engine, keys, tenant=settings.tenant), sync=mode == "plain-sync")
    else:
        deployment = open_deployment(settings, risk=AllowAll() if mode == "allow-all" else None)
        app = create_app(deployment)
    try:
        serve(app, settings, http="h11" if h11 else "auto")
    finally:
        if deployment is not None:
            deployment.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
