"""Turning a :class:`PolicyRequest` into a Cedar request and entity list.

This is on every request's path, so it stays minimal: the principal and one resource entity, only
the attributes the schema declares, plain strings and epoch seconds (entity references and datetime
values cost several microseconds each to parse). For Cedar they are serialised once with orjson, the
principal and the resource as separate entity lists: the engine parses each principal once and adds
the resource per request (parsing entities is most of a decision's cost). The compiled policies
read the same values, as an environment built without the JSON shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from courierguard.errors import InvalidInput
from courierguard.policy._internal.compiled import Entity, Env, Uid
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


def _waybill_parts(waybill: WaybillFacts) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes and tags of a waybill entity."""
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
    return attrs, tags


def _json_entity(uid: Uid, attrs: dict[str, Any], parents: list[Uid], tags: dict[str, Any]) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "uid": {"type": uid[0], "id": uid[1]},
        "attrs": attrs,
        "parents": [{"type": t, "id": i} for t, i in parents],
    }
    if tags:
        entity["tags"] = tags
    return entity


@dataclass(frozen=True, slots=True)
class CedarInput:
    """One decision's input: the principal and resource entities, the action id, the context.

    Kept as parts: the compiled policies read them as an environment (:meth:`env`); Cedar gets
    them in its JSON shapes (:attr:`principal`, :attr:`resource`, :meth:`for_cedar`), built only
    when Cedar is asked.
    """

    principal_uid: Uid
    principal_attrs: dict[str, Any]
    principal_parents: list[Uid]
    action: str
    resource_uid: Uid
    resource_attrs: dict[str, Any]
    resource_tags: dict[str, Any]
    context: dict[str, Any]

    @property
    def principal(self) -> dict[str, Any]:
        """The principal in Cedar's JSON entity shape."""
        return _json_entity(self.principal_uid, self.principal_attrs, self.principal_parents, {})

    @property
    def resource(self) -> dict[str, Any]:
        """The resource in Cedar's JSON entity shape."""
        return _json_entity(self.resource_uid, self.resource_attrs, [], self.resource_tags)

    def check_json(self) -> None:
        """Refuse (``orjson.JSONEncodeError``, a ``TypeError``) what Cedar's JSON input could not
        carry, a lone surrogate say, so that the compiled policies never decide on it either.

        Entity ids must be strings: Cedar refuses any other (a deny), and the compiled policies
        would compare an integer id with an integer assignee and allow."""
        if type(self.principal_uid[1]) is not str or type(self.resource_uid[1]) is not str:
            raise TypeError("entity ids must be strings")
        orjson.dumps(
            (self.principal_uid, self.principal_attrs, self.principal_parents, self.resource_uid,
             self.resource_attrs, self.resource_tags, self.context)
        )  # fmt: skip

    def env(self) -> Env:
        """The environment the compiled policies decide on (as ``compiled.environment`` of the
        JSON shapes, without building them)."""
        store = {
            self.principal_uid: Entity(self.principal_attrs, frozenset(self.principal_parents), {}),
            self.resource_uid: Entity(self.resource_attrs, frozenset(), self.resource_tags),
        }
        return Env(self.principal_uid, ("Action", self.action), self.resource_uid, self.context, store)

    def for_cedar(self) -> tuple[dict[str, Any], str, str]:
        """The Cedar request (context serialised) and the JSON entity lists of the principal and
        of the resource; Cedar's entities are the two lists together."""
        principal, resource = self.principal, self.resource
        request = {
            "principal": principal["uid"],
            "action": {"type": "Action", "id": self.action},
            "resource": resource["uid"],
            "context": orjson.dumps(self.context).decode(),
        }
        return request, orjson.dumps([principal]).decode(), orjson.dumps([resource]).decode()


def build(request: PolicyRequest, grace_seconds: int) -> CedarInput:
    """The entities and context Cedar (or the compiled policies) decide ``request`` on."""
    principal = request.principal
    principal_attrs = {"id": principal.id, "org_unit": principal.org_unit, "status": principal.status.value}
    waybill = request.resource
    tags: dict[str, Any] = {}
    if waybill is not None and (request.action.needs_waybill or request.action is PolicyAction.INGEST):
        resource_uid = (WAYBILL, waybill.number)
        resource_attrs, tags = _waybill_parts(waybill)
    elif request.org_unit is None:
        # list, search, export and admin target an org unit (or the company), never one waybill.
        resource_uid, resource_attrs = (SCOPE, COMPANY_SCOPE), {}
    else:
        resource_uid, resource_attrs = (SCOPE, request.org_unit), {"org_unit": request.org_unit}
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
    if request.account_role is not None:
        context["account_role"] = request.account_role.value
    return CedarInput(
        (EMPLOYEE, principal.id), principal_attrs, [("Role", principal.role.value)], request.action.value,
        resource_uid, resource_attrs, tags, context,
    )  # fmt: skip
