"""Row MACs: which entry rows a writer holding the deployment's audit key committed.

Writers of several processes share one log, so a writer takes the rows the others committed into
its tree before numbering its own, and signs heads over them. Someone who can write to the database
but not read the key provider (a DBA) could INSERT a well-formed row at the next index and have the
next writer sign it (the audit review's D5). So every row a writer commits carries

    mac = BLAKE2s-128(key = log key, message = index (u64, big-endian) || leaf hash)

* **The key** never touches the database. The *row key* is HKDF-SHA-256 over the audit signing
  key's private seed, info :data:`KEY_LABEL` (:meth:`~courierguard.vault.signing.Signer.derive_key`):
  whoever may sign heads may vouch for rows and nobody else, there is no new secret to distribute,
  back up or rotate, and a key provider of any kind (file, ``COURIERGUARD_KEYS``, KMS) has it. The
  *log key* is the row key applied to the log's first leaf hash, which every signed head covers and
  no other log shares: a genuine row copied from another log under the same keys (a staging copy)
  does not pass here.
* **The message** is what identifies the entry: its index (a row moved or a MAC copied to another
  index fails) and its leaf hash, which covers the hashed bytes (index, time, kind and the body,
  tenant and actor included).
* **BLAKE2s in keyed mode**, a MAC by design (RFC 7693), not HMAC-SHA-256: both are standard
  library; one row costs about 0.5 µs against about 3 µs for ``hmac.digest``, which mattered to
  ``verify``, where it is one more per-row step beside a 1 µs fetch and a 0.5 µs hash. A 128-bit tag
  as for the vault's AES-GCM: forging one is a 2**-128 guess per try, and each try is a refused row.

Rows written before MACs existed have none. One is acceptable only below the size of a valid signed
head (a head signed with the audit key whose root matches the stored entries): the signature
vouches for it. Above the newest such head every row must carry a valid MAC; a wrong MAC is
never accepted, below a head or not (see ``docs/audit.md``, "Row MACs").
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from courierguard.vault.keys import KeyProvider

KEY_LABEL = b"courierguard/audit-row-mac/v1"
"""HKDF info of the row key: distinct from every other key derived from the signing key."""
MAC_SIZE = 16
_LOG_KEY_PERSON = b"cg-log-k"  # BLAKE2s personalisation of the log-key derivation (8 bytes)


def row_mac_key(key_provider: KeyProvider) -> bytes:
    """The deployment's row key, derived from the audit signing key ``key_provider`` holds."""
    return key_provider.signer().derive_key(KEY_LABEL)


def log_key(key: bytes, first_leaf: bytes) -> bytes:
    """The key of one log's row MACs: the row key bound to the log's first leaf hash."""
    return hashlib.blake2s(first_leaf, key=key, person=_LOG_KEY_PERSON).digest()


class RowMac:
    """The row MACs of one log, under its log key.

    The keyed state is set up once and copied per row: 0.4 µs a row, where a keyed ``blake2s(...)``
    call per row took 0.7 (it parses its keywords and compresses the key block every time).
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hashlib.blake2s(key=key, digest_size=MAC_SIZE)

    def __call__(self, index: int, leaf: bytes) -> bytes:
        """The MAC of the row at ``index`` whose leaf hash is ``leaf``."""
        mac = self._keyed.copy()
        mac.update(index.to_bytes(8, "big") + leaf)
        return mac.digest()

    def many(self, start: int, leaves: list[bytes]) -> list[bytes]:
        """The MACs of consecutive rows from index ``start``."""
        keyed = self._keyed.copy
        out: list[bytes] = []
        append = out.append
        for index, leaf in enumerate(leaves, start):
            mac = keyed()
            mac.update(index.to_bytes(8, "big") + leaf)
            append(mac.digest())
        return out


def row_mac(key: bytes, index: int, leaf: bytes) -> bytes:
    """The MAC of the row at ``index`` whose leaf hash is ``leaf``, under the log key ``key``."""
    return RowMac(key)(index, leaf)


@dataclass(slots=True)
class MacScan:
    """What the MAC columns of a run of rows said, kept small whatever the log's size: the first row
    whose MAC does not match (and how many such), and the rows without a MAC as runs of indices
    (a log from before MACs is one run, however long)."""

    wrong: int = -1
    wrong_count: int = 0
    unmacced: list[list[int]] = field(default_factory=list)  # [first, end) runs

    def add(self, macer: RowMac, start: int, leaves: list[bytes], macs: list[object]) -> None:
        """Check rows ``start..start + len(leaves)`` (leaf hashes as bytes, MACs as stored)."""
        expected = macer.many(start, leaves)
        try:
            if hmac.compare_digest(b"".join(macs), b"".join(expected)):  # type: ignore[arg-type]
                return  # every row carries its MAC: the common case, one comparison
        except TypeError:  # a NULL, or a value stored as text: row by row
            pass
        for index, (mac, wanted) in enumerate(zip(macs, expected, strict=True), start):
            if mac is None:
                self._unmacced(index)
            elif not (isinstance(mac, bytes) and hmac.compare_digest(mac, wanted)):
                if self.wrong < 0:
                    self.wrong = index
                self.wrong_count += 1

    def _unmacced(self, index: int) -> None:
        runs = self.unmacced
        if runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])

    def merge(self, later: MacScan) -> None:
        """Take in the scan of rows after this one's."""
        if self.wrong < 0:
            self.wrong = later.wrong
        self.wrong_count += later.wrong_count
        for first, end in later.unmacced:
            if self.unmacced and self.unmacced[-1][1] == first:
                self.unmacced[-1][1] = end
            else:
                self.unmacced.append([first, end])

    def unmacced_from(self, covered: int) -> tuple[int, int]:
        """(first row without a MAC at or above ``covered``, how many such): what no head vouches
        for; (-1, 0) when there is none."""
        first, count = -1, 0
        for start, end in self.unmacced:
            if end > covered:
                low = max(start, covered)
                first = low if first < 0 else first
                count += end - low
        return first, count

    @property
    def legacy(self) -> int:
        """Rows without a MAC, wherever they are."""
        return sum(end - start for start, end in self.unmacced)
