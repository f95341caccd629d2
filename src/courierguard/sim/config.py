"""What a simulation run is asked to do: the size of the company, the period, the seed, the attacks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

SCENARIOS: dict[int, str] = {
    1: "rented_night_fast",
    2: "rented_paced_same_city",
    3: "owner_and_renter_concurrent",
    4: "clerk_outlet_backlog",
    5: "insider_slow_reveals",
    6: "gang_shared_devices",
    7: "waybill_enumeration",
    8: "bulk_export_abuse",
    9: "cs_snooping_without_ticket",
    10: "former_employee_account",
    11: "masked_scrape",
    12: "phone_probing",
    13: "mass_assigned_courier",
    14: "mass_ticketed_agent",
    15: "stolen_phone_after_reset",
    16: "rented_officer_holds_responders",
    17: "restored_assignments",
}
"""Attack scenario ids and their stable names, as written in the truth file."""

ALL_SCENARIOS: tuple[int, ...] = tuple(SCENARIOS)


def default_festival(start: date, days: int) -> tuple[date, ...]:
    """Double 11 (November 11) and the day after, when they fall inside the period."""
    end = start + timedelta(days=days)
    out = []
    for year in {start.year, end.year}:
        for day in (date(year, 11, 11), date(year, 11, 12)):
            if start <= day < end:
                out.append(day)
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulation run. Same config (including ``seed``) gives byte-identical output.

    ``festival`` lists the days at ``festival_factor`` times normal parcel volume; ``None`` picks
    November 11 and 12 when they fall inside the period. Attacks start no earlier than
    ``attack_after_days`` days after ``start``, so an engine can learn baselines first.
    """

    employees: int = 2000
    days: int = 28
    seed: int = 1
    start: date = date(2026, 11, 2)
    scenarios: tuple[int, ...] = ALL_SCENARIOS
    attack_after_days: int = 7
    festival: tuple[date, ...] | None = None
    festival_factor: float = 3.0
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.employees < 20:
            raise ValueError("employees must be at least 20 (one outlet, a hub, customer service)")
        if self.days < 1:
            raise ValueError("days must be at least 1")
        unknown = sorted(set(self.scenarios) - set(SCENARIOS))
        if unknown:
            raise ValueError(f"unknown scenarios: {unknown}; known: {sorted(SCENARIOS)}")
        if self.attack_after_days < 0:
            raise ValueError("attack_after_days must not be negative")

    def festival_days(self) -> tuple[date, ...]:
        """The peak days actually used."""
        if self.festival is None:
            return default_festival(self.start, self.days)
        return self.festival
