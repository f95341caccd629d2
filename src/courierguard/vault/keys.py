"""Key providers: where the vault's key-encryption keys (KEKs), blind-index key and signing key live.

None of these secrets is ever stored in the database. Three providers:

* :class:`LocalKeyFile` – a JSON key file created on first run with mode 0600 (the embedded default);
* :class:`EnvKeyProvider` – the same document, base64-encoded, in ``COURIERGUARD_KEYS`` (read-only);
* :class:`KmsKeyProvider` – wraps data keys through an external KMS implementing :class:`Kms`.

A provider wraps and unwraps *data keys*; the vault does the rest (envelope encryption).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Protocol, cast

from courierguard.errors import ConfigError
from courierguard.files import fsync_path
from courierguard.vault._internal.aead import Aead, DecryptionFailed, new_key
from courierguard.vault._internal.signing import Signer, new_signing_key

KEY_FILE_FORMAT = "courierguard-keys/v1"
ENV_VARIABLE = "COURIERGUARD_KEYS"


class KeyUnavailable(ConfigError):
    """A KEK named by a wrapped data key is not held by the provider (retired, or the wrong key file)."""

    reason = "key_unavailable"


class KeyProvider(Protocol):
    """What the vault and the audit log need from key management."""

    def active_kek_id(self) -> str:
        """Id of the KEK that wraps new data keys."""
        ...

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap ``data_key`` under the active KEK, bound to ``context``; returns (kek id, wrapped)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        """Recover a data key; raises :class:`KeyUnavailable` if the KEK is gone or the bytes are wrong."""
        ...

    def blind_index_key(self) -> bytes:
        """The HMAC key of the blind index (separate from every encryption key)."""
        ...

    def signer(self) -> Signer:
        """The Ed25519 signer of audit tree heads."""
        ...

    def dev_issuer_key(self) -> bytes:
        """HMAC key of the built-in development token issuer (demo and tests only)."""
        ...

    def rotate(self) -> str:
        """The KEK to re-wrap every data key under, made active: a new one where the provider can
        create keys; where the operator rotates (a read-only document), the one it names active.
        The old ones stay until :meth:`retire`."""
        ...

    def retire(self, kek_ids: set[str]) -> bool:
        """Forget KEKs that no wrapped data key uses any more; False where only the operator can
        (a read-only document, or a KMS that retires keys on its own schedule)."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def new_key_document() -> dict[str, Any]:
    kek_id = "kek-" + secrets.token_hex(4)
    return {
        "format": KEY_FILE_FORMAT,
        "active": kek_id,
        "keks": {kek_id: _b64(new_key())},
        "blind_index": _b64(secrets.token_bytes(32)),
        "signing": _b64(new_signing_key()),
        "dev_issuer": _b64(secrets.token_bytes(32)),
    }


class _DocumentKeys:
    """Provider over an in-memory key document; subclasses decide where the document is kept."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._load(document)

    def _load(self, document: dict[str, Any]) -> None:
        try:
            if document.get("format") != KEY_FILE_FORMAT:
                raise ValueError("unknown format")
            keks = {str(k): _unb64(v) for k, v in document["keks"].items()}
            active = str(document["active"])
            if active not in keks:
                raise ValueError("active KEK missing")
            self._keks = {k: Aead(v) for k, v in keks.items()}
            self._blind_index = _unb64(document["blind_index"])
            self._signer = Signer(_unb64(document["signing"]))
            self._dev_issuer = _unb64(document["dev_issuer"]) if "dev_issuer" in document else None
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"key document is not valid ({exc})") from None
        self._document = document
        self._active = active
        # One attribute, replaced whole: a wrap reads the active id and its KEK from one document
        # even while another thread loads a newer one.
        self._state = (active, self._keks)

    def _refresh(self) -> None:
        """Load the document again if it changed where it is kept (a file another process rotated)."""

    def active_kek_id(self) -> str:
        self._refresh()
        return self._state[0]

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        # Rare (a new month's data key), so it looks for a newer document every time: a worker must
        # not wrap with a KEK that a rotation run by another process has replaced.
        self._refresh()
        active, keks = self._state
        return active, keks[active].seal(data_key, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._state[1].get(kek_id)
        if kek is None:
            self._refresh()  # re-wrapped under a KEK created by another process since we loaded
            kek = self._state[1].get(kek_id)
        if kek is None:
            raise KeyUnavailable(f"key-encryption key {kek_id} is not held by this key provider")
        try:
            return kek.open(wrapped, context)
        except DecryptionFailed:
            raise KeyUnavailable(f"data key wrapped by {kek_id} does not unwrap") from None

    def blind_index_key(self) -> bytes:
        return self._blind_index

    def signer(self) -> Signer:
        return self._signer

    def dev_issuer_key(self) -> bytes:
        if self._dev_issuer is None:
            raise ConfigError("this key document has no development token issuer key; configure JWKS_URL")
        return self._dev_issuer

    def kek_ids(self) -> set[str]:
        return set(self._keks)

    def _rotated_document(self) -> tuple[str, dict[str, Any]]:
        kek_id = "kek-" + secrets.token_hex(4)
        document = dict(self._document)
        document["keks"] = {**document["keks"], kek_id: _b64(new_key())}
        document["active"] = kek_id
        return kek_id, document

    def _retired_document(self, kek_ids: set[str]) -> dict[str, Any]:
        if self._active in kek_ids:
            raise ConfigError("the active key-encryption key cannot be retired")
        document = dict(self._document)
        document["keks"] = {k: v for k, v in document["keks"].items() if k not in kek_ids}
        return document


class LocalKeyFile(_DocumentKeys):
    """Keys in a local JSON file, created on first use with mode 0600 and rewritten atomically."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not path.exists():
            if not create:
                raise ConfigError(f"key file {path} does not exist; run `courierguard init`")
            self._write(new_key_document())
        self._seen = self._signature()
        super().__init__(self._read())

    def _signature(self) -> tuple[int, int, int]:
        """What changes when the file is replaced: rotate and retire write a new file and rename it."""
        st = self.path.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _read(self) -> dict[str, Any]:
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"key file {self.path} is readable by others (mode {mode:o}); chmod 600 it")
        try:
            document: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"key file {self.path} cannot be read ({exc.__class__.__name__})") from None
        return document

    def _refresh(self) -> None:
        try:
            seen = self._signature()
        except OSError:
            return  # gone for a moment (an operator's copy): keep the keys already loaded
        if seen != self._seen:
            self._load(self._read())
            self._seen = seen

    def _write(self, document: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename itself reaches the disk only with its folder: `keys rotate` commits data keys
        # wrapped by the new KEK right after this, and a power cut that kept that commit but lost
        # the rename would leave them wrapped by a KEK no key file holds.
        fsync_path(self.path.parent)

    def rotate(self) -> str:
        self._refresh()
        kek_id, document = self._rotated_document()
        self._write(document)
        self._load(document)
        self._seen = self._signature()
        return kek_id

    def retire(self, kek_ids: set[str]) -> bool:
        self._refresh()
        document = self._retired_document(kek_ids)
        self._write(document)
        self._load(document)
        self._seen = self._signature()
        return True


class EnvKeyProvider(_DocumentKeys):
    """Keys from ``COURIERGUARD_KEYS`` (base64 of a key document). Rotation is done by the operator."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        raw = (os.environ if environ is None else environ).get(ENV_VARIABLE)
        if not raw:
            raise ConfigError(f"{ENV_VARIABLE} is not set")
        try:
            # `base64 FILE` wraps its output at 76 columns; the line breaks are layout, not data.
            document = json.loads(base64.b64decode("".join(raw.split()), validate=True))
        except (ValueError, json.JSONDecodeError):
            raise ConfigError(f"{ENV_VARIABLE} is not base64 of a key document") from None
        super().__init__(document)

    @staticmethod
    def encode(document: dict[str, Any]) -> str:
        """The value to put in ``COURIERGUARD_KEYS`` for a key document."""
        return base64.b64encode(json.dumps(document).encode()).decode()

    def rotate(self) -> str:
        """The document's active KEK: the operator adds a KEK to the document, makes it active and
        redeploys; `courierguard keys rotate` then re-wraps every data key under it."""
        return self._active

    def retire(self, kek_ids: set[str]) -> bool:
        """Read-only: the operator removes ``kek_ids`` from the document and redeploys."""
        return False


class Kms(Protocol):
    """An external key management service (cloud KMS, HSM) that wraps data keys for us."""

    def encrypt(self, key_id: str, plaintext: bytes, context: bytes) -> bytes: ...

    def decrypt(self, key_id: str, ciphertext: bytes, context: bytes) -> bytes: ...

    def create_key(self) -> str: ...


class KmsKeyProvider:
    """Data keys wrapped by an external KMS; blind-index and signing keys supplied by the operator."""

    def __init__(self, kms: Kms, key_id: str, blind_index_key: bytes, signing_key: bytes) -> None:
        self._kms = kms
        self._active = key_id
        self._blind_index = blind_index_key
        self._signer = Signer(signing_key)

    def active_kek_id(self) -> str:
        return self._active

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        return self._active, self._kms.encrypt(self._active, data_key, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._kms.decrypt(kek_id, wrapped, context)
        except Exception as exc:  # a KMS raises its own types; all mean "not available"
            raise KeyUnavailable(f"KMS could not unwrap with {kek_id} ({exc.__class__.__name__})") from None

    def blind_index_key(self) -> bytes:
        return self._blind_index

    def signer(self) -> Signer:
        return self._signer

    def dev_issuer_key(self) -> bytes:
        raise ConfigError("a KMS deployment has no development token issuer; configure JWKS_URL")

    def rotate(self) -> str:
        self._active = self._kms.create_key()
        return self._active

    def retire(self, kek_ids: set[str]) -> bool:
        """KMS keys are retired in the KMS itself, on its own schedule."""
        return False


def key_provider_from_settings(
    kind: str, key_file: Path, *, factory: str | None = None, create: bool = True
) -> KeyProvider:
    """The key provider a deployment is configured with. ``create=False`` refuses a missing key file
    instead of making a new one (a verifier given a new key would call every signed head forged)."""
    if kind == "file":
        return LocalKeyFile(key_file, create=create)
    if kind == "env":
        return EnvKeyProvider()
    if kind == "plugin":
        return _plugin_provider(factory)
    raise ConfigError(f"unknown key provider {kind!r}")


_PROVIDER_METHODS = (
    "active_kek_id", "wrap", "unwrap", "blind_index_key", "signer", "dev_issuer_key", "rotate", "retire",
)  # fmt: skip


def _plugin_provider(factory: str | None) -> KeyProvider:
    """Call the operator's ``package.module:function`` and check it returned a key provider.

    The plugin point for a KMS or HSM: the function builds the provider from the operator's own client
    and secret store, so no credential of theirs passes through Courier Guard's settings.
    """
    if not factory:
        raise ConfigError("KEY_PROVIDER=plugin needs KEY_PROVIDER_FACTORY (package.module:function)")
    module_name, _, attribute = factory.partition(":")
    try:
        made = getattr(importlib.import_module(module_name), attribute)()
    except Exception as exc:  # an import or a constructor of the operator's: name the kind, not the text
        raise ConfigError(f"key provider factory {factory} failed ({exc.__class__.__name__})") from None
    missing = [name for name in _PROVIDER_METHODS if not callable(getattr(made, name, None))]
    if missing:
        raise ConfigError(
            f"key provider factory {factory} returned no key provider (lacks {', '.join(missing)})"
        )
    return cast(KeyProvider, made)
