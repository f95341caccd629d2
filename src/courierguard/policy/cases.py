"""Policy test cases: a YAML file of requests and the verdict each must get.

The format (documented in ``docs/policies.md``)::

    now: "2026-11-11T12:00:00+08:00"      # default decision time of every case
    grace_hours: 24                        # optional: the grace the cases assume (else the server's)
    principals:                            # key = employee id
      C-100: {role: courier, org_unit: OUT-SH-01}          # status defaults to active
    waybills:                              # key = a name the cases refer to
      delivering:
        number: YT4512000000017
        origin_outlet: OUT-BJ-01
        dest_outlet: OUT-SH-01
        status: out_for_delivery
        status_ts: "2026-11-11T08:00:00+08:00"
        assignee: C-100
        task: delivery
        cases: [{id: T-1, kind: ticket, owner: S-1, state: open}]
    cases:
      - name: courier reveals the recipient phone of their own delivery
        principal: C-100
        action: reveal
        waybill: delivering
        fields: [recipient.phone]
        purpose: delivery_contact
        expect: allow                      # allow | deny
        policy: courier-contact-recipient-while-delivering   # optional, must be among the deciding ids
      - name: ...
        expect: deny
        reason: no_task                    # optional, a DenyReason value (deny only)

Cases name employee ids and synthetic waybill numbers only, never personal data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from courierguard.domain import CaseKind, CaseState, EmployeeStatus, TaskKind
from courierguard.errors import ConfigError, DenyReason
from courierguard.events import PiiField, Role, WaybillStatus
from courierguard.policy._internal import loading
from courierguard.policy._internal.loading import decode_utf8, read_utf8, shown
from courierguard.policy.interfaces import PolicyDecider
from courierguard.policy.models import (
    CaseFacts,
    PolicyAction,
    PolicyDecision,
    PolicyRequest,
    Principal,
    WaybillFacts,
)

if TYPE_CHECKING:
    from courierguard.policy.service import PolicyEngine


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PrincipalSpec(_Strict):
    role: Role
    org_unit: str
    status: EmployeeStatus = EmployeeStatus.ACTIVE


class _CaseSpec(_Strict):
    id: str
    kind: CaseKind
    owner: str
    state: CaseState


class _WaybillSpec(_Strict):
    number: str
    origin_outlet: str
    dest_outlet: str
    status: WaybillStatus
    status_ts: AwareDatetime
    assignee: str | None = None
    task: TaskKind | None = None
    delivered_at: AwareDatetime | None = None
    cases: tuple[_CaseSpec, ...] = ()


class _TestSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    principal: str
    action: PolicyAction
    waybill: str | None = None
    fields: tuple[PiiField, ...] = ()
    purpose: str | None = None
    org_unit: str | None = None
    approved_by: str | None = None
    requested_by: str | None = None
    account_role: Role | None = None
    now: AwareDatetime | None = None
    expect: Literal["allow", "deny"]
    reason: DenyReason | None = None
    policy: str | None = None


class _FileSpec(_Strict):
    # Times need an offset: the engine denies a naive one (its zone would be a guess), so a case
    # would fail as "no permit matched" instead of naming the time.
    now: AwareDatetime
    # The grace period the cases were written for (a case "23 hours after sign-off" assumes 24). Unset:
    # the engine's own, the server's COURIERGUARD_REVEAL_GRACE_HOURS.
    grace_hours: Annotated[int, Field(ge=0, le=24 * 366)] | None = None
    principals: dict[str, _PrincipalSpec]
    waybills: dict[str, _WaybillSpec] = Field(default_factory=dict)
    cases: Annotated[tuple[_TestSpec, ...], Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One request and the verdict it must get."""

    name: str
    request: PolicyRequest
    expect_allowed: bool
    expect_reason: DenyReason | None = None
    expect_policy: str | None = None
    grace_hours: int | None = None
    """The grace period the case is decided with (its file's ``grace_hours``); None: the engine's."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: the decision and, when it failed, what was wrong."""

    case: PolicyCase
    decision: PolicyDecision
    problem: str | None

    @property
    def passed(self) -> bool:
        """True when the decision matched every expectation of the case."""
        return self.problem is None


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The line of the deepest node of ``loc`` (a pydantic error location) the file holds: the
    misspelt key's, or the case's when a key is missing."""
    node, line = root, None if root is None else root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None
            )
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _at(path: Path, root: yaml.Node | None, loc: Sequence[str | int]) -> str:
    line = _line_of(root, loc)
    return f"{path}:{line}" if line is not None else str(path)


def load_cases(path: Path, text: str | None = None) -> list[PolicyCase]:
    """Read a cases file (``text``: its text, already read); any problem raises :class:`ConfigError`
    with a one-line message naming the file and, where the file has it, the line."""
    if text is None:
        text = read_utf8(Path(path))
    # One parse: the node tree (its line marks name lines in the messages), then the data built from it.
    loader = yaml.SafeLoader(text)
    try:
        root: yaml.Node | None = loader.get_single_node()
        raw: Any = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} not valid YAML") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping with keys now, principals, waybills and cases (docs/policies.md)"
        )
    try:
        spec = _FileSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{_at(path, root, first['loc'])}: {where}: {first['msg']}") from None
    principals = {
        key: Principal(id=key, role=p.role, org_unit=p.org_unit, status=p.status)
        for key, p in spec.principals.items()
    }
    waybills = {
        key: WaybillFacts(
            number=w.number,
            origin_outlet=w.origin_outlet,
            dest_outlet=w.dest_outlet,
            status=w.status,
            status_ts=w.status_ts,
            assignee=w.assignee,
            task=w.task,
            delivered_at=w.delivered_at,
            cases=tuple(CaseFacts(c.id, c.kind, c.owner, c.state) for c in w.cases),
        )
        for key, w in spec.waybills.items()
    }
    cases: list[PolicyCase] = []
    for index, test in enumerate(spec.cases):
        where = f"{_at(path, root, ('cases', index))}: cases.{index} ({test.name})"
        if test.principal not in principals:
            raise ConfigError(f"{where}: unknown principal {test.principal!r}")
        if test.waybill is not None and test.waybill not in waybills:
            raise ConfigError(f"{where}: unknown waybill {test.waybill!r}")
        if test.expect == "allow" and test.reason is not None:
            raise ConfigError(f"{where}: a reason only makes sense with expect: deny")
        request = PolicyRequest(
            principal=principals[test.principal],
            action=test.action,
            resource=None if test.waybill is None else waybills[test.waybill],
            now=test.now or spec.now,
            purpose=test.purpose,
            fields=test.fields,
            org_unit=test.org_unit,
            approved_by=test.approved_by,
            requested_by=test.requested_by,
            account_role=test.account_role,
        )
        cases.append(
            PolicyCase(test.name, request, test.expect == "allow", test.reason, test.policy, spec.grace_hours)
        )
    return cases


def check(case: PolicyCase, decision: PolicyDecision) -> str | None:
    """What is wrong with ``decision`` for ``case``, or ``None`` when it is right."""
    if decision.allowed != case.expect_allowed:
        want = "allow" if case.expect_allowed else "deny"
        got = "allow" if decision.allowed else "deny"
        return f"expected {want}, got {got} ({decision.detail})"
    if case.expect_reason is not None and decision.reason != case.expect_reason:
        return f"expected reason {case.expect_reason}, got {decision.reason}"
    if case.expect_policy is not None and case.expect_policy not in decision.policy_ids:
        return f"expected policy {case.expect_policy}, got {', '.join(decision.policy_ids) or 'none'}"
    return None


CASES_FILE = loading.CASES_FILE
"""The cases a policy folder ships with, beside its rules (``policy/default/cases.yaml``)."""
_PASSED: dict[tuple[str, int], int] = {}
"""How many cases passed, by (digest of the folder, grace hours): a process that opens the same
folder again (a test suite's many deployments) reads its YAML once."""


def check_own_cases(engine: PolicyEngine) -> int | None:
    """Run the cases file of the engine's own folder: how many passed, or ``None`` when the folder
    has none. Any failure is a :class:`ConfigError` naming the first, and the server does not start.

    Why at start: a rule can validate and still be wrong, down to ``permit (principal, action,
    resource);`` appended by mistake, which hands every role every parcel. The cases are where the
    officer wrote down what the rules must decide; a set that contradicts them is not served.
    The cases run are the bytes read with the rules (``engine.own_cases``, covered by
    ``engine.digest``), never the file read again.
    """
    data = engine.own_cases
    if data is None:
        return None
    path = engine.folder / CASES_FILE
    key = (engine.digest, engine.grace_hours)
    passed = _PASSED.get(key)
    if passed is None:
        results = run_cases(engine, load_cases(path, decode_utf8(data, shown(str(path)))))
        failed = [r for r in results if not r.passed]
        if failed:
            first = failed[0]
            raise ConfigError(
                f"{path}: {len(failed)} of {len(results)} cases fail with these policies "
                f"(first: {first.case.name!r}: {first.problem}); fix the rules or the cases, "
                "see courierguard policy test"
            )
        passed = _PASSED[key] = len(results)
    return passed


def run_cases(engine: PolicyDecider, cases: list[PolicyCase]) -> list[CaseResult]:
    """Decide every case and compare with its expectation; a case written for a stated grace period
    is decided by the same rules with that grace (``PolicyEngine.with_grace``), so that a deployment
    that shortens the courier's window still starts on cases written for the shipped 24 hours."""
    results = []
    for case in cases:
        decider = engine
        with_grace = getattr(engine, "with_grace", None)
        if case.grace_hours is not None and callable(with_grace):
            decider = with_grace(case.grace_hours)
        decision = decider.decide(case.request)
        results.append(CaseResult(case, decision, check(case, decision)))
    return results
