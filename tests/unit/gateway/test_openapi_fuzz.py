"""schemathesis against the gateway's own OpenAPI document: no 5xx, responses match the schema.

Runs as an authenticated outlet clerk (and as the order system for its endpoints), so generated
requests get past authentication and exercise validation, policy decisions and the vault, not only
the 401 path.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from courierguard.gateway.http import create_app

from .conftest import World

SERVICE_PATHS = ("/v1/cases", "/v1/waybills/{number}/events")


@pytest.mark.slow
def test_api_conforms_to_its_openapi_document(world: World) -> None:
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", create_app(world.deployment))
    clerk = world.login("K1")
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        service = operation.path.startswith(SERVICE_PATHS) or (
            operation.method.upper() == "POST" and operation.path == "/v1/waybills"
        )
        _fuzz(operation, world.svc if service else clerk)
        checked += 1
    assert checked >= 20


def _fuzz(operation: object, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def exercise(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers)

    exercise()
