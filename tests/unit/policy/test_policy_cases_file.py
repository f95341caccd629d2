"""The shipped cases file: every case passes, and it covers every role and every action."""

from __future__ import annotations

import pytest

from courierguard.events import Role
from courierguard.policy import PolicyAction, PolicyCase, PolicyEngine, default_policy_dir, load_cases
from courierguard.policy.cases import check

CASES = load_cases(default_policy_dir() / "cases.yaml")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(engine: PolicyEngine, case: PolicyCase) -> None:
    problem = check(case, engine.decide(case.request))
    assert problem is None, problem


def test_covers_every_role_and_action_allowed_and_denied() -> None:
    roles = {(c.request.principal.role, c.expect_allowed) for c in CASES}
    actions = {(c.request.action, c.expect_allowed) for c in CASES}
    assert {r for r, _ in roles} == set(Role)
    assert {a for a, _ in actions} == set(PolicyAction)
    assert {(r, False) for r in Role} <= roles
    assert {(r, True) for r in Role} <= roles
    assert {(a, False) for a in PolicyAction} <= actions
    # admin and ingest are allowed to exactly one role each; every other action to someone.
    assert {(a, True) for a in PolicyAction} <= actions


def test_every_policy_is_exercised(engine: PolicyEngine) -> None:
    fired = {pid for c in CASES for pid in engine.decide(c.request).policy_ids}
    assert fired == set(engine.policy_ids)
