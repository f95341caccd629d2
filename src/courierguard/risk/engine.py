"""The risk engine: streaming features, baselines, rules and graduated responses for every event.

One :class:`RiskEngine` serves both the request path (``assess``, called by the gateway through the
``RiskHook`` seam before any data leaves) and monitor mode (``decide`` on records parsed from a file by
``courierguard replay``); the same code decides in both.

Two questions are asked about each event:

* **Is the account still held by its owner?** New device, new network, new place, two devices at
  once, impossible travel, unusual hours, a device shared across outlets, a long-dormant account.
  These add *doubt* to the session; enough doubt asks for a step-up (a fresh second factor on the
  bound device) until an ``auth.step_up`` event for that session clears it.
* **Is it used for volume that no task explains?** Clear-text records not explained by an
  assignment or a ticket, against a per-role daily budget scaled by what peers do the same day;
  bursts; volume beyond peers and beyond the person's own history; sequential waybill numbers;
  denial bursts; exports over budget. These deny the event; repeated denials lock the account.
  Masked rows (lists, searches, views no task explains) and phone probes (searches by phone that
  find nothing, or hits no task follows up) have budgets of their own and a ladder: throttle, then
  step-up, then lock far beyond.

Both together (a doubted session harvesting records) lock the account at once: that is what a rented
account looks like. A lock persists until an officer calls :meth:`RiskEngine.unlock`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from courierguard.events import AccessEvent, RiskAction, RiskDecision, RiskReason, admin_change_subject
from courierguard.risk.alerts import Alert, AlertSink
from courierguard.risk.config import RiskConfig, RoleBudget
from courierguard.risk.detectors import PhoneProbes
from courierguard.risk.record import Rec, from_event, waybill_number
from courierguard.risk.state import (
    DEVICES_KEPT,
    PLACES_KEPT,
    AccountState,
    MemoryState,
    RiskState,
    SessionState,
    remember,
)

ALLOW, STEP_UP, THROTTLE, DENY, LOCK = 0, 1, 2, 3, 4
ACTION_NAMES = ("allow", "step_up", "throttle", "deny", "lock")

#: Stable reason codes and the points each adds to the 0-100 score.
REASON_POINTS: dict[str, int] = {
    "new_device": 30,
    "new_network": 15,
    "new_place": 15,
    "off_shift": 10,
    "no_location": 10,
    "dormant_account": 25,
    "concurrent_devices": 35,
    "concurrent_sessions": 35,
    "impossible_travel": 40,
    "shared_device": 35,
    "step_up_pending": 30,
    "enrol_while_doubted": 30,
    "request_rate": 20,
    "unexplained_reveals": 40,
    "reveal_rate": 35,
    "reveal_budget": 40,
    "task_burst": 30,
    "stale_task": 30,
    "peer_volume": 35,
    "enumeration": 60,
    "denial_burst": 40,
    "export_abuse": 45,
    "masked_volume": 40,
    "phone_probing": 45,
    "name_probing": 45,
    "repeated_denials": 50,
    "containment_burst": 45,
    "inactive_account": 90,
    "session_ended": 40,
    "account_locked": 90,
}

#: Searches that name a person, counted as probes when they miss or no task follows their hits.
_PROBE_CODES = {"by_phone": "phone_probing", "by_name": "name_probing"}

# Score band of each action: the score always agrees with the action it comes with.
_BANDS = ((0.0, 29.0), (30.0, 59.0), (40.0, 69.0), (60.0, 89.0), (80.0, 100.0))
_IDENTITY = ("new_device", "new_network", "new_place", "off_shift", "no_location", "dormant_account",
             "concurrent_devices", "concurrent_sessions", "impossible_travel", "shared_device")  # fmt: skip
_TWO_HANDS = ("concurrent_devices", "concurrent_sessions", "impossible_travel", "shared_device")
"""Signs that a session is in two hands at once: judged even in a stepped-up session, and answered
by a step-up only as far as they were raised before it (see ``_decide``)."""
_OFFICERS = frozenset({"security_officer", "auditor"})
# Roles whose right to a party's data comes from cases they own: customer service's tickets, the
# outlet desk's return and claim cases. A courier's or hub operator's right comes from assignments
# and routing, so a ticket on their event (a colleague's, from a source that names any open case)
# explains nothing.
_CASE_ROLES = frozenset({"customer_service", "outlet_clerk", "outlet_manager"})
_OFFICER_PURPOSES = frozenset({"investigation", "audit"})
_STATUSES = frozenset({"active", "suspended", "left"})
_PRIVILEGED = frozenset({"admin", "security_officer", "auditor"})
# Purposes that take an account out of use: whether the event comes before the change (judged, made
# only on allow) or announces one already made (counted, never refused: nothing to undo), and whether
# the gateway ends every session of the account with it (an admin's ``employee.status`` change is
# announced as ``employee.suspended`` or ``employee.left``, which ends them).
_CONTAINMENT: dict[str, tuple[bool, bool]] = {
    "employee.hold": (True, True),
    "sessions.revoke": (True, True),
    "devices.reset": (True, True),
    "employee.status": (True, False),
    "employee.suspended": (False, True),
    "employee.left": (False, True),
}
_ADMIN_STATUS = {"employee.left": "left", "employee.suspended": "suspended", "employee.reinstated": "active"}
_HOUR = 3600.0
ENDED_IN_FLIGHT_S = 5.0
"""How long after containment ended a session an event of it counts as in flight (begun before the
gateway refused the session, judged after): refused (``session_ended``), not a comeback. A session
row put back by a DBA serves minutes or hours later, and is ``ended_session``."""
_MINUTE = 60.0

Reasons = list[tuple[str, str | None]]


Verdict = tuple[int, float, Reasons]
_ALLOW: Verdict = (ALLOW, 0.0, [])
# Volume ladders rank a step-up above a throttle: once the question is who is paging, slowing down
# is no answer (and a throttle must not hide a step-up that another signal asked for).
_LADDER_RANK = (0, 2, 1, 3, 4)
_MASKED_READS = frozenset({"waybill.view", "waybill.list", "waybill.search"})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _climb(sev: int, rung: int) -> int:
    """The stronger of ``sev`` and a volume ladder's ``rung`` (a step-up outranks a throttle)."""
    return rung if _LADDER_RANK[rung] > _LADDER_RANK[sev] else sev


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    # Equirectangular approximation: within 0.5 % of haversine at city-to-city distances, 5x cheaper.
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return 6371.0 * math.hypot(x, y)


class RiskEngine:
    """Decides allow / step_up / throttle / deny / lock for each access event, and learns from it.

    ``config`` holds thresholds and per-role budgets (defaults: :class:`RiskConfig`), ``state`` where
    features live (default: :class:`MemoryState`; :class:`~courierguard.risk.state.RedisState` for
    several workers), ``sink`` receives alerts (default: none kept). ``tenant`` labels alerts.
    """

    def __init__(
        self,
        config: RiskConfig | None = None,
        state: RiskState | None = None,
        sink: AlertSink | None = None,
        *,
        tenant: str = "demo",
    ) -> None:
        self.config = config or RiskConfig()
        self.state: RiskState = state if state is not None else MemoryState(self.config.seed)
        self.sink = sink
        self.tenant = tenant
        c = self.config
        self._v4_octets = c.network_prefix_v4 // 8
        self._dormant_s = c.dormant_days * 86_400
        self._today = 0

    # ------------------------------------------------------------------ public API

    def assess(self, event: AccessEvent) -> RiskDecision:
        """Decide on ``event`` before its data is served, and learn from it (the ``RiskHook``)."""
        rec = from_event(event)
        sev, score, reasons = self.decide(rec)
        return RiskDecision(
            event_id=event.id,
            ts=event.ts,
            actor_id=event.actor.id,
            session_id=rec.session,
            action=RiskAction(ACTION_NAMES[sev]),
            score=score,
            reasons=tuple(RiskReason(code=c, detail=d) for c, d in reasons),
        )

    def unlock(self, actor_id: str) -> None:
        """An officer's review is done: lift the account's lock and clear today's strikes."""
        with self.state.hold(actor_id):
            self._unlock(actor_id)

    def _unlock(self, actor_id: str) -> None:
        self.state.set_lock(actor_id, None)
        acc = self.state.load(actor_id)
        acc.d_strikes = 0
        acc.deny_times.clear()
        acc.sessions.clear()
        # Far beyond the masked, probe or reveal budget locks again on the next read (refused reveals
        # count too): the owner, reviewed and signed in anew, would be locked by the renter's hour.
        acc.d_masked = acc.hour_masked = acc.m_sent = acc.m_free = acc.d_probes = 0
        acc.m_over = 0.0
        acc.masked_times.clear()
        acc.probes = None
        acc.d_rv = acc.hour_rv = 0
        acc.rv_times.clear()
        self.state.save(acc)

    def lock(self, actor_id: str, reason: str = "officer") -> None:
        """Lock an account by hand (e.g. from a case); it stays locked until :meth:`unlock`."""
        self.state.set_lock(actor_id, reason)

    def is_locked(self, actor_id: str) -> bool:
        """Whether the engine holds ``actor_id`` locked."""
        return self.state.load(actor_id).locked

    def note_task(self, assignee: str, role: str, kind: str, ts: datetime, by: str, ref: str) -> bool:
        """A task (``kind``: ``pickup``, ``delivery`` or ``case``) was handed to ``assignee`` by the
        service account ``by``; ``ref`` names the waybill or case. Counts the account's tasks today;
        past the role's ``tasks_per_day`` an alert (once a day) names the service that handed them out,
        and the day's reveal budget is no longer raised by the peers (a burst of tasks is what would
        explain a renter's reveals). True when the account is over its task budget.

        The gateway calls this after an assignment or a case is applied: the tasks themselves are
        the source systems' to give, so nothing is refused here."""
        with self.state.hold(assignee):
            return self._note_task(assignee, role, kind, ts, by, ref)

    def _note_task(self, assignee: str, role: str, kind: str, ts: datetime, by: str, ref: str) -> bool:
        st = self.state
        day = ts.toordinal()
        if day > self._today:
            self._new_day(day)
        acc = st.load(assignee)
        if day > acc.cur_day:
            self._roll_day(acc, day)
        else:
            day = acc.cur_day  # a day never goes back (see _decide)
        acc.role = acc.role or role
        acc.d_tasks += 1
        c = self.config
        budget = c.budget(acc.role)
        group = f"t:{acc.role}:{acc.org}:{day}"
        st.peer_add(group, assignee, 1, 0)
        over = acc.d_tasks > budget.tasks_per_day
        if over:
            # A festival hands everyone three times the parcels: the bar rises with the colleagues'.
            others, mean, _ = st.peer_stats(group, assignee)
            y_others, y_mean, _ = st.peer_stats(f"t:{acc.role}:{acc.org}:{day - 1}", assignee)
            if y_others >= c.peer_min_members and (others < c.peer_min_members or y_mean > mean):
                others, mean = y_others, y_mean
            if others >= c.peer_min_members:
                over = acc.d_tasks > c.peer_ratio * mean
        if over and "task_burst" not in acc.d_alerts:
            acc.d_alerts.append("task_burst")
            if self.sink is not None:
                detail = f"{acc.d_tasks} tasks handed out today, budget {budget.tasks_per_day}"
                self.sink.emit(
                    Alert(
                        actor_id=assignee,
                        event_id=f"task:{ref}"[:128],
                        ts=ts,
                        action="allow",  # nothing was refused: the tasks are the source's to give
                        score=float(REASON_POINTS["task_burst"]),
                        reasons=(("task_burst", detail),),
                        evidence={"role": acc.role, "org_unit": acc.org, "task": kind, "by": by,
                                  "tasks_today": acc.d_tasks, "budget": budget.tasks_per_day},
                        tenant=self.tenant,
                    )
                )  # fmt: skip
        st.save(acc)
        return over

    def set_employee_status(self, employee_id: str, status: str) -> None:
        """Record that an employee is ``active``, ``suspended`` or ``left``; any use of a suspended
        or departed account is refused and locks it."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}")
        self.state.set_status(employee_id, status)

    # ------------------------------------------------------------------ the decision

    def decide(self, r: Rec) -> Verdict:
        """Severity index (0 allow … 4 lock), score and reasons for one record; updates state."""
        with self.state.hold(r.actor):  # the account's counts see every decision made at once
            return self._decide(r)

    def _decide(self, r: Rec) -> Verdict:
        c = self.config
        st = self.state
        if r.day > self._today:
            self._new_day(r.day)
        acc = st.load(r.actor)
        ts = r.ts
        if r.day > acc.cur_day:
            self._roll_day(acc, r.day)
        elif r.day < acc.cur_day:
            # An account's day never goes back: an event dated the day before (a clock stepped back
            # across midnight, a worker whose clock is a second behind, or the same instant written
            # in another UTC offset by another source) counts in the current day. Rolling back
            # cleared the day's counts, twice (back, then forward again): budgets given anew.
            r.day = acc.cur_day
        if acc.n == 0:
            acc.first_ts = ts
        if r.role is not None:
            acc.role = r.role
        if r.org is not None:
            acc.org = r.org
        action = r.action

        if action == "admin.change":
            self._admin_change(r)

        if acc.status != "active":
            reason = f"inactive_account:{acc.status}"
            if not acc.locked:
                st.set_lock(r.actor, reason)
                acc.locked, acc.lock_reason = True, reason
                verdict: Verdict = (LOCK, 100.0, [("inactive_account", f"employee {acc.status}")])
                self._alert(r, acc, None, verdict, {"status": acc.status})
            st.save(acc)
            return (LOCK, 100.0, [("inactive_account", f"employee {acc.status}")])
        if acc.locked:
            return (LOCK, 95.0, [("account_locked", acc.lock_reason)])
        if (
            r.session is not None
            and r.session in acc.ended
            and (r.outcome in (None, "allow") or r.risk_refused)
        ):
            # Served, or refused by risk control (this very rule, when the gateway's trail is replayed).
            if r.ts - acc.ended[r.session] <= ENDED_IN_FLIGHT_S:
                # Begun before the gateway refused the session (an officer's revoke while its
                # requests were in flight): refused, but nothing came back. Locking it locked
                # accounts an officer had only signed out (the race review: 7 of 30 reveals).
                in_flight: Reasons = [
                    ("session_ended", f"session {r.session} ended at {_iso(acc.ended[r.session])}")
                ]
                return (DENY, self._score(DENY, in_flight), in_flight)
            return self._ended_session_back(r, acc)

        sk = r.session or r.device or "-"
        sess = acc.sessions.get(sk)
        if sess is None:
            sess = acc.sessions[sk] = SessionState(r.device, ts)

        if (
            action == "auth.step_up"
            and (r.outcome != "deny" or r.risk_refused)
            and acc.reset_ts > acc.enrolled_ts
        ):
            # Passed, or refused by risk control (this very rule, when the gateway's trail is replayed).
            return self._seed_from_before_reset(r, acc)
        if action == "auth.step_up" and r.outcome != "deny":
            sess.verified = True
            sess.stepped = ts
            sess.pending = False
            sess.doubt = 0.0
            for code in _TWO_HANDS:  # answered: raised again, they ask again
                sess.reasons.pop(code, None)
            self._trust(acc, r)
            return self._finish(acc, r, sess, _ALLOW)
        if action == "auth.device_bound" and r.outcome != "deny":
            if sess.pending or (not sess.verified and sess.doubt >= c.step_up_doubt):
                # A doubted session enrolling a device would make a renter's phone the account's
                # second factor: enrolment is for the owner's usual device, network and hours.
                reasons_: Reasons = [("enrol_while_doubted", ",".join(sorted(sess.reasons)) or None)]
                return self._finish(acc, r, sess, (STEP_UP, self._score(STEP_UP, reasons_), reasons_))
            if r.device is not None:
                remember(acc.devices, r.device, ts, DEVICES_KEPT)
            st.device_enrolled(r.actor, ts)
            acc.enrolled_ts = ts
            return self._finish(acc, r, sess, _ALLOW)

        sev = ALLOW
        reasons: Reasons = []
        evidence: dict[str, Any] = {}
        warmed = acc.days >= c.warmup_days and acc.n >= c.warmup_events

        # ---- is the account still held by its owner?
        dev = r.device
        if dev is not None:
            days = acc.dev_days.get(dev)
            first_today = days is None or days[-1] != r.day
            if first_today and acc.d_devices >= c.devices_per_day:
                return self._device_flood(r, acc)
            seen = acc.dev_last.get(dev)
            last_dev = acc.last_device
            if (
                last_dev is not None
                and dev != last_dev
                and seen is not None
                and ts - seen < c.concurrent_window_s
                and ts - acc.last_ts < c.concurrent_window_s
                # Not in a stepped-up session on its own device, the other one trusted too: a
                # courier's own PDA and phone, each session vouched for, were asked again at every
                # switch (119 of 120). A session's token on a device not its own is still asked.
                and not (
                    sess.verified and dev == sess.device and dev in acc.devices and last_dev in acc.devices
                )
            ):
                # D -> E -> D within the window: two devices in use at once, not a replaced phone.
                self._doubt(sess, "concurrent_devices", f"devices {last_dev} and {dev}")
            if first_today:
                acc.d_devices += 1
                days = days or []
                days.append(r.day)
                if len(days) > 8:
                    del days[0]
                remember(acc.dev_days, dev, days, DEVICES_KEPT)
                n_acc, n_org = st.device_touch(dev, r.actor, r.org, ts, c.shared_window_s)
                if n_acc >= c.shared_device_accounts and n_org >= c.shared_device_org_units:
                    self._doubt(
                        sess, "shared_device", f"device {dev} used by {n_acc} accounts in {n_org} units"
                    )
            remember(acc.dev_last, dev, ts, DEVICES_KEPT)
            acc.last_device = dev
            if warmed and dev not in acc.devices and not sess.verified:
                if (
                    days is not None
                    and len(days) >= c.device_trust_days
                    and acc.d_strikes == 0
                    and dev not in acc.dev_doubted
                    and not acc.doubted_evicted
                ):
                    # Used cleanly on several days: a replaced phone, now learned.
                    remember(acc.devices, dev, ts, DEVICES_KEPT)
                else:
                    self._doubt(sess, "new_device", f"device {dev}")
        ip = r.ip
        net = self._net(ip) if ip is not None else None
        last = acc.last_session
        previous = acc.sessions.get(last) if last is not None and last != sk else None
        if (
            previous is not None
            and net is not None
            and previous.net is not None
            and previous.net != net
            and previous.device == sess.device  # two devices at once are concurrent_devices'
            and ts - sess.last_ts < c.concurrent_window_s
            and ts - acc.last_ts < c.concurrent_window_s
        ):
            # S -> T -> S within the window, one device id, two networks: whoever copied the
            # owner's device id works beside the owner. One session flapping between networks (a
            # carrier's address pool) or two apps on one phone (one network) is not this.
            self._doubt(
                sess, "concurrent_sessions", f"two sessions on device {sess.device} from two networks"
            )
        sess.net, sess.last_ts = net, ts
        acc.last_session = sk
        if warmed and not sess.verified:
            if net is not None and "new_network" not in sess.reasons and net not in acc.nets:
                self._doubt(sess, "new_network", None)
            if (
                r.lat is not None
                and r.lon is not None
                and "new_place" not in sess.reasons
                and self._cell(r.lat, r.lon) not in acc.places
            ):
                self._doubt(sess, "new_place", None)
            if r.lat is None and acc.places and "no_location" not in sess.reasons:
                # The account's device reports its position, and this session does not: a renter's
                # own client often sends none. Both are headers, so one that copies the owner's device
                # id and a position passes this; concurrent_sessions catches it beside the owner.
                self._doubt(sess, "no_location", None)
            if "off_shift" not in sess.reasons and acc.hours.score_one({"hour": r.hour}) >= 0.5:
                self._doubt(sess, "off_shift", f"hour {int(r.hour):02d}")
            if acc.last_ts and ts - acc.last_ts > self._dormant_s and "dormant_account" not in sess.reasons:
                self._doubt(sess, "dormant_account", f"silent {int((ts - acc.last_ts) / 86400)} days")
        if r.lat is not None and r.lon is not None:
            loc = acc.loc
            if loc is not None and (loc[0] != r.lat or loc[1] != r.lon):
                km = _km(loc[0], loc[1], r.lat, r.lon)
                hours = max(ts - loc[2], 1.0) / _HOUR
                if km >= c.impossible_min_km and km / hours > c.impossible_speed_kmh:
                    self._doubt(sess, "impossible_travel", f"{km:.0f} km in {hours * 60:.0f} min")
            acc.loc = [r.lat, r.lon, ts]

        if sess.verified and sess.doubt >= c.step_up_doubt:
            # A step-up vouches for the session as it was when it was answered (it cleared the
            # doubt): a sign raised since that the session is in two hands (two devices or networks
            # at once, impossible travel, a shared device) asks again, and nothing is learned from
            # the session until then. It used to hold for the session's whole life (12 h): a token
            # taken after its owner's step-up was never asked, and taught the account its device,
            # network and place, so the taker's own new sessions passed too.
            sess.verified = False
            sess.unexpl = 0  # the lock on unexplained records counts from the new doubt
        doubted = sess.doubt >= c.step_up_doubt and not sess.verified
        if doubted:
            sev = STEP_UP
        if sess.reasons:
            for code in _IDENTITY:
                if code in sess.reasons:
                    reasons.append((code, sess.reasons[code]))

        # ---- request rate
        rq = acc.req_times
        rq.append(ts)
        while rq and rq[0] < ts - _MINUTE:
            rq.popleft()
        budget = c.budget(acc.role)
        if len(rq) > budget.requests_per_minute:
            sev = max(sev, THROTTLE)
            reasons.append(("request_rate", f"{len(rq)} requests in a minute"))

        # ---- is it used for volume no task explains?
        n = r.exposed
        # A bulk export within the role's daily export budget is explained by its approval (the
        # gateway serves an export only after a second officer approved it); beyond the budget,
        # export_abuse below decides, and its rows count as unexplained like any other.
        # Only a download that hands out rows is an export: the request for approval and a refused
        # retry are not (each counted as one, the documented 3 a day were about 1 in practice).
        exporting = action == "waybill.export" and n > 0 and r.outcome != "deny"
        # A task open for days explains nothing now: a parcel out for delivery since last week, or a
        # waybill row put back (by a DBA) from an assignment long over, which carries its old time.
        stale_for = self._stale_task(r)
        explained = self._explained(r, stale_for is not None) or (
            exporting and acc.d_exports < budget.exports_per_day
        )
        stale_alert = False
        if stale_for is not None and action == "waybill.reveal" and n:
            age_h = stale_for / _HOUR
            reasons.append(("stale_task", f"{r.status} for {age_h:.0f} h, the assignee revealed it"))
            evidence["stale_task"] = {"status": r.status, "hours": round(age_h, 1)}
            if "stale_task" not in acc.d_alerts:
                acc.d_alerts.append("stale_task")
                stale_alert = True
        # The day's first approved export is not held to the reveal rate (a whole outlet's 2,000
        # rows were refused as "records in an hour"); later ones are, since repeated bulk exports
        # are how an insider empties an outlet under approvals (the simulator's scenario 8).
        approved_export = exporting and explained and acc.d_exports == 0
        # Sequential numbers count only for lookups that reveal or that the source refused: scanning
        # a sorted pile of parcels (masked views) is normal work, walking numbers for data is not.
        if not explained and r.res_id is not None and (action == "waybill.reveal" or r.outcome == "deny"):
            number = waybill_number(r.res_id)
            if number is not None:
                acc.seq.learn_one({"number": number})
                if len(acc.seq.recent) >= c.enumeration_hits:
                    hits = acc.seq.hits()
                    if hits >= c.enumeration_hits:
                        sev = LOCK
                        reasons.append(
                            ("enumeration", f"{hits} of the last {len(acc.seq.recent)} numbers adjacent")
                        )
                        evidence["waybills"] = sorted(acc.seq.recent)[-8:]
        if n and not approved_export:
            acc.d_records += n
            rt = acc.records_times
            rt.append((ts, n))
            acc.hour_records += n
            while rt[0][0] < ts - _HOUR:
                acc.hour_records -= rt.popleft()[1]
            unexpl = 0 if explained else n
            group = f"{acc.role}:{acc.org}:{r.day}"
            st.peer_add(group, r.actor, n, unexpl)
            if unexpl:
                acc.d_unexpl += n
                sess.unexpl += n
                ut = acc.unexpl_times
                ut.append((ts, n))
                acc.burst_unexpl += n
                while ut[0][0] < ts - c.burst_window_s:
                    acc.burst_unexpl -= ut.popleft()[1]
                if doubted and sess.unexpl >= c.lock_unexplained_with_doubt:
                    sev = LOCK
                    reasons.append(
                        ("unexplained_reveals", f"{sess.unexpl} records without a task, doubted session")
                    )
                if acc.d_unexpl > budget.unexplained_reveals_per_day:
                    limit = float(budget.unexplained_reveals_per_day)
                    others, _mean_r, mean_u = st.peer_stats(group, r.actor)
                    if others >= c.peer_min_members:
                        # A busy day for everyone (a festival) raises the bar for everyone.
                        limit = max(limit, c.peer_ratio * mean_u)
                    if acc.d_unexpl > limit:
                        sev = max(sev, DENY)
                        reasons.append(
                            ("unexplained_reveals", f"{acc.d_unexpl} records without a task today")
                        )
                        evidence["budget"] = limit
                if acc.burst_unexpl > c.unexplained_burst:
                    sev = max(sev, DENY)
                    reasons.append(
                        ("unexplained_reveals", f"{acc.burst_unexpl} records without a task in a burst")
                    )
            if acc.hour_records > budget.reveals_per_hour:
                sev = max(sev, DENY)
                reasons.append(("reveal_rate", f"{acc.hour_records} records in an hour"))
            if action == "waybill.reveal":
                sev = self._reveal_budget(r, acc, sess, n, budget, doubted, sev, reasons, evidence)
            if acc.d_records > c.peer_floor:
                others, mean_r, _mean_u = st.peer_stats(group, r.actor)
                if others < c.peer_min_members:
                    # Before colleagues start (a night after midnight) today has no peers: compare
                    # with yesterday's, or the first hours of every day escape the comparison.
                    others, mean_r, _mean_u = st.peer_stats(f"{acc.role}:{acc.org}:{r.day - 1}", r.actor)
                own = acc.daily_records
                beyond_own = own.n < own.warmup or acc.d_records > 2.0 * own.mean
                if others >= c.peer_min_members and acc.d_records > c.peer_ratio * mean_r and beyond_own:
                    sev = max(sev, DENY)
                    reasons.append(("peer_volume", f"{acc.d_records} records today, peers {mean_r:.0f}"))

        if action in _MASKED_READS and not n and (r.outcome is None or r.outcome == "allow"):
            # Served masked data (a refused read showed nothing, and denial_burst counts it). A
            # parcel of one's own task is work; a hub operator is shown routing data, no party.
            if action != "waybill.view":
                sev = self._list_or_search(r, acc, sess, budget, doubted, sev, reasons, evidence)
            elif not explained and acc.role != "hub_operator":
                rung = self._masked_volume(r, acc, sess, 1, budget, doubted)
                if rung:
                    sev = self._masked_alarm(acc, sess, budget, doubted, rung, sev, reasons, evidence)
        if acc.probes is not None and r.res_id is not None and acc.probes.pending:
            self._follow_up(r, acc, explained)

        if r.outcome == "deny":
            dt = acc.deny_times
            dt.append(ts)
            while dt[0] < ts - c.denial_window_s:
                dt.popleft()
            if len(dt) >= c.denial_lock:
                sev = LOCK
                reasons.append(("denial_burst", f"{len(dt)} denials in {c.denial_window_s / 60:.0f} min"))
            elif len(dt) >= c.denial_burst:
                sev = max(sev, DENY)
                reasons.append(("denial_burst", f"{len(dt)} denials in {c.denial_window_s / 60:.0f} min"))

        if exporting:
            acc.d_exports += 1
            over = acc.d_exports - budget.exports_per_day
            if over >= c.export_lock_over:
                sev = LOCK
                reasons.append(("export_abuse", f"{acc.d_exports} exports today"))
            elif over > 0:
                sev = max(sev, DENY)
                reasons.append(("export_abuse", f"{acc.d_exports} exports today"))

        cross = False
        if action == "admin.change" and r.purpose and (r.outcome in (None, "allow") or r.risk_refused):
            sev, cross = self._containment(r, sess, sev, reasons, evidence)

        if sev == DENY:
            acc.d_strikes += 1
            if acc.d_strikes >= c.strikes_to_lock:
                sev = LOCK
                reasons.append(("repeated_denials", f"{acc.d_strikes} denials today"))
        if sev == ALLOW and sess.pending:
            sev = STEP_UP
            reasons.append(("step_up_pending", None))

        if sev == ALLOW:
            verdict = (ALLOW, self._score(ALLOW, reasons), reasons)
            if cross or stale_alert:
                self._alert(r, acc, sess, verdict, evidence)
            return self._finish(acc, r, sess, verdict)
        verdict = (sev, self._score(sev, reasons), reasons)
        alerted = True
        if sev == STEP_UP:
            if not sess.pending:
                sess.pending = True
                self._alert(r, acc, sess, verdict, evidence)
            else:
                alerted = False
                if not c.repeat_step_up:
                    verdict = (ALLOW, self._score(ALLOW, reasons), reasons)
        elif sev == LOCK:
            reason = reasons[-1][0]
            st.set_lock(r.actor, reason)
            acc.locked, acc.lock_reason = True, reason
            st.end_sessions(r.actor, ts)  # the gateway revokes them with the lock
            self._alert(r, acc, sess, verdict, evidence)
        else:
            key = ACTION_NAMES[sev] + ":" + ",".join(sorted({code for code, _ in reasons}))
            if key not in acc.d_alerts:
                acc.d_alerts.append(key)
                self._alert(r, acc, sess, verdict, evidence)
            else:
                alerted = False
        if cross and not alerted:
            self._alert(r, acc, sess, verdict, evidence)  # the other officers hear of a burst once
        return self._finish(acc, r, sess, verdict)

    # ------------------------------------------------------------------ masked reads and probing

    def _list_or_search(self, r: Rec, acc: AccountState, sess: SessionState, budget: RoleBudget,
                        doubted: bool, sev: int, reasons: Reasons, evidence: dict[str, Any]) -> int:  # fmt: skip
        """Masked volume and phone probing for a served list or search; the new severity.

        Masked rows are what a renter can sell as partial names, 138****1234 and districts."""
        n = r.listed if r.ids is not None else min(r.listed, self.config.masked_rows_without_ids)
        if n:
            rung = self._masked_volume(r, acc, sess, n, budget, doubted)
            if rung:
                sev = self._masked_alarm(acc, sess, budget, doubted, rung, sev, reasons, evidence)
        code = _PROBE_CODES.get(r.q_kind or "") if r.action == "waybill.search" else None
        if code is not None:
            # A search by name that misses is a probe as one by phone is: the masked row shows the
            # surname, so an exact-match search that answered misses for free let a script guess the
            # given name behind it. Both kinds share one budget (searches that name a person).
            rung, why = self._search_probing(r, acc, sess, budget, doubted)
            if rung:
                sev = _climb(sev, rung)
                reasons.append((code, why))
                evidence["phone_probes_today"] = acc.d_probes
        return sev

    def _masked_volume(self, r: Rec, acc: AccountState, sess: SessionState, n: int, budget: RoleBudget,
                       doubted: bool) -> int:  # fmt: skip
        """Count ``n`` masked rows; the ladder's rung for the hour, the day and the peers.

        On every masked view of every courier's morning scan, so most events only count: ``m_free``
        rows may come before the hour's budget or the next peer step can be reached, and until then
        nothing needs judging again."""
        acc.d_masked += n
        mt = acc.masked_times
        if mt and r.ts - mt[-1][0] < _MINUTE:
            mt[-1][1] += n  # one slot a minute: a scan's hundreds of views make 60 slots an hour, not 500
        else:
            mt.append([r.ts, n])
        acc.m_free -= n
        if acc.m_free > 0 and not doubted:
            return ALLOW
        return self._masked_judge(r, acc, sess, n, budget, doubted)

    def _masked_judge(self, r: Rec, acc: AccountState, sess: SessionState, n: int, budget: RoleBudget,
                      doubted: bool) -> int:  # fmt: skip
        """Slide the hour, add the day's rows to the peer group, and climb the ladder."""
        c = self.config
        mt = acc.masked_times
        cutoff = r.ts - _HOUR
        while mt[0][0] < cutoff:
            mt.popleft()
        acc.hour_masked = sum(slot[1] for slot in mt)  # at most 60 slots
        unsent = acc.d_masked - acc.m_sent
        if unsent >= c.masked_peer_step:
            # The day's rows reach the peer group, and the day is judged again, in steps: a peer
            # counter write and read for every view (Redis round trips) would cost more than the
            # rest of the decision.
            group = f"m:{acc.role}:{acc.org}:{r.day}"
            self.state.peer_add(group, r.actor, unsent, 0)
            acc.m_sent = acc.d_masked
            unsent = 0
            if acc.d_masked > budget.masked_rows_per_day or acc.d_masked > c.masked_peer_floor:
                acc.m_over = self._masked_day(r, acc, group, budget)
        if doubted:
            sess.masked += n  # rows of a doubted session: only a doubted session is judged by them
            if sess.masked > budget.masked_rows_per_hour:
                acc.m_free = 0
                return LOCK  # paging on past the budget while the step-up is unanswered: a renter
        hour_budget = budget.masked_rows_per_hour
        if acc.hour_masked <= hour_budget and acc.m_over <= 1.0:
            # Judged again on the row that passes the hour's budget, or that completes a peer step.
            acc.m_free = min(hour_budget - acc.hour_masked + 1, c.masked_peer_step - unsent)
            return ALLOW
        acc.m_free = 0
        return self._rung(max(acc.hour_masked / hour_budget, acc.m_over), sess)

    def _masked_alarm(self, acc: AccountState, sess: SessionState, budget: RoleBudget, doubted: bool,
                      rung: int, sev: int, reasons: Reasons, evidence: dict[str, Any]) -> int:  # fmt: skip
        """Add the masked_volume reason (counts only) for a rung the ladder reached; the new severity."""
        if doubted and sess.masked > budget.masked_rows_per_hour:
            why = f"{sess.masked} masked rows in a doubted session"
        elif acc.hour_masked / budget.masked_rows_per_hour >= acc.m_over:
            why = f"{acc.hour_masked} masked rows in an hour"
        else:
            why = f"{acc.d_masked} masked rows today, more than the day and peers allow"
        reasons.append(("masked_volume", why))
        evidence["masked_today"] = acc.d_masked
        evidence["masked_last_hour"] = acc.hour_masked
        return _climb(sev, rung)

    def _masked_day(self, r: Rec, acc: AccountState, group: str, budget: RoleBudget) -> float:
        """How far today's masked rows are over the day budget (raised on a busy day) or the peers."""
        c = self.config
        st = self.state
        others, mean, _ = st.peer_stats(group, r.actor)
        # Yesterday's colleagues too, whichever is busier: before colleagues start (after midnight),
        # and on a festival morning, when today's counts lag behind the early starters (a clerk was
        # throttled at 725 rows by 08:53 on the second day of Double 11).
        y_others, y_mean, _ = st.peer_stats(f"m:{acc.role}:{acc.org}:{r.day - 1}", r.actor)
        if y_others >= c.peer_min_members and (others < c.peer_min_members or y_mean > mean):
            others, mean = y_others, y_mean
        limit = float(budget.masked_rows_per_day)
        has_peers = others >= c.peer_min_members and mean > 0
        if has_peers:
            limit = max(limit, c.peer_ratio * mean)  # a festival raises the bar for everyone
        over = acc.d_masked / limit
        own = acc.daily_masked
        beyond_own = own.n < own.warmup or acc.d_masked > 2.0 * own.mean
        if has_peers and acc.d_masked > c.masked_peer_floor and beyond_own:
            over = max(over, acc.d_masked / (c.peer_ratio * mean))
        return over

    def _search_probing(self, r: Rec, acc: AccountState, sess: SessionState, budget: RoleBudget,
                       doubted: bool) -> tuple[int, str]:  # fmt: skip
        """Learn one search by phone or name; the ladder's rung for probes this hour and today."""
        c = self.config
        probes = acc.probes
        if probes is None:
            probes = acc.probes = PhoneProbes(
                resolve_s=c.probe_resolve_s, limit=budget.phone_probes_per_hour, seed=c.seed
            )
        x: dict[str, float] = {"ts": r.ts, "hits": r.listed}
        for i, number in enumerate((r.ids or ())[:3]):
            key = waybill_number(number)
            if key is not None:
                x[f"key{i}"] = key
        before = probes.total
        probes.learn_one(x)
        acc.d_probes += probes.total - before
        hour = probes.count(r.ts)
        over = max(hour / budget.phone_probes_per_hour, acc.d_probes / budget.phone_probes_per_day)
        # Counts only: the engine never sees the numbers searched, and an alert must not carry them.
        why = (
            f"{hour} searches by phone or name in an hour found nothing or nothing a task followed, "
            f"{acc.d_probes} today"
        )
        if doubted and over > 1.0:
            return LOCK, why
        return self._rung(over, sess), why

    def _follow_up(self, r: Rec, acc: AccountState, explained: bool) -> None:
        """A parcel touched for a task (a ticket, an assignment, one's own outlet's) after a phone
        search found it: that search was work, not a probe."""
        assert acc.probes is not None
        if explained or (r.res_org is not None and r.res_org == acc.org):
            key = waybill_number(r.res_id)
            if key is not None:
                acc.probes.resolve_one({"key": key})

    def _reveal_budget(self, r: Rec, acc: AccountState, sess: SessionState, n: int, budget: RoleBudget,
                       doubted: bool, sev: int, reasons: Reasons, evidence: dict[str, Any]) -> int:  # fmt: skip
        """Waybills revealed this hour and today, explained by a task or not, against the role's
        reveal budgets; the new severity.

        An assignment or a ticket explains *why* a record is revealed, not *how many*: a service key
        that hands one courier 500 waybills, or one agent 500 tickets, explains them all. Over the
        budget the ladder climbs as it does for masked reads, with a deny rung before the lock since
        these are clear-text records: throttle; over ``volume_step_up_ratio`` x the budget, step-up
        (deny once the session passed one); over ``volume_lock_ratio`` x, or over it at all in a
        session in doubt, lock. The day budget is raised on a busy day to ``peer_ratio`` x the mean of
        today's or yesterday's colleagues (the busier), as the masked day budget is."""
        c = self.config
        acc.d_rv += n
        rt = acc.rv_times
        rt.append((r.ts, n))
        acc.hour_rv += n
        while rt[0][0] < r.ts - _HOUR:
            acc.hour_rv -= rt.popleft()[1]
        over_h = acc.hour_rv / budget.revealed_per_hour
        over_d = 0.0
        day_limit = float(budget.revealed_per_day)
        if acc.d_rv > budget.revealed_per_day:
            st = self.state
            others, mean, _ = st.peer_stats(f"{acc.role}:{acc.org}:{r.day}", r.actor)
            y_others, y_mean, _ = st.peer_stats(f"{acc.role}:{acc.org}:{r.day - 1}", r.actor)
            if y_others >= c.peer_min_members and (others < c.peer_min_members or y_mean > mean):
                others, mean = y_others, y_mean
            if others >= c.peer_min_members and "task_burst" not in acc.d_alerts:
                # A festival raises the bar for everyone; not for an account handed a burst of tasks.
                day_limit = max(day_limit, c.peer_ratio * mean)
            over_d = acc.d_rv / day_limit
        over = max(over_h, over_d)
        if over <= 1.0:
            return sev
        if doubted or over > c.volume_lock_ratio:
            rung = LOCK
        elif over > c.volume_step_up_ratio:
            rung = DENY if sess.verified else STEP_UP
        else:
            rung = THROTTLE
        if over_h >= over_d:
            why = f"{acc.hour_rv} waybills revealed in an hour, budget {budget.revealed_per_hour}"
        else:
            why = f"{acc.d_rv} waybills revealed today, budget {day_limit:.0f}"
        reasons.append(("reveal_budget", why))
        evidence["revealed_today"] = acc.d_rv
        evidence["revealed_last_hour"] = acc.hour_rv
        evidence["reveal_budget_day"] = day_limit
        return _climb(sev, rung)

    def _rung(self, over: float, sess: SessionState) -> int:
        """The ladder: over budget, throttle; further, step-up (throttle once passed); far beyond, lock."""
        c = self.config
        if over <= 1.0:
            return ALLOW
        if over > c.volume_lock_ratio:
            return LOCK
        if over > c.volume_step_up_ratio and not sess.verified:
            return STEP_UP
        return THROTTLE

    # ------------------------------------------------------------------ helpers

    def _finish(self, acc: AccountState, r: Rec, sess: SessionState, verdict: Verdict) -> Verdict:
        # Learn habits only from sessions we believe are the owner's: a renter's night hours and
        # devices must not become "usual" for the account.
        if sess.verified or sess.doubt < self.config.step_up_doubt:
            acc.hours.learn_one({"hour": r.hour})
            self._trust(acc, r)
        elif (
            r.device is not None
            and any(code != "new_device" for code in sess.reasons)
            and remember(acc.dev_doubted, r.device, r.ts, DEVICES_KEPT)
        ):
            acc.doubted_evicted = True  # the device forgotten must not be learned by use: none is
        acc.n += 1
        acc.last_ts = r.ts
        self.state.save(acc)
        if r.action == "admin.change" and verdict[0] == ALLOW:
            # After the officer's own verdict, as the gateway makes the change only when it is allow
            # (a challenged or refused reset is recorded as such, and replay then skips it too).
            self._admin_made(r)
        return verdict

    def _trust(self, acc: AccountState, r: Rec) -> None:
        # Most events repeat the previous one's device, address and position (same session).
        key = [r.device, r.ip, r.lat, r.lon]
        if key == acc.trusted_key:
            return
        acc.trusted_key = key
        ts = r.ts
        if r.device is not None:
            remember(acc.devices, r.device, ts, DEVICES_KEPT)
        if r.ip is not None:
            remember(acc.nets, self._net(r.ip), ts, PLACES_KEPT)
        if r.lat is not None and r.lon is not None:
            remember(acc.places, self._cell(r.lat, r.lon), ts, PLACES_KEPT)

    def _net(self, ip: str) -> str:
        if ":" in ip:
            return ":".join(ip.split(":")[:3])
        return ".".join(ip.split(".")[: self._v4_octets])

    def _cell(self, lat: float, lon: float) -> str:
        size = self.config.place_cell_degrees
        return f"{int(lat // size)}:{int(lon // size)}"

    def _doubt(self, sess: SessionState, code: str, detail: str | None) -> None:
        if code in sess.reasons:
            return
        sess.reasons[code] = detail or ""
        sess.doubt += getattr(self.config, "doubt_" + code)

    def _stale_task(self, r: Rec) -> float | None:
        """Seconds since the waybill entered its status, when the actor is its assignee and that is
        more than ``task_stale_hours`` ago; else None (an event without ``status_ts`` is not judged)."""
        if r.assignee is None or r.assignee != r.actor or r.status_since is None:
            return None
        age = r.ts - r.status_since
        return age if age > self.config.task_stale_hours * _HOUR else None

    @staticmethod
    def _explained(r: Rec, stale_task: bool) -> bool:
        if r.assignee is not None and r.assignee == r.actor:
            return not stale_task  # see _stale_task
        if r.ticket is not None and r.role in _CASE_ROLES:
            return True  # resource.ticket names an open case of the actor's own (Access Event v1)
        if (
            r.status == "exception"
            and r.role == "hub_operator"
            and r.res_org is not None
            and r.res_org == r.org
        ):
            return True  # a parcel in exception at the operator's own hub is their task
        return r.role in _OFFICERS and r.purpose in _OFFICER_PURPOSES

    def _admin_change(self, r: Rec) -> None:
        # Directory changes arrive as ``admin.change`` events whose purpose names the change, the
        # convention of the company simulator: ``employee.left:<id>``, ``employee.suspended:<id>``,
        # ``employee.reinstated:<id>`` (``employee.moved:<id>:<unit>`` needs nothing here: the
        # actor's org unit on later events says it).
        if r.outcome == "deny" or not r.purpose:
            return
        status = _ADMIN_STATUS.get(r.purpose.partition(":")[0])
        target = admin_change_subject(r.purpose)
        if status is not None and target:
            self.set_employee_status(target, status)

    def _containment(self, r: Rec, sess: SessionState, sev: int, reasons: Reasons,
                     evidence: dict[str, Any]) -> tuple[int, bool]:  # fmt: skip
        """Count an account taken out of use by ``r``'s actor (a hold, a suspension, revoked sessions,
        reset devices, a privileged account's departure) in the sliding window; the new severity, and
        whether this event crossed the alert threshold.

        Attempts count as well as changes made: one refused with a step-up stays counted, or asking
        again after the challenge would find it "seen already", and a renter who cannot answer the
        step-up would never reach the refusal of a fourth privileged account. Weighed by the target's
        role as learned from its own events: the engine knows no directory, so an account it never
        saw act counts as ordinary (see docs/risk.md)."""
        assert r.purpose is not None
        kind, _, rest = r.purpose.partition(":")
        before = _CONTAINMENT[kind][0] if kind in _CONTAINMENT else None
        target = admin_change_subject(r.purpose) if before is not None else None
        if target is None or target == r.actor:
            return sev, False
        leaving = kind == "employee.left"
        if kind == "employee.status":
            status = rest.rpartition(":")[2]
            if status not in ("suspended", "left"):
                return sev, False
            leaving = status == "left"
        c = self.config
        privileged = self.state.load(target).role in _PRIVILEGED
        if leaving and not privileged:
            return sev, False  # offboarding, in batches at the month's end: routine, not response
        member = ("p:" if privileged else "o:") + target
        added, window = self.state.containment_add(r.actor, member, r.ts, c.containment_window_s)
        # Distinct accounts, whatever was done to them: a hold is announced twice (the hold, then
        # the suspension), and an officer may hold an account, end its sessions and reset its phone.
        accounts: dict[str, bool] = {}
        last: dict[str, float] = {}
        for m, t in window.items():
            cls, _, who = m.partition(":")
            accounts[who] = accounts.get(who, False) or cls == "p"
            last[who] = max(last.get(who, t), t)
        new = added and sum(1 for m in window if m.partition(":")[2] == target) == 1
        n_priv = sum(accounts.values())
        weight = len(accounts) - n_priv + n_priv * c.containment_privileged_weight
        mine = (c.containment_privileged_weight if privileged else 1.0) if new else 0.0
        cross = weight >= c.containment_alert > weight - mine
        if weight >= c.containment_alert:
            reasons.append(
                ("containment_burst", f"{len(accounts)} accounts contained in {c.containment_window_s / 60:.0f} min, "
                                      f"{n_priv} privileged")
            )  # fmt: skip
            # Ids only (staff numbers), the most recent first, 50 at most.
            recent = sorted(accounts, key=lambda who: (-last[who], who))
            evidence["contained_accounts"] = recent[:50]
            evidence["contained_privileged"] = [who for who in recent if accounts[who]][:50]
            evidence["contained_in_window"] = len(accounts)
            evidence["containment_weight"] = weight
        if before:
            fresh = sess.verified and r.ts - sess.stepped <= c.containment_window_s
            if privileged and n_priv > c.containment_privileged_max:
                sev = max(sev, DENY)
            elif weight >= c.containment_step_up and not fresh:
                sev = _climb(sev, STEP_UP)
        return sev, cross

    def _admin_made(self, r: Rec) -> None:
        # ``devices.reset:<id>:<ticket>``: a security officer unbound the account's devices (a lost or
        # stolen phone). The engine forgets them as known devices of the account, or whoever holds
        # the old phone would be the owner to risk control, with no step-up ever asked of it.
        if r.outcome not in (None, "allow") or not r.purpose:
            return
        kind = r.purpose.partition(":")[0]
        if not _CONTAINMENT.get(kind, (False, False))[1]:
            return
        target = admin_change_subject(r.purpose)
        if target:
            # Before a device reset, which forgets the sessions along with the devices.
            self.state.end_sessions(target, r.ts)
            if kind == "devices.reset":
                self.state.reset_devices(target, r.ts)

    def _ended_session_back(self, r: Rec, acc: AccountState) -> Verdict:
        """A session that containment ended is serving again. The gateway refuses a revoked session
        itself, so this one came back behind its back: its row put back as it was before the
        revocation (a database rollback that the row's seal cannot tell, as the old row was sealed),
        or a gateway that forgot the revocation."""
        ended_at = _iso(acc.ended[r.session or ""])
        return self._brought_back(
            r,
            acc,
            "ended_session",
            f"session {r.session} ended at {ended_at}",
            {"session_ended_at": ended_at},
        )

    def _seed_from_before_reset(self, r: Rec, acc: AccountState) -> Verdict:
        """A step-up passed after a device reset and before any device was enrolled again. The reset
        unbound every device of the account, so no seed was left to answer: one from before the reset
        was put back (a device row restored from a DBA's copy; device rows are not sealed, and a
        sealed one could be put back alike)."""
        reset_at = _iso(acc.reset_ts)
        return self._brought_back(
            r, acc, "seed_from_before_reset", f"step-up passed with no device enrolled since the reset at {reset_at}",
            {"devices_reset_at": reset_at},
        )  # fmt: skip

    def _brought_back(
        self, r: Rec, acc: AccountState, code: str, detail: str, evidence: dict[str, Any]
    ) -> Verdict:
        """Something containment took away is in use again: lock the account, whichever session asks
        next, and alert. Whoever brought it back works with whoever holds the account."""
        verdict: Verdict = (LOCK, 100.0, [(code, detail)])
        self.state.set_lock(r.actor, code)
        acc.locked, acc.lock_reason = True, code
        self.state.end_sessions(r.actor, r.ts)  # the gateway revokes them with the lock
        self._alert(r, acc, None, verdict, evidence)
        self.state.save(acc)
        return verdict

    def _device_flood(self, r: Rec, acc: AccountState) -> Verdict:
        """One device id more than ``devices_per_day`` today: refused, and remembered nowhere.

        ``X-Device-Id`` is the client's word: an account sending a new id on every request grew its
        device maps and the device registry without bound. Forgetting ids instead would let whoever
        floods them push the owner's phone, or their own doubted one, out of memory; refusing keeps
        what is known, and repeated, locks the account like any other denials."""
        c = self.config
        reasons: Reasons = [
            ("concurrent_devices", f"device {r.device}: more than {c.devices_per_day} device ids today")
        ]
        acc.d_strikes += 1
        sev = DENY
        if acc.d_strikes >= c.strikes_to_lock:
            sev = LOCK
            reasons.append(("repeated_denials", f"{acc.d_strikes} denials today"))
        verdict: Verdict = (sev, self._score(sev, reasons), reasons)
        evidence = {"devices_today": acc.d_devices}
        if sev == LOCK:
            self.state.set_lock(r.actor, "repeated_denials")
            acc.locked, acc.lock_reason = True, "repeated_denials"
            self.state.end_sessions(r.actor, r.ts)  # the gateway revokes them with the lock
            self._alert(r, acc, None, verdict, evidence)
        elif "deny:device_flood" not in acc.d_alerts:
            acc.d_alerts.append("deny:device_flood")
            self._alert(r, acc, None, verdict, evidence)
        self.state.save(acc)
        return verdict

    def _new_day(self, day: int) -> None:
        # Peer counters older than yesterday are never read again; Redis expires them by TTL.
        self._today = day
        forget = getattr(self.state, "forget_peers_before", None)
        if forget is not None:
            forget(day - 1)

    def _roll_day(self, acc: AccountState, day: int) -> None:
        if acc.cur_day:
            acc.days += 1
            acc.daily_records.learn_one({"value": acc.d_records})
            acc.daily_unexpl.learn_one({"value": acc.d_unexpl})
            acc.daily_masked.learn_one({"value": acc.d_masked})
        acc.cur_day = day
        acc.d_records = acc.d_unexpl = acc.d_exports = acc.d_strikes = 0
        acc.d_masked = acc.m_sent = acc.m_free = acc.d_probes = 0
        acc.d_rv = acc.d_tasks = acc.d_devices = 0
        acc.m_over = 0.0
        acc.d_alerts = []
        horizon = 2 * 86_400
        last = acc.last_ts
        for key in [k for k, s in acc.sessions.items() if last - s.first_ts > horizon]:
            del acc.sessions[key]

    @staticmethod
    def _score(sev: int, reasons: Reasons) -> float:
        points = 0
        for code, _ in reasons:
            points += REASON_POINTS.get(code, 20)
        lo, hi = _BANDS[sev]
        return float(min(max(points, lo), hi))

    def _alert(self, r: Rec, acc: AccountState, sess: SessionState | None, verdict: Verdict,
               evidence: dict[str, Any]) -> None:  # fmt: skip
        if self.sink is None:
            return
        sev, score, reasons = verdict
        ev = {
            "role": acc.role,
            "org_unit": acc.org,
            "device_id": r.device,
            "waybill": r.res_id,
            "records_today": acc.d_records,
            "unexplained_today": acc.d_unexpl,
            "records_last_hour": acc.hour_records,
            "exports_today": acc.d_exports,
            "session_unexplained": sess.unexpl if sess else 0,
            "session_doubt": round(sess.doubt, 2) if sess else 0.0,
            **evidence,
        }
        self.sink.emit(
            Alert(
                actor_id=r.actor,
                event_id=r.event_id,
                ts=datetime.fromisoformat(r.ts_text),
                action=ACTION_NAMES[sev],
                score=score,
                reasons=tuple(reasons),
                evidence=ev,
                session_id=r.session,
                tenant=self.tenant,
            )
        )
