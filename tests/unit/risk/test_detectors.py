"""One contract suite for every detector (river style): pickling, state round-trip, seeding,
read-only scoring, warm-up, order independence where it applies, AUC >= 0.5 on a rented-account stream."""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Callable

import numpy as np
import pytest

from courierguard.risk.detectors import (
    Detector,
    HourProfile,
    PhoneProbes,
    ReservoirQuantile,
    RunningZ,
    SequenceDetector,
)
from courierguard.risk.engine import RiskEngine
from courierguard.risk.record import from_dict
from courierguard.risk.streams import rented_stream

Sample = dict[str, float]


def _hours(rng: random.Random, n: int) -> list[Sample]:
    return [{"hour": rng.uniform(8, 19)} for _ in range(n)]


def _values(rng: random.Random, n: int) -> list[Sample]:
    return [{"value": rng.gauss(20, 4)} for _ in range(n)]


def _numbers(rng: random.Random, n: int) -> list[Sample]:
    return [{"number": rng.randrange(10**12, 10**13)} for _ in range(n)]


def _tickets(rng: random.Random, n: int) -> list[Sample]:
    # An agent's searches by phone: a hit every 10-20 minutes (followed up in its ticket or not).
    t, out = 0.0, []
    for _ in range(n):
        t += rng.uniform(600, 1200)
        out.append({"ts": t, "hits": 1, "key0": rng.randrange(10**12, 10**13)})
    return out


def _probes(rng: random.Random, n: int) -> list[Sample]:
    # A gang's list of numbers after the day's work: a search a minute, nearly all misses.
    t = 400 * 1200.0
    return [{"ts": t + 60.0 * i, "hits": 0 if rng.random() < 0.8 else 1, "key0": i} for i in range(n)]


# (factory, normal stream, anomalous stream, order independent)
CASES: dict[str, tuple[Callable[[int], Detector], Callable[[random.Random, int], list[Sample]],
                       Callable[[random.Random, int], list[Sample]], bool]] = {
    "hour_profile": (lambda s: HourProfile(seed=s, warmup=20, decay=1.0), _hours,
                     lambda rng, n: [{"hour": rng.uniform(0, 5)} for _ in range(n)], True),
    "hour_profile_decay": (lambda s: HourProfile(seed=s, warmup=20), _hours,
                           lambda rng, n: [{"hour": rng.uniform(0, 5)} for _ in range(n)], False),
    "running_z": (lambda s: RunningZ(seed=s), _values,
                  lambda rng, n: [{"value": rng.gauss(80, 10)} for _ in range(n)], True),
    "sequence": (lambda s: SequenceDetector(seed=s), _numbers,
                 lambda rng, n: [{"number": 7 * 10**12 + i} for i in range(n)], False),
    "reservoir": (lambda s: ReservoirQuantile(seed=s, size=64), _values,
                  lambda rng, n: [{"value": rng.gauss(80, 10)} for _ in range(n)], False),
    "phone_probes": (lambda s: PhoneProbes(seed=s), _tickets, _probes, False),
}  # fmt: skip


def _auc(normal: list[float], anomalous: list[float]) -> float:
    scores = np.array(normal + anomalous)
    labels = np.array([0] * len(normal) + [1] * len(anomalous))
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        ranks[scores == value] = ranks[scores == value].mean()
    pos = labels == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


@pytest.fixture(params=sorted(CASES))
def case(
    request: pytest.FixtureRequest,
) -> tuple[str, Callable[[int], Detector], list[Sample], list[Sample], bool]:
    make, normal, anomalous, order_free = CASES[request.param]
    rng = random.Random(42)
    return request.param, make, normal(rng, 300), anomalous(rng, 40), order_free


def test_score_is_zero_during_warmup(case) -> None:  # type: ignore[no-untyped-def]
    _, make, _normal, anomalous, _ = case
    assert make(0).score_one(anomalous[0]) == 0.0


def test_score_in_unit_interval_and_read_only(case) -> None:  # type: ignore[no-untyped-def]
    _, make, normal, anomalous, _ = case
    det = make(0)
    for x in normal:
        det.learn_one(x)
    before = pickle.dumps(det)
    for x in normal[:20] + anomalous:
        assert 0.0 <= det.score_one(x) <= 1.0
    assert pickle.dumps(det) == before, "score_one must not change the detector"


def test_pickle_and_state_round_trip(case) -> None:  # type: ignore[no-untyped-def]
    _, make, normal, anomalous, _ = case
    det = make(3)
    for x in normal:
        det.learn_one(x)
    clones = [pickle.loads(pickle.dumps(det)), type(det).from_state(det.to_state()), copy.deepcopy(det)]
    for other in clones:
        for x in anomalous[:5] + normal[:5]:
            assert other.score_one(x) == det.score_one(x)
        other.learn_one(anomalous[0])
        det2 = type(det).from_state(det.to_state())
        det2.learn_one(anomalous[0])
        assert other.score_one(anomalous[1]) == det2.score_one(anomalous[1])


def test_same_seed_same_scores(case) -> None:  # type: ignore[no-untyped-def]
    _, make, normal, anomalous, _ = case
    a, b = make(11), make(11)
    for x in normal:
        a.learn_one(x)
        b.learn_one(x)
    assert [a.score_one(x) for x in anomalous] == [b.score_one(x) for x in anomalous]


def test_order_independence_where_it_applies(case) -> None:  # type: ignore[no-untyped-def]
    _, make, normal, anomalous, order_free = case
    if not order_free:
        pytest.skip("order matters for this detector by design (sliding window, decay or reservoir)")
    a, b = make(0), make(0)
    for x in normal:
        a.learn_one(x)
    for x in reversed(normal):
        b.learn_one(x)
    for x in anomalous[:10] + normal[:10]:
        assert a.score_one(x) == pytest.approx(b.score_one(x), abs=1e-9)


def test_auc_at_least_half(case) -> None:  # type: ignore[no-untyped-def]
    _, make, normal, anomalous, _ = case
    det = make(0)
    for x in normal[:200]:
        det.learn_one(x)
    auc = _auc([det.score_one(x) for x in normal[200:]], [det.score_one(x) for x in anomalous])
    assert auc >= 0.5


def test_running_z_matches_numpy_and_merges() -> None:
    rng = random.Random(1)
    values = [rng.gauss(5, 2) for _ in range(500)]
    z = RunningZ()
    for i, v in enumerate(values, 1):
        z.learn_one({"value": v})
        if i % 50 == 0:
            assert z.mean == pytest.approx(np.mean(values[:i]))
            assert z.std == pytest.approx(np.std(values[:i], ddof=1))
    left, right = RunningZ(), RunningZ()
    for v in values[:200]:
        left.learn_one({"value": v})
    for v in values[200:]:
        right.learn_one({"value": v})
    merged = left.merge(right)
    assert merged.n == z.n and merged.mean == pytest.approx(z.mean) and merged.std == pytest.approx(z.std)


def test_phone_probes_follow_ups_and_repeats() -> None:
    p = PhoneProbes(resolve_s=600, limit=12)
    p.learn_one({"ts": 0.0, "hits": 2, "key0": 11, "key1": 12})
    p.learn_one({"ts": 30.0, "hits": 2, "key0": 12})  # the same phone's second page: one probe at most
    assert len(p.pending) == 1 and p.count(599.0) == 0  # not late yet
    assert p.count(700.0) == 1  # never followed up within ten minutes: a probe
    p.resolve_one({"key": 12})
    assert p.count(700.0) == 0 and p.total == 0  # opened for its ticket: work, not a probe
    for i in range(600):
        p.learn_one({"ts": 1000.0 + i, "hits": 0})
    assert len(p.probes) == p.cap and p.total == 600  # a flood saturates, the state stays small
    assert p.count(1600.0) == p.cap
    assert p.count(1000.0 + 3600 + 700) == 0  # an hour later the window is empty


def test_engine_auc_on_rented_account_stream() -> None:
    events, attack = rented_stream(seed=3)
    engine = RiskEngine()
    normal, bad = [], []
    for e in events:
        _, score, _ = engine.decide(from_dict(e))
        (bad if e["id"] in attack else normal).append(score)
    assert _auc(normal, bad) >= 0.5


def test_docstring_examples() -> None:
    import doctest

    from courierguard.risk import detectors

    assert doctest.testmod(detectors, optionflags=doctest.ELLIPSIS).failed == 0
