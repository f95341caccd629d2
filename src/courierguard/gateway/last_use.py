"""When each session was last used, written off the request path (for the idle timeout).

A request that finds its session's last use a minute old or more notes the time here and goes on;
one background thread writes every noted session in a single transaction about once a second. The
event loop never waits for the database's write lock: on SQLite a 5,000-waybill ingest holds it for
a third of a second, and a write on the loop would stall every request behind it.

The times noted and not yet written count as well when this process checks a session's idleness
(:meth:`LastUse.of`). Another worker reads what is written, at most a second behind: a session
would be refused early only if it were used at the very end of its idle time on one worker and
within that second on another. A write that fails is kept and tried again with the next one; if
writes keep failing, sessions look idle and are refused (closed, not open). ``last_seen`` is only
ever moved forward.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import Engine, and_, bindparam, update

from courierguard.db.tables import sessions

log = logging.getLogger("courierguard.sessions")

WRITE_EVERY_S = 1.0
"""Seconds between writes while sessions are in use: uses within one second share a transaction."""

_FORWARD = (
    update(sessions)
    .where(
        and_(
            sessions.c.id == bindparam("sid"),
            sessions.c.tenant == bindparam("t"),
            sessions.c.last_seen < bindparam("seen"),
        )
    )
    .values(last_seen=bindparam("seen"))
)


class LastUse:
    """Last-use times of one tenant's sessions, noted by requests and written by a background thread."""

    def __init__(self, engine: Engine, tenant: str) -> None:
        self.engine = engine
        self.tenant = tenant
        self._noted: dict[str, datetime] = {}
        # Taken from _noted by a write not yet committed: they still count (see of()).
        self._writing: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def of(self, session_id: str, stored: datetime | None) -> datetime | None:
        """The session's last use: ``stored`` (read with the session), or a later one noted here,
        written or not: a use taken for a write still in flight counts until it is committed, or
        a request in that window read the older stored time and was refused as idle."""
        latest = stored
        for noted in (self._noted.get(session_id), self._writing.get(session_id)):
            if noted is not None and (latest is None or noted > latest):
                latest = noted
        return latest

    def note(self, session_id: str, at: datetime) -> None:
        """Record a use of the session at ``at``; written within about a second."""
        with self._lock:
            if self._closed:  # shutting down: a use not written only makes the session look idler
                return
            noted = self._noted.get(session_id)
            if noted is None or at > noted:
                self._noted[session_id] = at
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="courierguard-last-use", daemon=True)
                self._thread.start()
        self._wake.set()

    def flush(self) -> None:
        """Write every noted use now, in one transaction (the thread does this about once a second)."""
        with self._lock:
            noted, self._noted = self._noted, {}
            self._writing = noted
        if not noted:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    _FORWARD, [{"sid": sid, "t": self.tenant, "seen": at} for sid, at in noted.items()]
                )
        except Exception:
            with self._lock:  # kept for the next write; a later use noted meanwhile wins
                for sid, at in noted.items():
                    if sid not in self._noted or self._noted[sid] < at:
                        self._noted[sid] = at
            raise
        finally:
            with self._lock:
                self._writing = {}

    def close(self) -> None:
        """Write what is noted and stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        # close() sets _stop before _wake: whichever of the checks below runs after it sees _stop,
        # so the thread never waits again on a _wake that close() already set and this cleared.
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            # Let the second's uses gather, then write them together.
            self._stop.wait(WRITE_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() writes what is noted
            try:
                self.flush()
            except Exception as exc:  # kept and retried; never the session ids in the message
                log.error("last use of sessions not written (retried): %s", exc.__class__.__name__)
                self._wake.set()
