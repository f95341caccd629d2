from __future__ import annotations

import itertools
from itertools import islice

from courierguard.sim import SimConfig
from courierguard.sim.intents import intents


def test_intents_follow_the_events() -> None:
    config = SimConfig(employees=25, days=2, seed=8, attack_after_days=1, scenarios=(1,))
    seen = list(intents(config))
    assert seen[0].action == "auth.login" and seen[0].device
    reveals = [i for i in seen if i.action == "waybill.reveal" and i.scenario == 0]
    assert reveals and all(i.waybill and i.fields and i.purpose for i in reveals)
    assert any(i.scenario == 1 for i in seen)
    assert all(a.at <= b.at for a, b in itertools.pairwise(seen))
    assert list(islice(intents(config), 5)) == seen[:5]


def test_tenant_is_written_when_configured() -> None:
    config = SimConfig(employees=25, days=1, seed=8, scenarios=(), tenant="acme")
    first = next(intents(config))
    assert first.event["tenant"] == "acme" and first.event["v"] == 1
