"""The risk hook: the one seam between the request path and the risk engine.

The gateway builds the Access Event v1 it is about to serve and asks the hook for a decision before
any data leaves. The default hook allows everything; the risk engine plugs in here without any change
to the gateway.
"""

from __future__ import annotations

from typing import Protocol

from courierguard.events import AccessEvent, RiskAction, RiskDecision


class RiskHook(Protocol):
    def assess(self, event: AccessEvent) -> RiskDecision:
        """Decide on ``event`` (and learn from it). Must not raise for well-formed events."""
        ...


class AllowAll:
    """The default hook before a risk engine is configured: every event is allowed, score 0."""

    def assess(self, event: AccessEvent) -> RiskDecision:
        return RiskDecision(
            event_id=event.id,
            ts=event.ts,
            actor_id=event.actor.id,
            session_id=event.session.id if event.session else None,
            action=RiskAction.ALLOW,
            score=0.0,
        )
