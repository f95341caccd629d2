"""Need-to-know access policies (PRODUCT.md capability 2).

Every read of a waybill goes through :meth:`PolicyEngine.decide`, which asks a Cedar policy set
(``policy/default/`` unless configured otherwise) whether this employee, for this task, may do this
now. See ``docs/policies.md``.
"""

from courierguard.policy.cases import CaseResult, PolicyCase, check_own_cases, load_cases, run_cases
from courierguard.policy.interfaces import PolicyDecider
from courierguard.policy.models import (
    CaseFacts,
    PolicyAction,
    PolicyDecision,
    PolicyRequest,
    Principal,
    WaybillFacts,
)
from courierguard.policy.service import PolicyEngine, default_policy_dir

__all__ = [
    "CaseFacts",
    "CaseResult",
    "PolicyAction",
    "PolicyCase",
    "PolicyDecider",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyRequest",
    "Principal",
    "WaybillFacts",
    "check_own_cases",
    "default_policy_dir",
    "load_cases",
    "run_cases",
]
