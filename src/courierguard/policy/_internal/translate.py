"""Turning a :class:`PolicyRequest` into a Cedar request and entity list.

This is on every request's path, so it stays minimal: the principal and one resource entity, only
the attributes the schema declares, plain strings and epoch seconds (entity references and datetime
values cost several microseconds each to parse), serialised once with orjson. The principal and the
resource come back as separate entity lists: the engine parses each principal once and adds the
resource per request (parsing entities is most of a decision's cost).
"""

from __future__ import annotations

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


def build(request: PolicyRequest, grace_seconds: int) -> tuple[dict[str, Any], str, str]:
    """The Cedar request (context already serialised), and the JSON entity lists of the principal
    and of the resource; Cedar's entities are the two lists together."""
    principal = request.principal
    principal_uid = {"type": EMPLOYEE, "id": principal.id}
    principal_entity = {
        "uid": principal_uid,
        "attrs": {"id": principal.id, "org_unit": principal.org_unit, "status": principal.status.value},
        "parents": [{"type": "Role", "id": principal.role.value}],
    }
    entities: list[dict[str, Any]] = []
    waybill = request.resource
    resource_uid: dict[str, str]
    if waybill is not None and (request.action.needs_waybill or request.action is PolicyAction.INGEST):
        entities.append(_waybill_entity(waybill))
        resource_uid = {"type": WAYBILL, "id": waybill.number}
    else:
        # list, search, export and admin target an org unit (or the company), never one waybill.
        if request.org_unit is None:
            resource_uid, scope_attrs = {"type": SCOPE, "id": COMPANY_SCOPE}, {}
        else:
            resource_uid, scope_attrs = (
                {"type": SCOPE, "id": request.org_unit},
                {"org_unit": request.org_unit},
            )
        entities.append({"uid": resource_uid, "attrs": scope_attrs, "parents": []})
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
    cedar_request = {
        "principal": principal_uid,
        "action": {"type": "Action", "id": request.action.value},
        "resource": resource_uid,
        "context": orjson.dumps(context).decode(),
    }
    return cedar_request, orjson.dumps([principal_entity]).decode(), orjson.dumps(entities).decode()
