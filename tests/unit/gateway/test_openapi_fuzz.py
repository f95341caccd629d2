"""schemathesis against the gateway's own OpenAPI document: no 5xx, responses match the schema.

Runs as an authenticated outlet clerk (and as the order system for its endpoints), so generated
requests get past authentication and exercise validation, policy decisions and the vault, not only
the 401 path.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from courierguard.gateway.http import create_app

from .conftest import World

SERVICE_PATHS = ("/v1/cases", "/v1/waybills/{number}/events")
STATE_DEPENDENT = ("/v1/waybills/{number}/events",)
"""Operations whose schema-valid input may still be refused with a 422 for reasons no schema can
state: a lifecycle step's time is checked against the server's clock and the waybill's creation,
its assignee against the staff list. Every other check still runs on them; the rules are tested in
test_lifecycle_rules.py."""


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
        _fuzz(operation, world.svc if service else clerk, state_dependent=operation.path in STATE_DEPENDENT)
        checked += 1
    assert checked >= 20


def _fuzz(operation: object, headers: dict[str, str], *, state_dependent: bool) -> None:
    excluded = [positive_data_acceptance] if state_dependent else None

    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def exercise(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    exercise()
