"""The identity provider's signing keys (JWKS), kept fresh off the request path.

A request never waits for the identity provider. Keys are fetched when the set is created, then
every ``refresh_s`` by a background thread, and at once (at most every ``min_refetch_s``) when a
token names a key id the set lacks: that token is refused, and the next one signed with the new
key, a moment later, is accepted. Identity providers publish a new key before they sign with it,
so in practice no valid token meets an unknown key id.

What this fixes, compared with PyJWT's ``PyJWKClient`` on the request path:

* a key the provider has removed stops verifying within ``refresh_s`` (``PyJWKClient`` with
  ``cache_keys`` kept every key id it had seen until the process restarted);
* a token with a made-up key id costs a dictionary lookup, never a blocking fetch on the event loop
  (one such token could stall every request of a worker for the fetch's 30 s timeout);
* a fetch is bounded in time (``timeout_s``) and size (``max_bytes``), and a failed one keeps the
  last good set, up to ``max_stale_s``, after which every token is refused (fail closed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
"""Signature algorithms accepted from an identity provider: asymmetric only."""

Fetch = Callable[[], bytes]


class JwksKeySet:
    """Signing keys by key id, refreshed in the background; :meth:`key` never does I/O."""

    def __init__(
        self,
        url: str,
        *,
        refresh_s: float = 300.0,
        min_refetch_s: float = 30.0,
        max_stale_s: float = 3600.0,
        timeout_s: float = 3.0,
        max_bytes: int = 1 << 20,
        fetch: Fetch | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self.url = url
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._max_stale_s = max_stale_s
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._fetch = fetch or self._http_fetch
        self._now = monotonic
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self.refresh()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="jwks-refresh", daemon=True)
            self._thread.start()

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` names, or None (and a refresh soon) if the current set lacks it."""
        keys = self._current()
        found = keys.get(kid)
        if found is None:
            self._wanted.set()
        return found

    def holds(self, kid: str) -> bool:
        """Whether ``kid`` is still in the current set (for tokens verified earlier)."""
        return kid in self._current()

    def _current(self) -> dict[str, jwt.PyJWK]:
        fetched = self._fetched_at
        if fetched is None or self._now() - fetched > self._max_stale_s:
            return {}  # never fetched, or the provider has been unreachable for too long
        return self._keys

    def refresh(self) -> bool:
        """Fetch the set now (the background thread's work; also for start-up and tests)."""
        with self._lock:
            self._attempted_at = self._now()
            try:
                keys = _parse(self._fetch())
            except Exception as exc:  # any failure keeps the last good set: fail closed on age only
                log.warning("JWKS fetch failed (%s); keeping the last good key set", exc.__class__.__name__)
                return False
            self._keys, self._fetched_at = keys, self._now()
            return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait(self._refresh_s)
            if self._stop.is_set():
                return
            attempted = self._attempted_at or 0.0
            pause = self._min_refetch_s - (self._now() - attempted)
            if pause > 0 and self._stop.wait(pause):
                return
            self._wanted.clear()
            self.refresh()

    def _http_fetch(self) -> bytes:
        with (
            httpx.Client(timeout=self._timeout_s, follow_redirects=False) as client,
            client.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise ValueError(f"JWKS larger than {self._max_bytes} bytes")
            return bytes(body)

    def close(self) -> None:
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout_s + 1)


def _parse(body: bytes) -> dict[str, jwt.PyJWK]:
    """Usable signing keys by key id; keys without a kid, of another use or algorithm are skipped."""
    document: Any = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # an unsupported key type: skip it, as PyJWKSet does
        if key.algorithm_name in ALGORITHMS:
            keys[entry["kid"]] = key
    return keys
