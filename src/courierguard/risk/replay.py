"""Monitor mode: run the live risk engine over a file of Access Event v1 lines, in order.

Writes one Risk Decision v1 line for every event whose action is not ``allow``. Lines that are not
valid events are reported by line number through ``on_bad`` and skipped; the run goes on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from courierguard.risk.engine import ACTION_NAMES, RiskEngine
from courierguard.risk.record import BadEvent, from_dict


@dataclass
class ReplaySummary:
    """What a replay did: counts by action, bad lines, time taken."""

    events: int = 0
    bad_lines: int = 0
    out_of_order: int = 0
    """Events earlier than one before them by more than :data:`DISORDER_TOLERANCE_S` (still decided)."""
    decisions: int = 0
    seconds: float = 0.0
    actions: Counter[str] = field(default_factory=Counter)
    locked_accounts: set[str] = field(default_factory=set)

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def decision_line(event_id: str, ts: str, actor: str, session: str | None, sev: int, score: float,
                  reasons: list[tuple[str, str | None]]) -> bytes:  # fmt: skip
    """One Risk Decision v1 JSON line (with its newline)."""
    out: dict[str, Any] = {"v": 1, "event_id": event_id, "ts": ts, "actor_id": actor}
    if session is not None:
        out["session_id"] = session
    out["action"] = ACTION_NAMES[sev]
    out["score"] = score
    out["reasons"] = [{"code": c, "detail": d} if d else {"code": c} for c, d in reasons]
    return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)


DISORDER_TOLERANCE_S = 300.0
"""Events from several source systems may be a little out of order; beyond this, a line is reported:
the engine's windows assume time order, so one line dated years ahead changes every later decision."""


def replay(
    lines: Iterable[bytes],
    out: IO[bytes],
    engine: RiskEngine,
    *,
    on_bad: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 20_000,
    on_disorder: Callable[[int, str], None] | None = None,
) -> ReplaySummary:
    """Decide on every event of ``lines`` (raw JSON Lines) and write the non-allow decisions to ``out``.

    ``on_bad(line_number, message)`` hears about each invalid line (the message names the property,
    never its value); ``on_progress(bytes_read)`` is called every ``progress_every`` lines;
    ``on_disorder(line_number, message)`` about each event earlier than the latest one before it by
    more than :data:`DISORDER_TOLERANCE_S` (decided all the same: the input's order is the contract).
    """
    summary = ReplaySummary()
    actions = summary.actions
    decide = engine.decide
    loads = orjson.loads
    write = out.write
    seen_bytes = 0
    start = time.perf_counter()
    latest, latest_line = float("-inf"), 0
    for lineno, raw in enumerate(lines, 1):
        seen_bytes += len(raw)
        if on_progress is not None and lineno % progress_every == 0:
            on_progress(seen_bytes)
        if not raw.strip():
            continue
        try:
            rec = from_dict(loads(raw))
        except orjson.JSONDecodeError:
            summary.bad_lines += 1
            if on_bad is not None:
                on_bad(lineno, "not valid JSON")
            continue
        except BadEvent as exc:
            summary.bad_lines += 1
            if on_bad is not None:
                on_bad(lineno, str(exc))
            continue
        summary.events += 1
        if rec.ts < latest - DISORDER_TOLERANCE_S:
            summary.out_of_order += 1
            if on_disorder is not None:
                on_disorder(lineno, f"{latest - rec.ts:,.0f} s earlier than line {latest_line}")
        elif rec.ts > latest:
            latest, latest_line = rec.ts, lineno
        sev, score, reasons = decide(rec)
        if sev:
            summary.decisions += 1
            actions[ACTION_NAMES[sev]] += 1
            if sev == 4:
                summary.locked_accounts.add(rec.actor)
            write(decision_line(rec.event_id, rec.ts_text, rec.actor, rec.session, sev, score, reasons))
    if on_progress is not None:
        on_progress(seen_bytes)
    summary.seconds = time.perf_counter() - start
    actions["allow"] = summary.events - summary.decisions
    return summary
