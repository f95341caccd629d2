"""Risk state behind one interface: process memory for the embedded default, Redis for several workers.

The engine reads and writes per-account state (:class:`AccountState`), a per-device registry (which
accounts used a device) and per-peer-group daily counters through :class:`RiskState`. Locks and
employee status are kept apart from the account blob, in their own keys, so that a lock set by one
worker is never overwritten by another worker saving an older copy of the account.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import orjson

from courierguard.risk.detectors import HourProfile, PhoneProbes, RunningZ, SequenceDetector


class SessionState:
    """What the engine knows about one session of an account: doubt about who holds it, step-up."""

    __slots__ = (
        "device",
        "doubt",
        "first_ts",
        "last_ts",
        "masked",
        "net",
        "pending",
        "reasons",
        "stepped",
        "unexpl",
        "verified",
    )

    def __init__(self, device: str | None, first_ts: float) -> None:
        self.device = device
        self.first_ts = first_ts
        self.doubt = 0.0
        self.reasons: dict[str, str] = {}
        self.pending = False
        self.verified = False
        self.unexpl = 0
        self.masked = 0
        # When the session last passed a step-up (0: never): containing many accounts asks for a
        # recent one, so a session hijacked hours after its owner's step-up is asked again.
        self.stepped = 0.0
        # The network of the session's last event, and when that was: two sessions taking turns on
        # one device id from two networks (concurrent_sessions).
        self.net: str | None = None
        self.last_ts = 0.0

    def to_state(self) -> list[Any]:
        return [
            self.device,
            self.first_ts,
            self.doubt,
            self.reasons,
            self.pending,
            self.verified,
            self.unexpl,
            self.masked,
            self.stepped,
            self.net,
            self.last_ts,
        ]

    @classmethod
    def from_state(cls, s: list[Any]) -> SessionState:
        out = cls(s[0], s[1])
        out.doubt, out.reasons, out.pending, out.verified, out.unexpl = s[2], dict(s[3]), s[4], s[5], s[6]
        out.masked = s[7] if len(s) > 7 else 0  # absent from state saved by earlier versions
        out.stepped = s[8] if len(s) > 8 else 0.0  # likewise
        if len(s) > 10:  # likewise
            out.net, out.last_ts = s[9], s[10]
        return out


class AccountState:
    """Everything learned about one account: known devices, networks and places, habits, today's counts."""

    __slots__ = (
        "actor",
        "burst_unexpl",
        "cur_day",
        "d_alerts",
        "d_devices",
        "d_exports",
        "d_masked",
        "d_probes",
        "d_records",
        "d_rv",
        "d_strikes",
        "d_tasks",
        "d_unexpl",
        "daily_masked",
        "daily_records",
        "daily_unexpl",
        "days",
        "deny_times",
        "dev_days",
        "dev_doubted",
        "dev_last",
        "devices",
        "doubted_evicted",
        "ended",
        "enrolled_ts",
        "first_ts",
        "hour_masked",
        "hour_records",
        "hour_rv",
        "hours",
        "last_device",
        "last_session",
        "last_ts",
        "loc",
        "lock_reason",
        "locked",
        "m_free",
        "m_over",
        "m_sent",
        "masked_times",
        "n",
        "nets",
        "org",
        "places",
        "probes",
        "records_times",
        "req_times",
        "reset_ts",
        "role",
        "rv_times",
        "seq",
        "sessions",
        "status",
        "trusted_key",
        "unexpl_times",
    )  # fmt: skip

    def __init__(self, actor: str, seed: int = 0) -> None:
        self.actor = actor
        self.role: str | None = None
        self.org: str | None = None
        self.status = "active"
        self.locked = False
        self.lock_reason: str | None = None
        self.n = 0
        self.first_ts = 0.0
        self.last_ts = 0.0
        self.cur_day = 0
        self.days = 0
        # Trusted devices, networks and places with when they were last used.
        self.devices: dict[str, float] = {}
        self.nets: dict[str, float] = {}
        self.places: dict[str, float] = {}
        # Every device seen (trusted or not): last use, and on how many distinct days it was used.
        self.dev_last: dict[str, float] = {}
        self.dev_days: dict[str, list[int]] = {}
        # Devices used in a session doubted for more than being new (another network, off shift...):
        # never learned by use alone, only by a step-up (a renter's phone must not turn trusted).
        self.dev_doubted: dict[str, float] = {}
        # Whether a doubted device was ever evicted to keep dev_doubted bounded (DEVICES_KEPT): from
        # then on no device of the account is learned by use alone, only by a step-up (fail closed).
        self.doubted_evicted = False
        # Distinct device ids used today (each counts on its first event of the day).
        self.d_devices = 0
        self.last_device: str | None = None
        self.last_session: str | None = None
        self.trusted_key: list[Any] | None = None
        # When a security officer last reset the account's devices (0: never); see forget_devices.
        self.reset_ts = 0.0
        # When a device was last enrolled (0: never seen): after a reset, only an enrolment makes a
        # second factor again, so a step-up passed before one used a seed the reset took away.
        self.enrolled_ts = 0.0
        self.loc: list[float] | None = None
        self.hours = HourProfile(seed=seed)
        self.daily_records = RunningZ(seed=seed)
        self.daily_unexpl = RunningZ(seed=seed)
        self.seq = SequenceDetector(seed=seed)
        self.d_records = 0
        self.d_unexpl = 0
        self.d_exports = 0
        self.d_strikes = 0
        self.d_alerts: list[str] = []
        # Sliding windows as (ts, records) with their running sums, so a window costs O(1) per event.
        self.unexpl_times: deque[tuple[float, int]] = deque()
        self.burst_unexpl = 0
        self.hour_records = 0
        self.records_times: deque[tuple[float, int]] = deque()
        self.req_times: deque[float] = deque()
        self.deny_times: deque[float] = deque()
        self.sessions: dict[str, SessionState] = {}
        # Sessions ended by containment (revoked, account held, left or locked), with when: such a
        # session seen serving again was brought back behind the gateway's back (a database row put
        # back as it was before the revocation). Kept beside the account, as its lock is.
        self.ended: dict[str, float] = {}
        # Masked reads: rows today, in the last hour (window of [minute, rows]), how many of today's
        # rows were already added to the peer group, how far the day was over its budget or the
        # peers when they were (both in steps, not on every view), and how many rows may come
        # before anything needs judging again.
        self.d_masked = 0
        self.m_over = 0.0
        self.m_free = 0
        self.hour_masked = 0
        self.masked_times: deque[list[Any]] = deque()  # [minute's first ts, rows]
        self.m_sent = 0
        self.daily_masked = RunningZ(seed=seed)
        # Phone probing: made on the account's first search by phone (most accounts never search).
        self.probes: PhoneProbes | None = None
        self.d_probes = 0
        # Revealed records (single-waybill reveals, explained or not): today and the sliding hour,
        # against the role's reveal budgets; tasks (assignments, cases) handed to the account today.
        self.d_rv = 0
        self.hour_rv = 0
        self.rv_times: deque[tuple[float, int]] = deque()
        self.d_tasks = 0

    def to_state(self) -> dict[str, Any]:
        """JSON-ready data for Redis (locks and status live in their own keys)."""
        return {
            "actor": self.actor, "role": self.role, "org": self.org, "n": self.n, "first_ts": self.first_ts,
            "last_ts": self.last_ts, "cur_day": self.cur_day, "days": self.days, "devices": self.devices,
            "nets": self.nets, "places": self.places, "dev_last": self.dev_last, "dev_days": self.dev_days, "dev_doubted": self.dev_doubted,
            "last_device": self.last_device, "trusted_key": self.trusted_key, "loc": self.loc, "hours": self.hours.to_state(),
            "daily_records": self.daily_records.to_state(), "daily_unexpl": self.daily_unexpl.to_state(),
            "seq": self.seq.to_state(), "d_records": self.d_records, "d_unexpl": self.d_unexpl,
            "d_exports": self.d_exports, "d_strikes": self.d_strikes, "d_alerts": self.d_alerts,
            "unexpl_times": list(self.unexpl_times), "burst_unexpl": self.burst_unexpl,
            "hour_records": self.hour_records,
            "records_times": list(self.records_times), "req_times": list(self.req_times),
            "deny_times": list(self.deny_times),
            "sessions": {k: v.to_state() for k, v in self.sessions.items()},
            "d_masked": self.d_masked, "hour_masked": self.hour_masked, "masked_times": list(self.masked_times),
            "m_sent": self.m_sent, "m_over": self.m_over, "m_free": self.m_free, "daily_masked": self.daily_masked.to_state(),
            "probes": self.probes.to_state() if self.probes is not None else None, "d_probes": self.d_probes,
            "d_rv": self.d_rv, "hour_rv": self.hour_rv, "rv_times": list(self.rv_times), "d_tasks": self.d_tasks,
            "reset_ts": self.reset_ts, "last_session": self.last_session,
            "doubted_evicted": self.doubted_evicted, "d_devices": self.d_devices,
        }  # fmt: skip

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> AccountState:
        a = cls(s["actor"])
        for name in ("role", "org", "n", "first_ts", "last_ts", "cur_day", "days", "devices", "nets", "places",
                     "dev_last", "dev_days", "last_device", "trusted_key", "loc", "d_records", "d_unexpl", "d_exports",
                     "d_strikes", "d_alerts", "burst_unexpl", "hour_records"):  # fmt: skip
            setattr(a, name, s[name])
        a.dev_doubted = s.get("dev_doubted", {})  # absent from state saved by earlier versions
        a.reset_ts = s.get("reset_ts", 0.0)  # likewise
        a.last_session = s.get("last_session")  # likewise
        a.doubted_evicted = s.get("doubted_evicted", False)  # likewise
        a.d_devices = s.get("d_devices", 0)  # likewise
        a.hours = HourProfile.from_state(s["hours"])
        a.daily_records = RunningZ.from_state(s["daily_records"])
        a.daily_unexpl = RunningZ.from_state(s["daily_unexpl"])
        a.seq = SequenceDetector.from_state(s["seq"])
        a.unexpl_times = deque((t, n) for t, n in s["unexpl_times"])
        a.records_times = deque((t, n) for t, n in s["records_times"])
        a.req_times = deque(s["req_times"])
        a.deny_times = deque(s["deny_times"])
        a.sessions = {k: SessionState.from_state(v) for k, v in s["sessions"].items()}
        if "d_masked" in s:  # absent from state saved by earlier versions
            a.d_masked, a.hour_masked, a.d_probes = s["d_masked"], s["hour_masked"], s["d_probes"]
            a.m_sent, a.m_over, a.m_free = s["m_sent"], s["m_over"], s["m_free"]
            a.masked_times = deque([t, n] for t, n in s["masked_times"])
            a.daily_masked = RunningZ.from_state(s["daily_masked"])
            a.probes = PhoneProbes.from_state(s["probes"]) if s["probes"] is not None else None
        if "d_rv" in s:  # absent from state saved by earlier versions
            a.d_rv, a.hour_rv, a.d_tasks = s["d_rv"], s["hour_rv"], s["d_tasks"]
            a.rv_times = deque((t, n) for t, n in s["rv_times"])
        return a

    def forget_devices(self, ts: float) -> None:
        """A security officer reset the account's devices at ``ts`` (a lost, stolen or replaced phone,
        or an exposed seed): nothing learned about them vouches for whoever holds them now.

        The old phone becomes a device never trusted (``new_device``) and its days of clean use
        start again, or it would be trusted at once as "a replaced phone used on several days".
        Sessions go too: a step-up passed on the lost phone, or a session keyed by its device id,
        must not keep skipping the identity checks. Kept: networks, places, hours (the owner's
        habits, not the phone's), the last use of each device (so the old and the new phone in use
        at once is still ``concurrent_devices``), and devices already doubted (never learned by use).
        """
        if ts <= self.reset_ts:
            return  # this reset was applied already (a replay, or a second worker's load)
        self.devices.clear()
        self.dev_days.clear()
        self.sessions.clear()
        self.trusted_key = None  # the cache that lets _trust skip re-learning the same device
        self.reset_ts = ts


DEVICES_KEPT = 64
"""At most this many device ids per account in each of its device maps (trusted, last use, days of
use, doubted), the most recently used: a courier has a PDA and a phone. ``X-Device-Id`` is the
client's word, and one account sending 100,000 ids kept 100,000 entries in each map (and its Redis
blob, read and written on every event, grew with them). Forgetting a trusted device, or one's days
of use, only makes it new again; forgetting a doubted one sets ``doubted_evicted`` (see there)."""
PLACES_KEPT = 64
"""At most this many networks and places per account, the most recently used: forgetting one only
makes it new again (``new_network``, ``new_place``)."""


def remember(seen: dict[str, Any], key: str, value: Any, keep: int) -> bool:
    """``seen[key] = value``, then drop the least recently used entries beyond ``keep`` (values are
    times, or lists of days whose last is the latest). True when an entry was dropped."""
    seen[key] = value
    if len(seen) <= keep:
        return False
    # One sort for however many are dropped: a map an earlier version let grow (100,000 ids) is
    # trimmed on its first event, and one scan per id dropped took minutes under the account's lock.
    latest = sorted(seen, key=lambda k: seen[k][-1] if isinstance(seen[k], list) else seen[k])
    for oldest in latest[: len(seen) - keep]:
        del seen[oldest]
    return True


ENDED_KEEP_S = 90 * 86_400
"""How long an ended session is remembered: as long as Redis keeps a silent account's state."""
ENDED_KEEP = 256
"""At most this many ended sessions per account (the newest): a courier has a handful a week."""


def with_ended(ended: dict[str, float], sessions: Iterable[str], ts: float) -> dict[str, float]:
    """``ended`` with ``sessions`` added as ended at ``ts``, pruned to :data:`ENDED_KEEP` entries
    younger than :data:`ENDED_KEEP_S`. An entry already there keeps its first time."""
    out = {sid: t for sid, t in ended.items() if ts - t < ENDED_KEEP_S}
    for sid in sessions:
        out.setdefault(sid, ts)
    if len(out) > ENDED_KEEP:
        out = dict(sorted(out.items(), key=lambda kv: kv[1])[-ENDED_KEEP:])
    return out


class RiskState(Protocol):
    """Where the engine keeps what it learned. One implementation per deployment shape."""

    def hold(self, actor: str) -> AbstractContextManager[object]:
        """Hold ``actor`` for one decision: the engine loads, changes and saves the account inside,
        so that decisions on one account arriving at once (a worker's threads, several workers)
        each see the others' counts. Without it a renter firing 100 reveals at once got 116 served
        against a budget of 40: each decision loaded n, counted its own and saved n + 1."""
        ...

    def load(self, actor: str) -> AccountState:
        """The account's state (a fresh one for an unknown account), with its lock and status."""
        ...

    def save(self, account: AccountState) -> None:
        """Persist ``account`` after an event changed it (a no-op for memory)."""
        ...

    def set_lock(self, actor: str, reason: str | None) -> None:
        """Lock the account with ``reason``, or unlock it with ``None``."""
        ...

    def set_status(self, actor: str, status: str) -> None:
        """Record the employee's status: ``active``, ``suspended`` or ``left``."""
        ...

    def reset_devices(self, actor: str, ts: float) -> None:
        """A security officer reset ``actor``'s devices at ``ts``: :meth:`AccountState.forget_devices`,
        kept so that a worker saving an older copy of the account cannot bring the devices back."""
        ...

    def device_enrolled(self, actor: str, ts: float) -> None:
        """``actor`` enrolled a device at ``ts`` (risk control allowed it); kept apart from the
        account's saved state, as a reset is, so that an older copy saved later cannot forget it."""
        ...

    def end_sessions(self, actor: str, ts: float) -> None:
        """Every session of ``actor`` the engine knows ended at ``ts`` (containment revoked them).
        Kept apart from the account's saved state, as its lock is, so that no copy of the account
        saved by another worker can bring them back."""
        ...

    def device_touch(
        self, device: str, actor: str, org: str | None, ts: float, window: float
    ) -> tuple[int, int]:
        """Note that ``actor`` used ``device`` at ``ts``; distinct accounts and org units in ``window``."""
        ...

    def peer_add(self, group: str, member: str, records: int, unexplained: int) -> None:
        """Add today's clear-text records (and the unexplained part) of ``member`` to a peer group."""
        ...

    def containment_add(
        self, actor: str, member: str, ts: float, window: float
    ) -> tuple[bool, dict[str, float]]:
        """Note that ``actor`` contained ``member`` (``p:<id>`` or ``o:<id>``) at ``ts``, unless it is
        in the window already (its first time is kept); forget what is older than ``window``. Whether it
        was added, and the window's members with their times, this one included. Atomic, so that
        containment actions sent to several workers at once are all counted."""
        ...

    def peer_stats(self, group: str, member: str) -> tuple[int, float, float]:
        """Number of other members of ``group`` and their mean records and mean unexplained records."""
        ...


_STRIPES = 64
#: Longest a decision waits for another worker's decision on the same account, and how long a held
#: account stays held if its worker dies mid-decision. Past the wait the decision fails, which the
#: gateway answers with a refusal (risk control fails closed), never with an uncounted serve.
HOLD_WAIT_S = 2.0
HOLD_TTL_MS = 5_000
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class _Stripes:
    """Per-account locks of this process, striped: the threads of one worker take turns."""

    def __init__(self) -> None:
        self.locks = [threading.RLock() for _ in range(_STRIPES)]

    def of(self, actor: str) -> threading.RLock:
        return self.locks[zlib.crc32(actor.encode()) % _STRIPES]


def _touch(
    registry: dict[str, list[Any]], actor: str, org: str | None, ts: float, window: float
) -> tuple[int, int]:
    registry[actor] = [org, ts]
    cutoff = ts - window
    stale = [a for a, (_o, t) in registry.items() if t < cutoff]
    for a in stale:
        del registry[a]
    orgs = {o for o, _t in registry.values()}
    return len(registry), len(orgs)


REGISTRY_SWEEP_MIN = 1024
"""The device registry in memory is swept of devices unused within the window once it holds this many
(then whenever it has doubled since)."""


class MemoryState:
    """All state in this process's memory: the embedded default, and the fastest for replay."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.accounts: dict[str, AccountState] = {}
        self.locks: dict[str, str] = {}
        self.statuses: dict[str, str] = {}
        self.device_registry: dict[str, dict[str, list[Any]]] = {}
        self.peers: dict[str, dict[str, list[int]]] = {}
        self.contained: dict[str, dict[str, float]] = {}
        self._stripes = _Stripes()
        self._sweep_at = REGISTRY_SWEEP_MIN

    def hold(self, actor: str) -> AbstractContextManager[object]:
        return self._stripes.of(actor)  # the lock itself: replay decides ~40,000 events a second

    def load(self, actor: str) -> AccountState:
        acc = self.accounts.get(actor)
        if acc is None:
            acc = self.accounts[actor] = AccountState(actor, self.seed)
            acc.status = self.statuses.get(actor, "active")
            reason = self.locks.get(actor)
            acc.locked, acc.lock_reason = reason is not None, reason
        return acc

    def save(self, account: AccountState) -> None:
        return None

    def set_lock(self, actor: str, reason: str | None) -> None:
        acc = self.load(actor)
        if reason is None:
            self.locks.pop(actor, None)
        else:
            self.locks[actor] = reason
        acc.locked, acc.lock_reason = reason is not None, reason

    def set_status(self, actor: str, status: str) -> None:
        self.statuses[actor] = status
        self.load(actor).status = status

    def reset_devices(self, actor: str, ts: float) -> None:
        self.load(actor).forget_devices(ts)  # one copy of each account: no stale save to outlive

    def end_sessions(self, actor: str, ts: float) -> None:
        acc = self.load(actor)
        acc.ended = with_ended(acc.ended, acc.sessions, ts)

    def device_enrolled(self, actor: str, ts: float) -> None:
        acc = self.load(actor)
        acc.enrolled_ts = max(acc.enrolled_ts, ts)

    def device_touch(
        self, device: str, actor: str, org: str | None, ts: float, window: float
    ) -> tuple[int, int]:
        registry = self.device_registry
        if len(registry) >= self._sweep_at:
            # Devices nobody used within the window count no account any more (as Redis expires
            # their keys): without this every device id ever sent stayed, 100,000 ids kept 100,000
            # entries. Swept when the registry has doubled since the last sweep: O(1) a touch.
            cutoff = ts - window
            for stale in [d for d, users in registry.items() if all(t < cutoff for _o, t in users.values())]:
                del registry[stale]
            self._sweep_at = max(REGISTRY_SWEEP_MIN, 2 * len(registry))
        return _touch(registry.setdefault(device, {}), actor, org, ts, window)

    def peer_add(self, group: str, member: str, records: int, unexplained: int) -> None:
        g = self.peers.get(group)
        if g is None:
            g = self.peers[group] = {}
        m = g.get(member)
        if m is None:
            g[member] = [records, unexplained]
        else:
            m[0] += records
            m[1] += unexplained

    def peer_stats(self, group: str, member: str) -> tuple[int, float, float]:
        g = self.peers.get(group, {})
        mine = g.get(member, [0, 0])
        others = len(g) - (1 if member in g else 0)
        if others <= 0:
            return 0, 0.0, 0.0
        total_r = sum(v[0] for v in g.values()) - mine[0]
        total_u = sum(v[1] for v in g.values()) - mine[1]
        return others, total_r / others, total_u / others

    def containment_add(
        self, actor: str, member: str, ts: float, window: float
    ) -> tuple[bool, dict[str, float]]:
        entries = self.contained.setdefault(actor, {})
        cutoff = ts - window
        for old in [m for m, t in entries.items() if t < cutoff]:
            del entries[old]
        added = member not in entries
        if added:
            entries[member] = ts
        return added, dict(entries)

    def forget_peers_before(self, day: int) -> None:
        """Drop peer groups of days before ``day`` (group keys end with ``:<day>``)."""
        for key in [k for k in self.peers if int(k.rsplit(":", 1)[1]) < day]:
            del self.peers[key]


REDIS_TIMEOUT_S = 0.5
"""Longest wait for Redis on a request's path; a risk-state operation takes well under a millisecond."""


class RedisState:
    """State in Redis, shared by every API worker.

    Keys (all under ``prefix``): ``acct:<id>`` the account as JSON, ``lock:<id>`` and ``status:<id>``
    strings, ``reset:<id>`` the time of the last device reset, ``ended:<id>`` the sessions that
    containment ended (JSON, session → time), ``enrolled:<id>`` the time of the last enrolment,
    ``dev:<device>`` a hash actor → ``org|ts``, ``peer:<group>`` a hash of counters,
    ``contain:<id>`` a sorted set of the accounts the actor contained (member ``p:<id>`` or
    ``o:<id>``, score the time). Account, reset, ended, enrolled and device keys expire after
    ``ttl_s`` of silence; locks and statuses never expire. Decisions on one account take turns
    (:meth:`hold`, ``mutex:<id>``), so no worker saves over another's counts; the lock, status, reset,
    ended and enrolled keys are written on their own all the same, so containment is never lost to
    an older copy (a hold that expired under a stalled worker, a tool saving by hand): an account
    loaded with a blob older than its reset forgets its devices again, and one older than a
    revocation still knows the sessions it ended.
    """

    def __init__(
        self, client: Any, prefix: str = "cg:risk:", ttl_s: int = 90 * 86_400, seed: int = 0
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.seed = seed
        self._stripes = _Stripes()
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "cg:risk:") -> RedisState:
        """Connect to ``url`` (e.g. ``redis://127.0.0.1:6379/0``).

        With timeouts of our own, not the client library's defaults (none in some versions): a
        Redis that accepts connections but does not answer must refuse the request (fail closed)
        within a fraction of a second, not hold it, and every request behind it, for ever."""
        import redis

        return cls(
            redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S),
            prefix,
        )

    def _k(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    @contextmanager
    def hold(self, actor: str) -> Iterator[None]:
        # This worker's threads queue on a local lock; workers on a Redis key of their own
        # (``mutex:<id>``, SET NX with an expiry, released only by its holder).
        with self._stripes.of(actor):
            key = self._k("mutex", actor)
            token = os.urandom(8).hex()
            deadline = time.monotonic() + HOLD_WAIT_S
            while not self.r.set(key, token, nx=True, px=HOLD_TTL_MS):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"risk state of {actor} held by another worker")
                time.sleep(0.001)
            try:
                yield
            finally:
                self._release(keys=[key], args=[token])

    def load(self, actor: str) -> AccountState:
        blob, lock, status, reset, ended, enrolled = self.r.mget(
            [
                self._k("acct", actor),
                self._k("lock", actor),
                self._k("status", actor),
                self._k("reset", actor),
                self._k("ended", actor),
                self._k("enrolled", actor),
            ]
        )
        acc = AccountState.from_state(orjson.loads(blob)) if blob else AccountState(actor, self.seed)
        if reset is not None:
            acc.forget_devices(float(reset))  # a no-op once a copy that saw the reset was saved
        acc.locked = lock is not None
        acc.lock_reason = lock.decode() if lock is not None else None
        acc.status = status.decode() if status is not None else "active"
        if ended is not None:
            acc.ended = orjson.loads(ended)
        if enrolled is not None:
            acc.enrolled_ts = float(enrolled)
        return acc

    def save(self, account: AccountState) -> None:
        self.r.set(self._k("acct", account.actor), orjson.dumps(account.to_state()), ex=self.ttl_s)

    def set_lock(self, actor: str, reason: str | None) -> None:
        if reason is None:
            self.r.delete(self._k("lock", actor))
        else:
            self.r.set(self._k("lock", actor), reason)

    def set_status(self, actor: str, status: str) -> None:
        self.r.set(self._k("status", actor), status)

    def reset_devices(self, actor: str, ts: float) -> None:
        # Applied by load, not here: one write, and no race with a worker holding the account now.
        self.r.set(self._k("reset", actor), repr(ts), ex=self.ttl_s)

    def device_enrolled(self, actor: str, ts: float) -> None:
        # Last write wins: enrolments of one account are seconds apart at least.
        self.r.set(self._k("enrolled", actor), repr(ts), ex=self.ttl_s)

    def end_sessions(self, actor: str, ts: float) -> None:
        key = self._k("ended", actor)
        known = list(self.load(actor).sessions)

        def add(pipe: Any) -> None:
            # Watched: two officers ending sessions of one account at once both count.
            raw = pipe.get(key)
            ended = with_ended(orjson.loads(raw) if raw is not None else {}, known, ts)
            pipe.multi()
            pipe.set(key, orjson.dumps(ended), ex=self.ttl_s)

        self.r.transaction(add, key)

    def device_touch(
        self, device: str, actor: str, org: str | None, ts: float, window: float
    ) -> tuple[int, int]:
        key = self._k("dev", device)
        pipe = self.r.pipeline()
        pipe.hset(key, actor, f"{org or ''}|{ts}")
        pipe.expire(key, int(window) + 3600)
        pipe.hgetall(key)
        raw = pipe.execute()[-1]
        registry: dict[str, list[Any]] = {}
        for a, v in raw.items():
            o, t = v.decode().rsplit("|", 1)
            registry[a.decode()] = [o or None, float(t)]
        count, orgs = _touch(registry, actor, org, ts, window)
        stale = [a for a in raw if a.decode() not in registry]
        if stale:
            self.r.hdel(key, *stale)
        return count, orgs

    def peer_add(self, group: str, member: str, records: int, unexplained: int) -> None:
        key = self._k("peer", group)
        pipe = self.r.pipeline()
        pipe.hincrby(key, f"r:{member}", records)
        pipe.hincrby(key, f"u:{member}", unexplained)
        pipe.expire(key, 3 * 86_400)
        pipe.execute()

    def containment_add(
        self, actor: str, member: str, ts: float, window: float
    ) -> tuple[bool, dict[str, float]]:
        # One MULTI/EXEC: workers adding at the same instant each see the others' members, so a burst
        # sent in parallel is counted in full (an account blob, last write wins, would lose some).
        key = self._k("contain", actor)
        pipe = self.r.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", f"({ts - window!r}")
        pipe.zadd(key, {member: ts}, nx=True)
        pipe.zrange(key, 0, -1, withscores=True)
        pipe.expire(key, int(window) + 3600)
        _, added, entries, _ = pipe.execute()
        return bool(added), {m.decode(): float(t) for m, t in entries}

    def peer_stats(self, group: str, member: str) -> tuple[int, float, float]:
        raw = self.r.hgetall(self._k("peer", group))
        rec: dict[str, int] = {}
        une: dict[str, int] = {}
        for k, v in raw.items():
            kind, who = k.decode().split(":", 1)
            (rec if kind == "r" else une)[who] = int(v)
        others = len(rec) - (1 if member in rec else 0)
        if others <= 0:
            return 0, 0.0, 0.0
        return (
            others,
            (sum(rec.values()) - rec.get(member, 0)) / others,
            (sum(une.values()) - une.get(member, 0)) / others,
        )
