"""Policy decision latency: PolicyEngine.decide() on the shipped default set.

Baseline: the courier-reveal rule written as a plain Python ``if`` over the same request objects.
It shows what the engine (entities, the policies of the slice, reasons) costs over the cheapest
possible hard-coded check; it is not a drop-in alternative, as it knows one rule only.

The engine decides with its compiled policies (``policy._internal.compiled``), as the server does;
the same decisions by Cedar alone (``compile_policies=False``, the reference) are given beside them.

Both are timed with the garbage collector as the server runs it (``tune_gc_for_serving``: start-up
heap frozen, collections spaced out), since that is where decisions are made; with CPython's
default thresholds a young collection lands inside about one call in a hundred, which is the p99.
"""

from __future__ import annotations

import gc
from datetime import datetime, timedelta, timezone
from functools import partial

from benchmarks.report import Report, latencies_us
from courierguard.domain import CaseKind, CaseState, EmployeeStatus, TaskKind
from courierguard.events import PiiField, Role, WaybillStatus
from courierguard.gateway.server import tune_gc_for_serving
from courierguard.policy import CaseFacts, PolicyAction, PolicyEngine, PolicyRequest, Principal, WaybillFacts

SECTION = "Policy decision"
N = 20_000
NOW = datetime(2026, 11, 11, 12, tzinfo=timezone(timedelta(hours=8)))
_RECIPIENT = frozenset({PiiField.RECIPIENT_NAME, PiiField.RECIPIENT_PHONE, PiiField.RECIPIENT_ADDRESS})
_DELIVERING = frozenset(
    {WaybillStatus.AT_DESTINATION, WaybillStatus.OUT_FOR_DELIVERY, WaybillStatus.IN_LOCKER}
)


def plain_courier_reveal(request: PolicyRequest, grace: timedelta = timedelta(hours=24)) -> bool:
    """The courier recipient-reveal rules as hand-written Python (the baseline)."""
    p, w = request.principal, request.resource
    if p.status is not EmployeeStatus.ACTIVE or w is None or not request.purpose or not request.fields:
        return False
    if p.role is not Role.COURIER or w.assignee != p.id or w.task is not TaskKind.DELIVERY:
        return False
    if not _RECIPIENT.issuperset(request.fields):
        return False
    if w.status in _DELIVERING:
        return True
    return (
        w.status is WaybillStatus.DELIVERED
        and w.delivered_at is not None
        and request.now < w.delivered_at + grace
    )


def _requests() -> dict[str, PolicyRequest]:
    courier = Principal("C-100", Role.COURIER, "OUT-SH-01", EmployeeStatus.ACTIVE)
    agent = Principal("S-100", Role.CUSTOMER_SERVICE, "CS-01", EmployeeStatus.ACTIVE)
    cases = (
        CaseFacts("T-1", CaseKind.TICKET, "S-100", CaseState.OPEN),
        CaseFacts("T-2", CaseKind.CLAIM, "S-9", CaseState.CLOSED),
    )
    waybill = WaybillFacts(
        "YT4512000000017",
        "OUT-BJ-01",
        "OUT-SH-01",
        WaybillStatus.OUT_FOR_DELIVERY,
        NOW,
        "C-100",
        TaskKind.DELIVERY,
        None,
        cases,
    )
    phone = (PiiField.RECIPIENT_PHONE,)
    return {
        "courier reveal, allowed": PolicyRequest(
            courier, PolicyAction.REVEAL, waybill, NOW, "delivery_contact", phone
        ),
        "other courier reveal, denied": PolicyRequest(
            Principal("C-200", Role.COURIER, "OUT-SH-01", EmployeeStatus.ACTIVE),
            PolicyAction.REVEAL,
            waybill,
            NOW,
            "delivery_contact",
            phone,
        ),
        "agent reveal via open ticket": PolicyRequest(
            agent, PolicyAction.REVEAL, waybill, NOW, "ticket", phone
        ),
        "clerk list of own outlet": PolicyRequest(
            Principal("K-100", Role.OUTLET_CLERK, "OUT-SH-01", EmployeeStatus.ACTIVE),
            PolicyAction.LIST,
            None,
            NOW,
            org_unit="OUT-SH-01",
        ),
    }


def run(report: Report) -> None:
    engine = PolicyEngine.default()
    by_cedar = PolicyEngine.default(compile_policies=False)
    requests = _requests()
    first = requests["courier reveal, allowed"]
    assert engine.decide(first).allowed and plain_courier_reveal(first)
    for request in requests.values():
        assert engine.decide(request) == by_cedar.decide(request)
    thresholds = gc.get_threshold()
    tune_gc_for_serving()
    try:
        base = latencies_us(lambda: plain_courier_reveal(first), N)
        measured = {
            name: latencies_us(partial(engine.decide, request), N) for name, request in requests.items()
        }
        cedar_alone = {
            name: latencies_us(partial(by_cedar.decide, request), N) for name, request in requests.items()
        }
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    for name, stats in measured.items():
        baseline = {"baseline_name": "plain-Python if, courier rule", "baseline_value": base["p99"]}
        report.add(SECTION, f"decide() p50, {name}", stats["p50"], "µs")
        report.add(
            SECTION,
            f"decide() p99, {name}",
            stats["p99"],
            "µs",
            target="≤ 200 µs",
            met=stats["p99"] <= 200,
            **baseline,
        )
    for name, stats in cedar_alone.items():
        report.add(
            SECTION,
            f"decide() p99 by Cedar alone (compile_policies=False, the reference), {name}",
            stats["p99"],
            "µs",
            baseline_name=f"decide() p99 with the compiled policies (p50 {measured[name]['p50']:.1f} µs)",
            baseline_value=measured[name]["p99"],
        )
