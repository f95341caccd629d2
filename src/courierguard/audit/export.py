"""Export to a SIEM: JSON Lines in Access Event v1, or OCSF 1.3 events.

OCSF mapping (documented in ``docs/audit.md``):

* ``auth.*`` actions → *Authentication* (class 3002, category 3 Identity & Access Management):
  login → Logon (1), logout → Logoff (2), step-up and device binding → Other (99).
* every other action (``waybill.*``, ``number.call``, ``admin.change``) → *API Activity*
  (class 6003, category 6 Application Activity): reads → Read (2), ``admin.change`` → Update (3).
* outcome allow → status Success (1); deny or challenge, and ``*_failed`` actions → Failure (2).
* ``type_uid = class_uid * 100 + activity_id``; Courier Guard-specific fields (purpose, PII field
  names, query shape, audit index and leaf hash) go under ``unmapped``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

import orjson
from sqlalchemy import Engine, func, select

from courierguard.audit.merkle import leaf_hash
from courierguard.audit.models import DecodedEntry, EntryKind, decode_entry, to_micros
from courierguard.audit.tables import audit_entries
from courierguard.errors import CourierGuardError

OCSF_VERSION = "1.3.0"

_AUTH_ACTIVITY = {
    "auth.login": (1, "Logon"),
    "auth.login_failed": (1, "Logon"),
    "auth.logout": (2, "Logoff"),
}


class ExportMismatch(CourierGuardError):
    """A stored entry disagrees with its own leaf hash or with the columns the export selects on.

    The export is what a SIEM keeps, so it re-checks what it hands over instead of trusting the
    database: a body edited in place, or an entry relabelled or re-timed to fall out of a search,
    stops the export with the entry's index (``audit verify`` then reports the whole damage).
    """

    status = 500
    title = "Audit trail does not verify"
    reason = "audit_mismatch"


def _checked(seq: int, entry: bytes, leaf: bytes, kind: str, ts_us: int) -> DecodedEntry:
    if leaf_hash(entry) != leaf:
        raise ExportMismatch(f"entry {seq} does not match its leaf hash; run `courierguard audit verify`")
    decoded = decode_entry(entry)
    if (decoded.index, decoded.kind, decoded.ts_us) != (seq, kind, ts_us):
        raise ExportMismatch(
            f"entry {seq}: its index, kind or time columns differ from its hashed body; "
            "run `courierguard audit verify`"
        )
    return decoded


def _access_bodies(
    engine: Engine, since: datetime | None, until: datetime | None
) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """Access entries whose hashed time falls in [since, until), each checked against its leaf hash.

    The time index only finds where the range starts and ends; every stored entry between is then
    read by its index and filtered on its hashed kind and time, so an access entry relabelled as
    another kind, or re-timed out of the range, is not silently left out: it is refused.
    """
    e = audit_entries.c
    bounds = select(func.min(e.seq), func.max(e.seq))
    if since is not None:
        bounds = bounds.where(e.ts_us >= to_micros(since))
    if until is not None:
        bounds = bounds.where(e.ts_us < to_micros(until))
    low_us = to_micros(since) if since is not None else None
    high_us = to_micros(until) if until is not None else None
    with engine.connect() as conn:
        first, last = conn.execute(bounds).one()
        if first is None:
            return
        query = (
            select(e.seq, e.entry, e.leaf_hash, e.kind, e.ts_us)
            .where(e.seq.between(first, last), e.entry.is_not(None))
            .order_by(e.seq)
        )
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
        for seq, entry, leaf, kind, ts_us in result:
            decoded = _checked(seq, bytes(entry), bytes(leaf), kind, ts_us)
            if decoded.kind != EntryKind.ACCESS.value:
                continue
            if (low_us is not None and decoded.ts_us < low_us) or (
                high_us is not None and decoded.ts_us >= high_us
            ):
                continue  # written out of time order by another worker: outside the range asked for
            yield seq, bytes(leaf), decoded.body


def export_jsonl(
    engine: Engine, out: IO[bytes], *, since: datetime | None = None, until: datetime | None = None
) -> int:
    """Write every stored access entry as one Access Event v1 line; returns the number written."""
    written = 0
    for _seq, _leaf, body in _access_bodies(engine, since, until):
        out.write(orjson.dumps(body) + b"\n")
        written += 1
    return written


def export_ocsf(
    engine: Engine, out: IO[bytes], *, since: datetime | None = None, until: datetime | None = None
) -> int:
    """Write every stored access entry as one OCSF event line; returns the number written."""
    written = 0
    for seq, leaf, body in _access_bodies(engine, since, until):
        out.write(orjson.dumps(to_ocsf(body, index=seq, leaf_hash=leaf)) + b"\n")
        written += 1
    return written


def _epoch_ms(ts: str) -> int:
    return to_micros(datetime.fromisoformat(ts)) // 1000


def to_ocsf(
    event: dict[str, Any], *, index: int | None = None, leaf_hash: bytes | None = None
) -> dict[str, Any]:
    """One Access Event v1 (as a dict) mapped to an OCSF Authentication or API Activity event."""
    action = str(event.get("action", ""))
    outcome = (event.get("outcome") or {}).get("decision")
    failed = action.endswith("_failed") or outcome in ("deny", "challenge")
    status_id = 2 if failed else (1 if outcome == "allow" or action.startswith("auth.") else 0)
    status = {0: "Unknown", 1: "Success", 2: "Failure"}[status_id]
    actor = event.get("actor") or {}
    session = event.get("session") or {}
    user: dict[str, Any] = {
        "uid": actor.get("id"),
        "type": "System" if actor.get("kind") == "service" else "User",
    }
    if actor.get("org_unit"):
        user["org"] = {"uid": actor["org_unit"]}
    if actor.get("role"):
        user["groups"] = [{"name": actor["role"]}]
    src: dict[str, Any] = {}
    if session.get("ip"):
        src["ip"] = session["ip"]
    if session.get("device_id"):
        src["uid"] = session["device_id"]
    if session.get("location"):
        src["location"] = {"lat": session["location"]["lat"], "long": session["location"]["lon"]}
    unmapped: dict[str, Any] = {"courierguard_action": action}
    for key in ("purpose", "fields", "query", "tenant"):
        if event.get(key) is not None:
            unmapped[key] = event[key]
    if index is not None:
        unmapped["audit_index"] = index
    if leaf_hash is not None:
        unmapped["audit_leaf_hash"] = leaf_hash.hex()
    out: dict[str, Any] = {
        "time": _epoch_ms(str(event["ts"])),
        "severity_id": 3 if failed else 1,
        "severity": "Medium" if failed else "Informational",
        "status_id": status_id,
        "status": status,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.get("id"),
            "log_name": "courierguard-audit",
            "product": {"name": "Courier Guard", "vendor_name": "Courier Guard project"},
        },
        "actor": {"user": user, **({"session": {"uid": session["id"]}} if session.get("id") else {})},
        "unmapped": unmapped,
    }
    if src:
        out["src_endpoint"] = src
    if session.get("user_agent"):
        out["http_request"] = {"user_agent": session["user_agent"]}
    reason = (event.get("outcome") or {}).get("reason")
    if reason:
        out["status_detail"] = reason
    if action.startswith("auth."):
        activity_id, activity = _AUTH_ACTIVITY.get(action, (99, "Other"))
        out.update(
            class_uid=3002,
            class_name="Authentication",
            category_uid=3,
            category_name="Identity & Access Management",
            user=user,
        )
        if session.get("auth") in ("totp", "webauthn", "face") or action.startswith("auth.step_up"):
            out["is_mfa"] = True
        if session.get("auth"):
            out["auth_protocol"] = session["auth"]
    else:
        activity_id, activity = (3, "Update") if action == "admin.change" else (2, "Read")
        out.update(
            class_uid=6003,
            class_name="API Activity",
            category_uid=6,
            category_name="Application Activity",
            api={"operation": action, "service": {"name": "courierguard"}},
        )
        resource = event.get("resource") or {}
        if resource.get("id"):
            item: dict[str, Any] = {"uid": resource["id"], "type": resource.get("type") or "waybill"}
            if resource.get("org_unit"):
                item["group"] = {"uid": resource["org_unit"]}
            out["resources"] = [item]
    out["activity_id"] = activity_id
    out["activity_name"] = activity
    out["type_uid"] = out["class_uid"] * 100 + activity_id
    return out
