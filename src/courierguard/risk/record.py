"""A light internal view of one Access Event v1, built from a parsed JSON dict or a pydantic event.

Replay must reach tens of thousands of events a second on one core, which pydantic validation alone
would use up. :func:`from_dict` checks the same rules as ``courierguard.events.AccessEvent`` (required
properties, types, enums, bounds, RFC 3339 offsets, unique fields), ignores unknown properties and
tolerates absent optional ones, and raises :class:`BadEvent` naming the property (never its value).
A test holds it to the pydantic model on valid and broken events.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from courierguard.events import RFC3339, AccessEvent

ACTIONS = frozenset(
    {
        "auth.login", "auth.login_failed", "auth.logout", "auth.step_up", "auth.step_up_failed",
        "auth.device_bound", "waybill.view", "waybill.list", "waybill.search", "waybill.reveal",
        "waybill.export", "waybill.print", "number.call", "admin.change",
    }
)  # fmt: skip
ROLES = frozenset(
    {"courier", "outlet_clerk", "outlet_manager", "hub_operator", "customer_service", "security_officer",
     "auditor", "admin", "service"}
)  # fmt: skip
STATUSES = frozenset(
    {"created", "awaiting_pickup", "picked_up", "in_transit", "at_destination", "out_for_delivery",
     "in_locker", "delivered", "refused", "returned", "exception"}
)  # fmt: skip
FIELDS = frozenset(
    {
        "sender.name",
        "sender.phone",
        "sender.address",
        "recipient.name",
        "recipient.phone",
        "recipient.address",
    }
)
QUERY_KINDS = frozenset({"by_phone", "by_name", "by_waybill_prefix", "by_org_unit", "by_status", "other"})
AUTHS = frozenset({"password", "sso", "totp", "webauthn", "face", "api_key"})
DECISIONS = frozenset({"allow", "deny", "challenge"})
_DIGITS = re.compile(r"(\d{4,})$")


class BadEvent(ValueError):
    """An event that breaks the Access Event v1 schema; the message names the property only."""


class Rec:
    """The facts of one event the engine reads. Times are epoch seconds; ``hour`` and ``day`` are local."""

    __slots__ = (
        "action",
        "actor",
        "assignee",
        "day",
        "device",
        "event_id",
        "exposed",
        "fields",
        "hour",
        "ids",
        "ip",
        "kind",
        "lat",
        "listed",
        "lon",
        "org",
        "outcome",
        "purpose",
        "q_kind",
        "res_id",
        "res_org",
        "risk_refused",
        "role",
        "session",
        "status",
        "status_since",
        "ticket",
        "ts",
        "ts_text",
        "weekday",
    )  # fmt: skip

    event_id: str
    ts: float
    ts_text: str
    hour: float
    day: int
    weekday: int
    actor: str
    role: str | None
    org: str | None
    kind: str | None
    session: str | None
    device: str | None
    ip: str | None
    lat: float | None
    lon: float | None
    action: str
    res_id: str | None
    res_org: str | None
    assignee: str | None
    status: str | None
    status_since: float | None
    """When the waybill entered ``status`` (``resource.status_ts``): how old the task is."""
    ticket: str | None
    q_kind: str | None
    ids: list[str] | tuple[str, ...] | None
    listed: int
    fields: int
    exposed: int
    purpose: str | None
    outcome: str | None
    # Refused or challenged by risk control (the gateway's ``risk:<action>:<codes>`` reason), not by
    # the source's policy: replaying the gateway's trail judges such an event as live did.
    risk_refused: bool


def _risk_refused(decision: str | None, reason: str | None) -> bool:
    """Refused or challenged by risk control: the gateway records such an outcome's reason as
    ``risk:<action>:<codes>``; a policy's refusal has a reason of its own."""
    return decision not in (None, "allow") and reason is not None and reason.startswith("risk:")


_RFC3339 = RFC3339.fullmatch


def _ts(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise BadEvent(f"{name}: not a string")
    # RFC 3339 only: a decision repeats its event's ts, and must be a valid Risk Decision v1 itself.
    if not _RFC3339(value):
        raise BadEvent(f"{name}: not an RFC 3339 date-time (a date, a time and an offset)")
    try:  # RFC 3339 allows a lower-case "z", Python 3.11 does not
        return datetime.fromisoformat(value if value[-1] != "z" else value[:-1] + "Z")
    except ValueError:  # a 30 February, a 25th hour
        raise BadEvent(f"{name}: not an RFC 3339 date-time") from None


def _str(obj: dict[str, Any], key: str, where: str, max_len: int, min_len: int = 0) -> str | None:
    value = obj.get(key)
    if value is None:
        if key in obj:
            raise BadEvent(f"{where}{key}: null")
        return None
    if type(value) is not str:
        raise BadEvent(f"{where}{key}: not a string")
    if not min_len <= len(value) <= max_len:
        raise BadEvent(f"{where}{key}: length out of bounds")
    return value


def _enum(obj: dict[str, Any], key: str, where: str, allowed: frozenset[str]) -> str | None:
    value = obj.get(key)
    if value is None:
        if key in obj:
            raise BadEvent(f"{where}{key}: null")
        return None
    if type(value) is not str or value not in allowed:
        raise BadEvent(f"{where}{key}: not one of the allowed values")
    return value


def _obj(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        if key in data:
            raise BadEvent(f"{key}: null")
        return None
    if type(value) is not dict:
        raise BadEvent(f"{key}: not an object")
    return value


def _num(value: Any, name: str, lo: float, hi: float) -> float:
    if type(value) not in (int, float):
        raise BadEvent(f"{name}: not a number")
    if not lo <= value <= hi:
        raise BadEvent(f"{name}: out of range")
    return float(value)


def from_dict(data: Any) -> Rec:
    """Validate one parsed Access Event v1 and return its :class:`Rec`; raises :class:`BadEvent`."""
    if type(data) is not dict:
        raise BadEvent("event: not an object")
    r = Rec()
    v = data.get("v", 1)
    if v != 1 or type(v) is bool:
        raise BadEvent("v: must be 1")
    eid = _str(data, "id", "", 128, 1)
    if eid is None:
        raise BadEvent("id: required")
    r.event_id = eid
    ts_text = data.get("ts")
    if ts_text is None:
        raise BadEvent("ts: required")
    dt = _ts(ts_text, "ts")
    r.ts_text = ts_text
    r.ts = dt.timestamp()
    r.hour = dt.hour + dt.minute / 60.0
    r.day = dt.toordinal()
    r.weekday = dt.weekday()
    _str(data, "tenant", "", 64)
    actor = _obj(data, "actor")
    if actor is None:
        raise BadEvent("actor: required")
    aid = _str(actor, "id", "actor.", 64, 1)
    if aid is None:
        raise BadEvent("actor.id: required")
    r.actor = aid
    r.kind = _enum(actor, "kind", "actor.", _KINDS)
    r.role = _enum(actor, "role", "actor.", ROLES)
    r.org = _str(actor, "org_unit", "actor.", 64)
    action = data.get("action")
    if action is None:
        raise BadEvent("action: required")
    if type(action) is not str or action not in ACTIONS:
        raise BadEvent("action: not one of the allowed values")
    r.action = action

    session = _obj(data, "session")
    r.lat = r.lon = None
    if session is None:
        r.session = r.device = r.ip = None
    else:
        # The common case inline (a string within bounds); anything else takes the checked path.
        sid, dev, ip, ua = (
            session.get("id"),
            session.get("device_id"),
            session.get("ip"),
            session.get("user_agent"),
        )
        r.session = sid if type(sid) is str and len(sid) <= 128 else _str(session, "id", "session.", 128)
        r.device = (
            dev if type(dev) is str and len(dev) <= 128 else _str(session, "device_id", "session.", 128)
        )
        r.ip = ip if type(ip) is str and len(ip) <= 45 else _str(session, "ip", "session.", 45)
        if not (type(ua) is str and len(ua) <= 512):
            _str(session, "user_agent", "session.", 512)
        if session.get("auth") not in AUTHS:
            _enum(session, "auth", "session.", AUTHS)
        loc = session.get("location")
        if loc is not None:
            if type(loc) is not dict:
                raise BadEvent("session.location: not an object")
            if "lat" not in loc or "lon" not in loc:
                raise BadEvent("session.location: lat and lon required")
            r.lat = _num(loc["lat"], "session.location.lat", -90, 90)
            r.lon = _num(loc["lon"], "session.location.lon", -180, 180)
        elif "location" in session:
            raise BadEvent("session.location: null")

    res = _obj(data, "resource")
    if res is None:
        r.res_id = r.res_org = r.assignee = r.status = r.ticket = r.status_since = None
    else:
        rtype = res.get("type")
        if rtype is not None and rtype != "waybill":
            raise BadEvent("resource.type: must be waybill")
        rid, rorg, who = res.get("id"), res.get("org_unit"), res.get("assignee")
        r.res_id = rid if type(rid) is str and len(rid) <= 64 else _str(res, "id", "resource.", 64)
        r.res_org = rorg if type(rorg) is str and len(rorg) <= 64 else _str(res, "org_unit", "resource.", 64)
        r.assignee = who if type(who) is str and len(who) <= 64 else _str(res, "assignee", "resource.", 64)
        r.status = _enum(res, "status", "resource.", STATUSES)
        status_ts = res.get("status_ts")
        if status_ts is None:
            r.status_since = None
        else:
            since = _STATUS_TS.get(status_ts) if type(status_ts) is str else None
            if since is None:
                since = _ts(status_ts, "resource.status_ts").timestamp()
                if len(_STATUS_TS) > 65_536:
                    _STATUS_TS.clear()
                _STATUS_TS[status_ts] = since
            r.status_since = since
        r.ticket = _str(res, "ticket", "resource.", 64)

    query = _obj(data, "query")
    count: int | None = None
    r.ids = None
    if query is None:
        r.q_kind = None
    else:
        r.q_kind = _enum(query, "kind", "query.", QUERY_KINDS)
        rc = query.get("result_count")
        if rc is not None:
            if type(rc) is not int or rc < 0:
                raise BadEvent("query.result_count: not a non-negative integer")
            count = rc
        ids = query.get("result_ids")
        if ids is not None:
            if type(ids) is not list or len(ids) > 10000:
                raise BadEvent("query.result_ids: not a list of at most 10000 strings")
            for item in ids:
                if type(item) is not str:
                    raise BadEvent("query.result_ids: not a list of strings")
            if count is None:
                count = len(ids)
            r.ids = ids

    fields = data.get("fields")
    nf = 0
    if fields is not None:
        if type(fields) is not list:
            raise BadEvent("fields: not a list")
        for f in fields:
            if type(f) is not str or f not in FIELDS:
                raise BadEvent("fields: not one of the allowed values")
        nf = len(fields)
        if len(set(fields)) != nf:
            raise BadEvent("fields: must be unique")
    r.fields = nf
    r.purpose = _str(data, "purpose", "", 128)
    outcome = _obj(data, "outcome")
    r.risk_refused = False
    if outcome is None:
        r.outcome = None
    else:
        r.outcome = _enum(outcome, "decision", "outcome.", DECISIONS)
        r.risk_refused = _risk_refused(r.outcome, _str(outcome, "reason", "outcome.", 256))
    r.exposed = _exposed(r, count)
    r.listed = len(r.ids) if r.ids is not None else (count or 0)  # as _listed, inline: on every event
    return r


_KINDS = frozenset({"employee", "service"})
# status_ts values repeat across a day's events (one arrival time per parcel batch): each is parsed
# (and validated) once, its epoch seconds kept.
_STATUS_TS: dict[str, float] = {}


def _exposed(r: Rec, count: int | None) -> int:
    """Clear-text records this event served: one waybill, or the rows of a clear-text list/export."""
    if r.fields == 0 or r.outcome == "deny":  # refused by the source system: nothing was served
        return 0
    if r.res_id is not None:
        return 1
    if count is not None:
        return count
    return 1


def _listed(ids: list[str] | tuple[str, ...] | None, count: int | None) -> int:
    """Rows a list or search named: its ``result_ids`` (the page shown) when given, else its count.

    Sources differ on ``result_count`` (the gateway: the page; the simulator's legacy lists: every
    match), so the ids, where present, are what was shown."""
    if ids is not None:
        return len(ids)
    return count or 0


def from_event(event: AccessEvent) -> Rec:
    """The :class:`Rec` of an already validated pydantic event (the inline path)."""
    r = Rec()
    r.event_id = event.id
    dt = event.ts
    r.ts_text = dt.isoformat()
    r.ts = dt.timestamp()
    r.hour = dt.hour + dt.minute / 60.0
    r.day = dt.toordinal()
    r.weekday = dt.weekday()
    a = event.actor
    r.actor = a.id
    r.kind = a.kind
    r.role = a.role.value if a.role is not None else None
    r.org = a.org_unit
    s = event.session
    r.lat = r.lon = None
    if s is None:
        r.session = r.device = r.ip = None
    else:
        r.session, r.device, r.ip = s.id, s.device_id, s.ip
        if s.location is not None:
            r.lat, r.lon = s.location.lat, s.location.lon
    r.action = event.action.value
    res = event.resource
    if res is None:
        r.res_id = r.res_org = r.assignee = r.status = r.ticket = r.status_since = None
    else:
        r.res_id, r.res_org, r.assignee, r.ticket = res.id, res.org_unit, res.assignee, res.ticket
        r.status = res.status.value if res.status is not None else None
        r.status_since = res.status_ts.timestamp() if res.status_ts is not None else None
    q = event.query
    count: int | None = None
    r.ids = None
    if q is None:
        r.q_kind = None
    else:
        r.q_kind = q.kind.value if q.kind is not None else None
        count = q.result_count
        r.ids = q.result_ids
        if count is None and q.result_ids is not None:
            count = len(q.result_ids)
    r.fields = len(event.fields) if event.fields else 0
    r.purpose = event.purpose
    r.outcome = event.outcome.decision.value if event.outcome and event.outcome.decision else None
    r.risk_refused = _risk_refused(r.outcome, event.outcome.reason if event.outcome else None)
    r.exposed = _exposed(r, count)
    r.listed = _listed(r.ids, count)
    return r


def waybill_number(res_id: str | None) -> int | None:
    """The trailing digits of a waybill number as an integer (for enumeration), if it has any."""
    if res_id is None:
        return None
    m = _DIGITS.search(res_id)
    return int(m.group(1)) if m else None
