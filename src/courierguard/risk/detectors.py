"""Small online detectors in the river style: ``learn_one`` updates, ``score_one`` only reads.

Each detector scores in [0, 1] (high means anomalous) and returns 0 during its warm-up. They are
plain objects with a ``to_state``/``from_state`` pair, so the same instance can live in process memory
or be serialised to Redis between requests. Randomness, where there is any, comes from a private
``random.Random(seed)``. One contract suite (``tests/unit/risk/test_detectors.py``) runs on every class.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar


class Detector(ABC):
    """Base class: an online anomaly detector over one small feature mapping."""

    #: Contract opt-outs: properties that do not apply to this detector (see the contract suite).
    order_independent: ClassVar[bool] = True

    @abstractmethod
    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update the detector with one observation."""

    @abstractmethod
    def score_one(self, x: Mapping[str, float]) -> float:
        """Anomaly score of ``x`` in [0, 1]; never changes the detector."""

    @abstractmethod
    def to_state(self) -> dict[str, Any]:
        """Plain JSON-ready data from which :meth:`from_state` rebuilds an equal detector."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Detector:
        """Rebuild a detector from :meth:`to_state` output."""


class HourProfile(Detector):
    """How unusual an hour of day is for one person, learned from the hours they work.

    ``x = {"hour": h}`` with ``h`` in [0, 24) local time. The score is 1 when the share of the
    person's history within ``±spread`` hours of ``h`` is below ``rare_share``, falling linearly to 0
    at twice that share; 0 until ``warmup`` observations. Counts decay by ``decay`` per observation
    so that a changed shift is learned within a few weeks.

    >>> p = HourProfile(warmup=10)
    >>> for _ in range(50):
    ...     p.learn_one({"hour": 9.5})
    >>> p.score_one({"hour": 10.2}), p.score_one({"hour": 3.0})
    (0.0, 1.0)
    """

    def __init__(
        self,
        *,
        warmup: int = 30,
        spread: int = 1,
        rare_share: float = 0.01,
        decay: float = 0.9995,
        seed: int = 0,
    ) -> None:
        self.warmup = warmup
        self.spread = spread
        self.rare_share = rare_share
        self.decay = decay
        self.seed = seed
        self.counts = [0.0] * 24
        self.total = 0.0
        self.seen = 0
        self.weight = 1.0

    # Decay is applied lazily through a growing weight for new observations: multiplying all 24
    # buckets on every event would cost more than the rest of the engine's hot path.
    def learn_one(self, x: Mapping[str, float]) -> None:
        h = int(x["hour"]) % 24
        self.seen += 1
        self.weight /= self.decay
        if self.weight > 1e12:  # renormalise long before the floats lose precision
            self.counts = [c / self.weight for c in self.counts]
            self.total /= self.weight
            self.weight = 1.0
        self.counts[h] += self.weight
        self.total += self.weight

    def score_one(self, x: Mapping[str, float]) -> float:
        if self.seen < self.warmup or self.total <= 0:
            return 0.0
        h = int(x["hour"]) % 24
        near = 0.0
        for d in range(-self.spread, self.spread + 1):
            near += self.counts[(h + d) % 24]
        share = near / self.total
        if share <= self.rare_share:
            return 1.0
        if share >= 2 * self.rare_share:
            return 0.0
        return (2 * self.rare_share - share) / self.rare_share

    def to_state(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup, "spread": self.spread, "rare_share": self.rare_share, "decay": self.decay,
            "seed": self.seed, "counts": self.counts, "total": self.total, "seen": self.seen,
            "weight": self.weight,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HourProfile:
        p = cls(
            warmup=state["warmup"], spread=state["spread"], rare_share=state["rare_share"],
            decay=state["decay"], seed=state["seed"],
        )  # fmt: skip
        p.counts = list(state["counts"])
        p.total = state["total"]
        p.seen = state["seen"]
        p.weight = state["weight"]
        return p


class RunningZ(Detector):
    """Welford mean and variance of one value; the score grows with the z-score above the mean.

    ``x = {"value": v}``. Score ``1 - exp(-(z - z0))`` for ``z > z0`` (one-sided: only more than usual
    is suspicious), 0 during ``warmup``. ``min_std`` keeps a person who always did exactly the same
    from scoring 1 on the slightest change.

    >>> z = RunningZ(warmup=3)
    >>> for v in (10, 12, 11, 9, 10):
    ...     z.learn_one({"value": v})
    >>> round(z.mean, 2), z.score_one({"value": 11}), z.score_one({"value": 40}) > 0.99
    (10.4, 0.0, True)
    """

    def __init__(self, *, warmup: int = 5, z0: float = 3.0, min_std: float = 1.0, seed: int = 0) -> None:
        self.warmup = warmup
        self.z0 = z0
        self.min_std = min_std
        self.seed = seed
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def learn_one(self, x: Mapping[str, float]) -> None:
        v = float(x["value"])
        self.n += 1
        delta = v - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (v - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def zscore(self, value: float) -> float:
        """Standard score of ``value`` (with the ``min_std`` floor)."""
        return (value - self.mean) / max(self.std, self.min_std)

    def score_one(self, x: Mapping[str, float]) -> float:
        if self.n < self.warmup:
            return 0.0
        z = self.zscore(float(x["value"]))
        return 0.0 if z <= self.z0 else 1.0 - math.exp(-(z - self.z0))

    def merge(self, other: RunningZ) -> RunningZ:
        """The statistics of both streams together (Chan et al.), e.g. two workers' partial states."""
        out = RunningZ(warmup=self.warmup, z0=self.z0, min_std=self.min_std, seed=self.seed)
        n = self.n + other.n
        if n == 0:
            return out
        delta = other.mean - self.mean
        out.n = n
        out.mean = self.mean + delta * other.n / n
        out.m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return out

    def to_state(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "z0": self.z0, "min_std": self.min_std, "seed": self.seed,
                "n": self.n, "mean": self.mean, "m2": self.m2}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningZ:
        z = cls(warmup=state["warmup"], z0=state["z0"], min_std=state["min_std"], seed=state["seed"])
        z.n, z.mean, z.m2 = state["n"], state["mean"], state["m2"]
        return z


class SequenceDetector(Detector):
    """Sequential waybill-number enumeration: how many recent lookups sit next to another one.

    ``x = {"number": n}`` (the digits of a waybill number). Keeps the last ``memory`` numbers; the
    score is the share of them (including ``n``) that lie within ``gap`` of another one but are not
    equal to it. A courier's own round is scattered over the number space; a script walking numbers
    is not. Order matters by design (it is a sliding window), so the order-independence check is
    opted out.

    >>> s = SequenceDetector(memory=8, warmup=4)
    >>> for n in range(1000, 1006):
    ...     s.learn_one({"number": n})
    >>> s.score_one({"number": 1006}), s.score_one({"number": 77})
    (1.0, 0.857...)
    """

    order_independent: ClassVar[bool] = False

    def __init__(self, *, memory: int = 16, gap: int = 3, warmup: int = 4, seed: int = 0) -> None:
        self.memory = memory
        self.gap = gap
        self.warmup = warmup
        self.seed = seed
        self.recent: list[int] = []

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.recent.append(int(x["number"]))
        if len(self.recent) > self.memory:
            del self.recent[0]

    def hits(self, number: int | None = None) -> int:
        """How many of the recent numbers (plus ``number``) have a close, different neighbour."""
        values = self.recent if number is None else [*self.recent[1 - self.memory :], number]
        ordered = sorted(set(values))
        close = 0
        for i, v in enumerate(ordered):
            if (i > 0 and v - ordered[i - 1] <= self.gap) or (
                i + 1 < len(ordered) and ordered[i + 1] - v <= self.gap
            ):
                close += 1
        return close

    def score_one(self, x: Mapping[str, float]) -> float:
        if len(self.recent) < self.warmup:
            return 0.0
        n = int(x["number"])
        values = [*self.recent[1 - self.memory :], n]
        return self.hits(n) / len(values)

    def to_state(self) -> dict[str, Any]:
        return {"memory": self.memory, "gap": self.gap, "warmup": self.warmup, "seed": self.seed,
                "recent": self.recent}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SequenceDetector:
        s = cls(memory=state["memory"], gap=state["gap"], warmup=state["warmup"], seed=state["seed"])
        s.recent = list(state["recent"])
        return s


class PhoneProbes(Detector):
    """Phone-number probing: searches by phone that find nothing, or find parcels no task follows up.

    ``x = {"ts": t, "hits": n, "key0": k, ...}`` is one search by phone at epoch second ``t`` that
    found ``n`` waybills, ``key0`` .. ``key2`` the digits of the first ones (``waybill_number``).
    A *miss* (``n == 0``) is a probe at once: it told the caller that the number is no customer. A
    *hit* is pending for ``resolve_s``: if the account then touches one of its waybills for a task
    (:meth:`resolve_one`, e.g. a view inside the ticket the search was for) it was work; if not, it
    counts as a probe from its own time on, since it linked a phone to parcels and places for
    nothing. A hit that repeats a pending one (the same phone again, a second page) is not counted
    twice. :meth:`count` gives the probes in the last ``window_s``; the score is that count over
    ``4 * limit`` (1 when a run is four times the hourly budget), 0 until ``warmup`` searches.

    The event carries no phone (the gateway searches through a blind index and records results, not
    the number), so probes of one number repeated are counted each time.

    >>> p = PhoneProbes(limit=10)
    >>> for i in range(30):  # 30 numbers in 30 minutes, none of them a customer
    ...     p.learn_one({"ts": 60.0 * i, "hits": 0})
    >>> p.count(1800.0), p.score_one({"ts": 1800.0, "hits": 0})
    (30, 0.775)
    >>> p.learn_one({"ts": 1900.0, "hits": 1, "key0": 77})  # a hit, then opened for its ticket
    >>> p.resolve_one({"key": 77})
    >>> p.learn_one({"ts": 2000.0, "hits": 1, "key0": 78})  # a hit no task follows up
    >>> p.count(2500.0), p.count(2700.0)
    (30, 31)
    """

    order_independent: ClassVar[bool] = False  # a sliding window over time

    def __init__(
        self,
        *,
        window_s: float = 3600.0,
        resolve_s: float = 600.0,
        limit: int = 12,
        memory: int = 64,
        cap: int = 512,
        warmup: int = 1,
        seed: int = 0,
    ) -> None:
        self.window_s = window_s
        self.resolve_s = resolve_s
        self.limit = limit
        self.memory = memory
        self.cap = cap
        self.warmup = warmup
        self.seed = seed
        self.pending: list[list[Any]] = []  # [ts, [keys]] of hits not yet followed up
        self.probes: list[float] = []  # times of probes inside the window, oldest first
        self.total = 0  # probes ever counted (the engine keeps its daily count from the increase)
        self.seen = 0  # searches learned

    def learn_one(self, x: Mapping[str, float]) -> None:
        ts = float(x["ts"])
        self.seen += 1
        self._expire(ts)
        if x["hits"] <= 0:
            self._probe(ts)
            return
        keys = [int(x[k]) for k in ("key0", "key1", "key2") if k in x]
        if keys and any(k in entry[1] for entry in self.pending for k in keys):
            return  # the same phone again (or its next page): one probe at most
        self.pending.append([ts, keys])
        if len(self.pending) > self.memory:
            self._probe(self.pending.pop(0)[0])  # never followed up within memory: a probe

    def resolve_one(self, x: Mapping[str, float]) -> None:
        """The account touched waybill ``x["key"]`` for a task: a pending hit on it was work."""
        key = int(x["key"])
        self.pending = [entry for entry in self.pending if key not in entry[1]]

    def count(self, ts: float) -> int:
        """Probes in the window ending at ``ts``, counting hits left without a task by then."""
        cutoff = ts - self.window_s
        late = ts - self.resolve_s
        n = sum(1 for t in self.probes if t >= cutoff)
        return n + sum(1 for entry in self.pending if cutoff <= entry[0] < late)

    def score_one(self, x: Mapping[str, float]) -> float:
        if self.seen < self.warmup:
            return 0.0
        n = self.count(float(x["ts"])) + (1 if x["hits"] <= 0 else 0)
        return min(1.0, n / (4.0 * self.limit))

    def _expire(self, ts: float) -> None:
        late = ts - self.resolve_s
        while self.pending and self.pending[0][0] < late:
            self._probe(self.pending.pop(0)[0])
        cutoff = ts - self.window_s
        probes = self.probes
        drop = 0
        while drop < len(probes) and probes[drop] < cutoff:
            drop += 1
        if drop:
            del probes[:drop]

    def _probe(self, ts: float) -> None:
        self.total += 1
        self.probes.append(ts)
        if len(self.probes) > self.cap:  # a flood: the count saturates, the state stays small
            del self.probes[0]

    def to_state(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "resolve_s": self.resolve_s, "limit": self.limit,
                "memory": self.memory, "cap": self.cap, "warmup": self.warmup, "seed": self.seed,
                "pending": self.pending, "probes": self.probes, "total": self.total, "seen": self.seen}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PhoneProbes:
        p = cls(
            window_s=state["window_s"], resolve_s=state["resolve_s"], limit=state["limit"],
            memory=state["memory"], cap=state["cap"], warmup=state["warmup"], seed=state["seed"],
        )  # fmt: skip
        p.pending = [[entry[0], list(entry[1])] for entry in state["pending"]]
        p.probes = list(state["probes"])
        p.total, p.seen = state["total"], state["seen"]
        return p


class ReservoirQuantile(Detector):
    """A seeded reservoir sample of one value (e.g. a role's daily record counts) and its quantiles.

    ``x = {"value": v}``. The score is the share of the sample strictly below ``v`` mapped so that
    values above the ``q`` quantile score from 0 up to 1 at the sample maximum and beyond. Used to
    learn what is normal for a whole role when the configured budget is too tight for a company.

    >>> r = ReservoirQuantile(size=50, warmup=5, seed=1)
    >>> for v in range(100):
    ...     r.learn_one({"value": v})
    >>> r.score_one({"value": 10}), r.score_one({"value": 1000})
    (0.0, 1.0)
    """

    order_independent: ClassVar[bool] = False  # a reservoir keeps a different sample in another order

    def __init__(self, *, size: int = 256, q: float = 0.99, warmup: int = 20, seed: int = 0) -> None:
        self.size = size
        self.q = q
        self.warmup = warmup
        self.seed = seed
        self.sample: list[float] = []
        self.n = 0
        self._rng = random.Random(seed)

    def learn_one(self, x: Mapping[str, float]) -> None:
        v = float(x["value"])
        self.n += 1
        if len(self.sample) < self.size:
            self.sample.append(v)
        else:
            j = self._rng.randrange(self.n)
            if j < self.size:
                self.sample[j] = v

    def quantile(self, q: float | None = None) -> float:
        """The ``q`` quantile of the sample (0 when empty)."""
        if not self.sample:
            return 0.0
        ordered = sorted(self.sample)
        k = min(len(ordered) - 1, int((self.q if q is None else q) * len(ordered)))
        return ordered[k]

    def score_one(self, x: Mapping[str, float]) -> float:
        if self.n < self.warmup:
            return 0.0
        v = float(x["value"])
        hi = self.quantile()
        top = max(self.sample)
        if v <= hi:
            return 0.0
        if v >= top or top <= hi:
            return 1.0
        return (v - hi) / (top - hi)

    def to_state(self) -> dict[str, Any]:
        return {"size": self.size, "q": self.q, "warmup": self.warmup, "seed": self.seed,
                "sample": self.sample, "n": self.n, "rng": _rng_state(self._rng)}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReservoirQuantile:
        r = cls(size=state["size"], q=state["q"], warmup=state["warmup"], seed=state["seed"])
        r.sample = list(state["sample"])
        r.n = state["n"]
        r._rng.setstate(_rng_unstate(state["rng"]))
        return r


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_unstate(state: list[Any]) -> tuple[Any, ...]:
    return (state[0], tuple(state[1]), state[2])
