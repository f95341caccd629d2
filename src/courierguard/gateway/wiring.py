"""Assembles a deployment's request path from settings: audit log, policies, risk engine, Guard.

The one place where the gateway's collaborators are chosen; HTTP, CLI and demo all start here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from courierguard.app import Core, open_core
from courierguard.audit import AuditLog, AuditQueries, EntryKind, open_audit_log
from courierguard.clock import Clock
from courierguard.company import CompanyStore
from courierguard.config import Settings
from courierguard.gateway.identity import ApiKeys, Devices, DevIssuer, SessionStore, TokenVerifier
from courierguard.gateway.service import Guard
from courierguard.policy import PolicyEngine, check_own_cases, default_policy_dir
from courierguard.policy.cases import CASES_FILE
from courierguard.risk.alerts import Alert, AlertSink, FanoutSink, SqlSink, WebhookSink
from courierguard.risk.engine import RiskEngine
from courierguard.risk.interfaces import RiskHook
from courierguard.risk.state import MemoryState, RedisState
from courierguard.vault.keys import KeyProvider

log = logging.getLogger(__name__)


class AuditAlertSink:
    """Writes every risk alert into the audit trail, so alerts are as tamper-evident as accesses."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def emit(self, alert: Alert) -> None:
        try:
            self._audit.append(EntryKind.ALERT, alert.to_dict())
        except Exception as exc:  # the sink contract: never raise into the request path
            log.error("alert could not be written to the audit trail: %s", exc.__class__.__name__)


@dataclass
class Deployment:
    """Everything one running Courier Guard needs, built once."""

    core: Core
    guard: Guard
    tokens: TokenVerifier
    dev_issuer: DevIssuer | None
    alerts: SqlSink
    closables: list[Any] = field(default_factory=list)

    @property
    def risk(self) -> RiskHook:
        """The risk hook on the request path (the Guard holds it)."""
        return self.guard.risk

    def close(self) -> None:
        self.guard.audit.close()
        for closable in self.closables:
            closable.close()
        self.core.close()


def build_risk_engine(settings: Settings, sinks: list[AlertSink]) -> RiskEngine:
    state: Any
    if settings.risk_state == "redis":
        state = RedisState.from_url(settings.redis_url, prefix=f"cg:risk:{settings.tenant}:")
    else:
        state = MemoryState()
    return RiskEngine(state=state, sink=FanoutSink(*sinks), tenant=settings.tenant)


def open_deployment(
    settings: Settings,
    *,
    clock: Clock | None = None,
    risk: RiskHook | None = None,
    audit: AuditLog | None = None,
    keys: KeyProvider | None = None,
) -> Deployment:
    """Open everything for ``settings``. ``risk`` and ``audit`` may be injected (tests, benchmarks);
    ``keys`` replaces the key provider the settings name."""
    core = open_core(settings, clock=clock, keys=keys)
    policy = PolicyEngine.from_folder(
        settings.policy_dir or default_policy_dir(),
        grace_hours=settings.reveal_grace_hours,
        compile_policies=settings.policy_compiled,
    )
    digest = policy.digest  # of the very bytes the rules and cases were built from
    tested = check_own_cases(policy)
    if policy.ignored:
        log.warning(
            "policy folder %s: ignored hidden files %s (a name starting with '.' is never loaded)",
            policy.folder,
            ", ".join(policy.ignored),
        )
    if tested is None:
        log.warning(
            "policy folder %s has no %s: its rules are not checked at start", policy.folder, CASES_FILE
        )
    audit_log = audit or open_audit_log(
        core.audit_engine,
        core.keys,
        clock=core.clock,
        witness_file=settings.audit_witness_file,
        commit_delay=settings.audit_commit_delay_ms / 1000,
    )
    # The tenant: an officer's audit search is confined to it, and must find which rules were in force.
    audit_log.append(
        EntryKind.POLICY,
        {"what": "policy.loaded", "ts": core.clock.now().isoformat(), "tenant": settings.tenant,
         "digest": digest, "policies": list(policy.policy_ids), "ignored": list(policy.ignored),
         "cases_passed": tested,
         "grace_hours": settings.reveal_grace_hours},
    )  # fmt: skip
    alerts = SqlSink(core.engine)
    sinks: list[AlertSink] = [alerts, AuditAlertSink(audit_log)]
    closables: list[Any] = []
    if settings.alert_webhook:
        webhook = WebhookSink(settings.alert_webhook, sign=core.keys.signer().sign)
        sinks.append(webhook)
        closables.append(webhook)
    hook: RiskHook = risk if risk is not None else build_risk_engine(settings, sinks)
    guard = Guard(
        settings=settings,
        vault=core.vault,
        company=CompanyStore(core.engine, tenant=settings.tenant, seals=core.vault.seals),
        policy=policy,
        audit=audit_log,
        audit_queries=AuditQueries(core.audit_engine),
        risk=hook,
        sessions=SessionStore(
            core.engine,
            tenant=settings.tenant,
            seals=core.vault.seals,
            max_age=timedelta(hours=settings.session_max_hours),
            max_idle=timedelta(minutes=settings.session_idle_minutes),
        ),
        devices=Devices(core.engine, core.vault, tenant=settings.tenant),
        api_keys=ApiKeys(core.engine, tenant=settings.tenant, seals=core.vault.seals),
        clock=core.clock,
        inline_database=settings.resolved_inline_database,
    )
    closables.append(guard.sessions)  # its last-use writer thread
    dev_issuer = None
    if settings.jwks_url:
        tokens = TokenVerifier(
            issuer=settings.jwt_issuer, audience=settings.jwt_audience, jwks_url=settings.jwks_url
        )
        closables.append(tokens)  # its key refresher thread
    else:
        key = core.keys.dev_issuer_key()
        tokens = TokenVerifier(
            issuer=settings.jwt_issuer, audience=settings.jwt_audience, dev_key=key, clock=core.clock
        )
        dev_issuer = DevIssuer(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
        log.warning(
            "development token issuer enabled: whoever reaches /v1/dev/token can act as any employee; "
            "set COURIERGUARD_JWKS_URL to your identity provider in production"
        )
    return Deployment(core, guard, tokens, dev_issuer, alerts, closables)
