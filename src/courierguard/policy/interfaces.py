"""The policy capability's interface: anything that answers a :class:`PolicyRequest`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from courierguard.policy.models import PolicyDecision, PolicyRequest


@runtime_checkable
class PolicyDecider(Protocol):
    """Decides one request. Must never raise on a well-formed request: any failure is a deny."""

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        """Allow or deny ``request``, naming the deciding rules."""
        ...
