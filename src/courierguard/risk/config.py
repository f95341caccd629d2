"""Risk engine thresholds, budgets and weights, with defaults and a loader for YAML, TOML or JSON.

Every number the engine compares against lives here, so a company can tune the engine to its own
operations without touching code. ``docs/risk.md`` explains each one.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from courierguard.errors import ConfigError


class RoleBudget(BaseModel):
    """What one person in a role may do in a day before the engine steps in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unexplained_reveals_per_day: Annotated[
        int, Field(ge=0, description="Clear-text records a day not explained by a task; above it: deny.")
    ] = 12
    reveals_per_hour: Annotated[
        int, Field(ge=1, description="Clear-text records an hour, explained or not; above it: deny.")
    ] = 400
    revealed_per_hour: Annotated[
        int,
        Field(
            ge=1,
            description="Waybills revealed an hour, explained by a task or not; above it: throttle, then the ladder.",
        ),
    ] = 60
    revealed_per_day: Annotated[
        int,
        Field(
            ge=1,
            description="Waybills revealed a day, raised to peer_ratio x the peers' mean; above it: the ladder.",
        ),
    ] = 150
    tasks_per_day: Annotated[
        int,
        Field(
            ge=1,
            description="Tasks (assignments, cases) handed to the account a day; above it: an alert.",
        ),
    ] = 1000
    exports_per_day: Annotated[
        int, Field(ge=0, description="Bulk export requests a day; above it: deny.")
    ] = 0
    requests_per_minute: Annotated[int, Field(ge=1, description="Requests a minute; above it: throttle.")] = (
        120
    )
    masked_rows_per_hour: Annotated[
        int,
        Field(
            ge=1,
            description="Masked rows (lists, searches, views no task explains) an hour; above it: throttle.",
        ),
    ] = 400
    masked_rows_per_day: Annotated[
        int,
        Field(
            ge=1, description="Masked rows a day, raised to peer_ratio x the peers' mean; above it: throttle."
        ),
    ] = 1000
    phone_probes_per_hour: Annotated[
        int,
        Field(
            ge=1,
            description="Searches by phone that miss or that no task follows up, an hour; above: throttle.",
        ),
    ] = 12
    phone_probes_per_day: Annotated[
        int, Field(ge=1, description="The same probes a day; above it: throttle.")
    ] = 40


# Masked budgets: the simulator's normal staff (400 x 28 days, seed 1) with a margin of about 1.5.
# Measured maxima per employee-day / sliding hour: couriers 613 (1,346 on festival days, left to the
# peers' raise) / 560 (the morning scan of every parcel out for delivery), clerks 485 / 134, managers
# 419 / 300 (a list naming no rows counts as one page of 50), agents 88 / 14; hub operators see
# routing data only (0). Phone probes: agents search by phone 14 an hour and 88 a day at most, and
# follow every hit up in its ticket; a budget of 12 / 40 leaves room for real customers' wrong numbers.
#
# Reveal budgets (waybills revealed, explained by a task or not), measured the same way (normal staff,
# 400 x 28 and 300 x 21, seed 1), max per employee-day outside festivals (festival days) / sliding
# hour: couriers 80 (164, left to the peers' raise) / 26, agents 43 (71) / 11, hub operators 9 (15)
# / 6, clerks 3 / 3, officers 2 / 2. Couriers 120 / 40, agents 110 / 18, hub operators 25 / 10: an
# agent centre or a hub may have fewer than peer_min_members colleagues at work, so their day covers
# the festival maximum itself. Roles that reveal almost nothing keep a floor near their unexplained
# budget. Tasks a day (waybills assigned to a courier, cases opened for an agent; 300 x 21): couriers
# 286 outside festivals (932 with covering on Double 11, left to the peers' raise), agents 53 (100).
_DEFAULT_BUDGETS: dict[str, RoleBudget] = {
    "courier": RoleBudget(
        unexplained_reveals_per_day=12,
        revealed_per_hour=40,
        revealed_per_day=120,
        tasks_per_day=430,
        masked_rows_per_hour=800,
        masked_rows_per_day=1000,
    ),
    "outlet_clerk": RoleBudget(
        unexplained_reveals_per_day=40,
        revealed_per_hour=20,
        revealed_per_day=60,
        exports_per_day=2,
        masked_rows_per_hour=200,
        masked_rows_per_day=700,
    ),
    "outlet_manager": RoleBudget(
        unexplained_reveals_per_day=30,
        revealed_per_hour=20,
        revealed_per_day=45,
        exports_per_day=3,
        masked_rows_per_hour=450,
        masked_rows_per_day=600,
    ),
    "hub_operator": RoleBudget(
        unexplained_reveals_per_day=10,
        revealed_per_hour=10,
        revealed_per_day=25,
        masked_rows_per_hour=100,
        masked_rows_per_day=300,
    ),
    "customer_service": RoleBudget(
        unexplained_reveals_per_day=5,
        revealed_per_hour=18,
        revealed_per_day=110,
        tasks_per_day=80,
        masked_rows_per_hour=30,
        masked_rows_per_day=150,
    ),
    "security_officer": RoleBudget(
        unexplained_reveals_per_day=200,
        revealed_per_hour=100,
        revealed_per_day=300,
        exports_per_day=5,
        masked_rows_per_hour=2000,
        masked_rows_per_day=10_000,
    ),
    "auditor": RoleBudget(
        unexplained_reveals_per_day=50,
        revealed_per_hour=30,
        revealed_per_day=75,
        exports_per_day=5,
        masked_rows_per_hour=2000,
        masked_rows_per_day=10_000,
    ),
    "admin": RoleBudget(
        unexplained_reveals_per_day=5,
        revealed_per_hour=5,
        revealed_per_day=8,
        masked_rows_per_hour=100,
        masked_rows_per_day=300,
    ),
    "service": RoleBudget(
        unexplained_reveals_per_day=1_000_000,
        reveals_per_hour=1_000_000,
        revealed_per_hour=1_000_000,
        revealed_per_day=1_000_000,
        tasks_per_day=1_000_000,
        exports_per_day=1_000_000,
        requests_per_minute=1_000_000,
        masked_rows_per_hour=1_000_000,
        masked_rows_per_day=1_000_000,
        phone_probes_per_hour=1_000_000,
        phone_probes_per_day=1_000_000,
    ),
}


class RiskConfig(BaseModel):
    """All tunables of the risk engine. Unknown keys in a file are an error (catches typos)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    budgets: dict[str, RoleBudget] = Field(default_factory=lambda: dict(_DEFAULT_BUDGETS))
    default_budget: RoleBudget = RoleBudget()

    # Warm-up: an account's own baselines speak only after this much history.
    warmup_days: Annotated[int, Field(ge=0)] = 2
    warmup_events: Annotated[int, Field(ge=0)] = 30

    # Identity signals (is this still the account's owner?).
    # /16: mobile carriers hand a courier a new address from a large block at every session.
    network_prefix_v4: Annotated[int, Field(ge=8, le=32)] = 16
    place_cell_degrees: Annotated[float, Field(gt=0)] = 0.5
    concurrent_window_s: Annotated[float, Field(gt=0)] = 600.0
    impossible_speed_kmh: Annotated[float, Field(gt=0)] = 300.0
    impossible_min_km: Annotated[float, Field(ge=0)] = 80.0
    off_shift_share: Annotated[
        float, Field(ge=0, le=1, description="Hour share under which it is off-shift.")
    ] = 0.01
    shared_device_accounts: Annotated[int, Field(ge=2)] = 3
    shared_device_org_units: Annotated[int, Field(ge=1)] = 2
    shared_window_s: Annotated[float, Field(gt=0)] = 86_400.0
    devices_per_day: Annotated[
        int,
        Field(ge=1, description="Distinct device ids one account may use in a day; beyond, refused."),
    ] = 16
    dormant_days: Annotated[float, Field(gt=0, description="Silence after which a return is suspicious.")] = (
        6.0
    )

    # Points each identity signal adds to a session's doubt (0-1 scale; >= step_up_doubt asks a factor).
    doubt_new_device: float = 0.5
    doubt_new_network: float = 0.25
    doubt_new_place: float = 0.25
    doubt_off_shift: float = 0.2
    doubt_no_location: float = 0.2
    doubt_impossible_travel: float = 0.6
    doubt_concurrent_devices: float = 0.6
    doubt_concurrent_sessions: float = 0.6
    doubt_shared_device: float = 0.6
    doubt_dormant_account: float = 0.5
    step_up_doubt: float = 0.5
    device_trust_days: Annotated[
        int, Field(ge=1, description="Distinct days of clean use after which an unbound device is trusted.")
    ] = 2
    repeat_step_up: Annotated[
        bool, Field(description="Repeat step_up on every event of a session until auth.step_up clears it.")
    ] = True

    # Harvest signals (is the account used for volume no task explains?).
    task_stale_hours: Annotated[
        float,
        Field(
            gt=0,
            description="Hours after a waybill entered its status (resource.status_ts) past which its "
            "assignee's pickup or delivery task no longer explains a reveal.",
        ),
    ] = 48.0
    lock_unexplained_with_doubt: Annotated[
        int, Field(ge=1, description="Unexplained records in a doubted session that lock the account.")
    ] = 4
    unexplained_burst: Annotated[
        int, Field(ge=1, description="Unexplained records in burst_window_s: deny.")
    ] = 8
    burst_window_s: Annotated[float, Field(gt=0)] = 900.0
    peer_ratio: Annotated[float, Field(gt=1, description="Records today vs peers' mean that deny.")] = 4.0
    peer_floor: Annotated[
        int, Field(ge=0, description="Records today below which peers are not compared.")
    ] = 150
    peer_min_members: Annotated[int, Field(ge=1)] = 3
    enumeration_gap: Annotated[int, Field(ge=1, description="Largest step between 'sequential' numbers.")] = 3
    enumeration_hits: Annotated[
        int, Field(ge=2, description="Sequential hits among recent lookups that lock.")
    ] = 6
    enumeration_memory: Annotated[int, Field(ge=4)] = 16
    denial_window_s: Annotated[float, Field(gt=0)] = 600.0
    denial_burst: Annotated[int, Field(ge=2, description="Denials in denial_window_s: deny.")] = 10
    denial_lock: Annotated[int, Field(ge=2, description="Denials in denial_window_s: lock.")] = 30
    strikes_to_lock: Annotated[
        int, Field(ge=1, description="Engine denials in a day that lock the account.")
    ] = 25
    export_lock_over: Annotated[int, Field(ge=1, description="Exports over budget in a day that lock.")] = 3

    # Masked reads and phone probing (is masked data, or the phone index, used for volume?). Both
    # climb one ladder by how far over their budget they are: over it, throttle; over
    # volume_step_up_ratio x it, step-up (throttle once the session passed one); over
    # volume_lock_ratio x it, or over it at all in a session in doubt, lock.
    masked_rows_without_ids: Annotated[
        int, Field(ge=1, description="Rows a list or search naming no result_ids counts (one page).")
    ] = 50
    masked_peer_floor: Annotated[
        int, Field(ge=0, description="Masked rows today below which peers are not compared.")
    ] = 700
    masked_peer_step: Annotated[
        int, Field(ge=1, description="Masked rows an account gathers before adding them to its peer group.")
    ] = 25
    volume_step_up_ratio: Annotated[
        float, Field(gt=1, description="Times over a masked or probe budget that ask a step-up.")
    ] = 2.0
    volume_lock_ratio: Annotated[
        float, Field(gt=1, description="Times over a masked or probe budget that lock.")
    ] = 4.0
    probe_resolve_s: Annotated[
        float, Field(gt=0, description="Seconds a phone-search hit has to be followed up by a task.")
    ] = 600.0

    # Containment by one person (is an officer or admin account disabling the people who would
    # respond?). Holds, suspensions, revoked sessions and device resets are single-person actions so
    # that incident response is fast; so one rented or hijacked officer account could disable every
    # other officer in turn. Distinct accounts contained by one actor in a sliding window are weighed:
    # an ordinary account 1, a privileged one (admin, security_officer, auditor: the responders)
    # containment_privileged_weight. The values: the simulator's normal staff contain nobody (only
    # departures, which are offboarding: an ordinary account's departure does not count), and a real
    # incident is one outlet, about 13 people. So 2 privileged accounts (or 8 ordinary) in an hour
    # only alert, which costs a colleague a glance; 3 privileged (or 12 ordinary) ask the session for
    # a second factor unless it passed one within the window, so an officer working an outlet's
    # incident from a stepped-up session is never stopped; a 4th privileged account in the hour is
    # refused even so: another officer makes it (separation of duties, as for giving one back).
    containment_window_s: Annotated[
        float, Field(gt=0, description="Sliding window over which one actor's containment actions add up.")
    ] = 3600.0
    containment_privileged_weight: Annotated[
        float, Field(ge=1, description="Weight of a privileged account contained (an ordinary one weighs 1).")
    ] = 4.0
    containment_alert: Annotated[
        float, Field(gt=0, description="Weighted accounts contained in the window that raise an alert.")
    ] = 8.0
    containment_step_up: Annotated[
        float,
        Field(
            gt=0,
            description="Weighted accounts contained in the window that ask a step-up (none within the window).",
        ),
    ] = 12.0
    containment_privileged_max: Annotated[
        int, Field(ge=0, description="Privileged accounts one actor may contain in the window; beyond: deny.")
    ] = 3

    @classmethod
    def load(cls, path: str | Path) -> RiskConfig:
        """Read a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file; missing keys keep their defaults.

        ``budgets`` given in the file are merged over the default per-role budgets.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            data: Any
            if p.suffix in (".yaml", ".yml"):
                data = yaml.safe_load(text) or {}
            elif p.suffix == ".toml":
                data = tomllib.loads(text)
            elif p.suffix == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(f"risk config {p.name}: use .yaml, .toml or .json")
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"risk config {p.name}: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"risk config {p.name}: top level must be a mapping")
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> RiskConfig:
        """Build from plain data, merging ``budgets`` over the defaults."""
        merged = dict(data)
        if "budgets" in merged:
            budgets: dict[str, Any] = {k: v.model_dump() for k, v in _DEFAULT_BUDGETS.items()}
            for role, values in dict(merged["budgets"]).items():
                budgets[role] = {**budgets.get(role, {}), **dict(values)}
            merged["budgets"] = budgets
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "config"
            raise ConfigError(f"risk config {where}: {first['msg']}") from None

    def budget(self, role: str | None) -> RoleBudget:
        """The budget of ``role`` (the default budget when the role is absent or unknown)."""
        if role is None:
            return self.default_budget
        return self.budgets.get(role, self.default_budget)
