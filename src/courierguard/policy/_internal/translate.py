"""Turning a :class:`PolicyRequest` into a Cedar request and entity list.

This is on every request's path, so it stays minimal: the principal and one resource entity, only
the attributes the schema declares, plain strings and epoch seconds (entity references and datetime
values cost several microseconds each to parse). For Cedar they are serialised once with orjson, the
principal and the resource as separate entity lists: the engine parses each principal once and adds
the resource per request (parsing entities is most of a decision's cost). The compiled policies
read the same dicts directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from courierguard.errors import InvalidInput
from courierguard.policy.models import PolicyAction, PolicyRequest, WaybillFacts

EMPLOYEE = "Employee"
WAYBILL = "Waybill"
SCOPE = "Scope"
COMPANY_SCOPE = "*"
"""Scope id of a list, search or export that names no org unit: the whole company."""


def epoch(value: datetime, what: str) -> int:
    """Unix epoch seconds; a naive timestamp is refused because its zone would be a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(what, "timestamp needs an offset")
    return int(value.timestamp())


def _waybill_entity(waybill: WaybillFacts) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "origin_outlet": waybill.origin_outlet,
        "dest_outlet": waybill.dest_outlet,
        "status": waybill.status.value,
    }
    if waybill.assignee is not None:
        attrs["assignee"] = waybill.assignee
    if waybill.task is not None:
        attrs["task"] = waybill.task.value
    if waybill.delivered_at is not None:
        attrs["delivered_at"] = epoch(waybill.delivered_at, "resource.delivered_at")
    # Cedar has no "exists" over a set, so cases are grouped by owner into tags and a policy asks
    # getTag(principal.id) for that owner's "<kind>:<state>" strings.
    tags: dict[str, list[str]] = {}
    for case in waybill.cases:
        tags.setdefault(case.owner, []).append(f"{case.kind.value}:{case.state.value}")
    entity: dict[str, Any] = {"uid": {"type": WAYBILL, "id": waybill.number}, "attrs": attrs, "parents": []}
    if tags:
        entity["tags"] = tags
    return entity


@dataclass(frozen=True, slots=True)
class CedarInput:
    """One decision's input in Cedar's JSON shapes: the two entities, the action id, the context."""

    principal: dict[str, Any]
    action: str
    resource: dict[str, Any]
    context: dict[str, Any]

    def for_cedar(self) -> tuple[dict[str, Any], str, str]:
        """The Cedar request (context serialised) and the JSON entity lists of the principal and
        of the resource; Cedar's entities are the two lists together."""
        request = {
            "principal": self.principal["uid"],
            "action": {"type": "Action", "id": self.action},
            "resource": self.resource["uid"],
            "context": orjson.dumps(self.context).decode(),
        }
        return request, orjson.dumps([self.principal]).decode(), orjson.dumps([self.resource]).decode()


def build(request: PolicyRequest, grace_seconds: int) -> CedarInput:
    """The entities and context Cedar (or the compiled policies) decide ``request`` on."""
    principal = request.principal
    principal_entity = {
        "uid": {"type": EMPLOYEE, "id": principal.id},
        "attrs": {"id": principal.id, "org_unit": principal.org_unit, "status": principal.status.value},
        "parents": [{"type": "Role", "id": principal.role.value}],
    }
    waybill = request.resource
    resource: dict[str, Any]
    if waybill is not None and (request.action.needs_waybill or request.action is PolicyAction.INGEST):
        resource = _waybill_entity(waybill)
    elif request.org_unit is None:
        # list, search, export and admin target an org unit (or the company), never one waybill.
        resource = {"uid": {"type": SCOPE, "id": COMPANY_SCOPE}, "attrs": {}, "parents": []}
    else:
        resource = {
            "uid": {"type": SCOPE, "id": request.org_unit},
            "attrs": {"org_unit": request.org_unit},
            "parents": [],
        }
    context: dict[str, Any] = {
        "now": epoch(request.now, "now"),
        "grace_seconds": grace_seconds,
        "fields": [field.value for field in request.fields],
    }
    if request.purpose is not None and request.purpose.strip():
        context["purpose"] = request.purpose
    if request.approved_by is not None:
        context["approved_by"] = request.approved_by
    if request.requested_by is not None:
        context["requested_by"] = request.requested_by
    return CedarInput(principal_entity, request.action.value, resource, context)
