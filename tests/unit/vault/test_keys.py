"""Key providers: file permissions, the environment variable, an external KMS, rotation rules."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from courierguard.errors import ConfigError
from courierguard.vault._internal.aead import Aead, new_key
from courierguard.vault.keys import (
    EnvKeyProvider,
    KeyUnavailable,
    KmsKeyProvider,
    LocalKeyFile,
    key_provider_from_settings,
    new_key_document,
)


def test_key_file_is_created_private_and_reloads_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.json"
    first = LocalKeyFile(path)
    assert path.stat().st_mode & 0o777 == 0o600
    kek, wrapped = first.wrap(b"k" * 32, b"ctx")
    again = LocalKeyFile(path)
    assert again.unwrap(kek, wrapped, b"ctx") == b"k" * 32
    assert again.blind_index_key() == first.blind_index_key()
    assert again.signer().public_key == first.signer().public_key


def test_rotation_makes_the_key_file_rename_durable(tmp_path: Path, fsyncs: list[str]) -> None:
    """The new KEK's file is renamed into place before `keys rotate` re-wraps every data key under
    it: the rename must reach the disk first (the folder fsync'd), or a power cut after the
    database commit leaves data keys wrapped by a KEK no key file holds."""
    keys = LocalKeyFile(tmp_path / "keys.json")
    fsyncs.clear()
    keys.rotate()
    assert fsyncs == ["file", "dir"]


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    LocalKeyFile(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        LocalKeyFile(path)


def test_missing_or_corrupt_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="courierguard init"):
        LocalKeyFile(tmp_path / "none.json", create=False)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError):
        LocalKeyFile(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not valid"):
        LocalKeyFile(bad)


def test_unwrap_with_wrong_context_or_retired_kek_fails(tmp_path: Path) -> None:
    keys = LocalKeyFile(tmp_path / "keys.json")
    old, wrapped = keys.wrap(b"d" * 32, b"tenant|2026-11")
    with pytest.raises(KeyUnavailable):
        keys.unwrap(old, wrapped, b"tenant|2026-12")
    new = keys.rotate()
    assert keys.active_kek_id() == new and keys.unwrap(old, wrapped, b"tenant|2026-11") == b"d" * 32
    with pytest.raises(ConfigError, match="active"):
        keys.retire({new})
    keys.retire({old})
    with pytest.raises(KeyUnavailable):
        keys.unwrap(old, wrapped, b"tenant|2026-11")


def test_environment_provider_is_read_only() -> None:
    document = new_key_document()
    env = {"COURIERGUARD_KEYS": EnvKeyProvider.encode(document)}
    keys = EnvKeyProvider(env)
    kek, wrapped = keys.wrap(b"x" * 32, b"c")
    assert keys.unwrap(kek, wrapped, b"c") == b"x" * 32
    # The operator rotates the document; the vault re-wraps under the KEK it names active.
    assert keys.rotate() == keys.active_kek_id() == kek
    assert keys.retire({"kek-old"}) is False  # cannot write: the operator removes it and redeploys
    with pytest.raises(ConfigError):
        EnvKeyProvider({})
    with pytest.raises(ConfigError):
        EnvKeyProvider({"COURIERGUARD_KEYS": "%%%"})


def test_environment_provider_takes_base64_wrapped_in_lines() -> None:
    # `base64 keys.json` (coreutils wraps at 76 columns) was refused as "not base64 of a key
    # document", and a secret pasted with a trailing newline too: the same bytes, laid out in lines.
    document = new_key_document()
    flat = EnvKeyProvider.encode(document)
    wrapped = "\n".join(flat[i : i + 76] for i in range(0, len(flat), 76)) + "\n"
    keys = EnvKeyProvider({"COURIERGUARD_KEYS": wrapped})
    assert keys.blind_index_key() == EnvKeyProvider({"COURIERGUARD_KEYS": flat}).blind_index_key()
    with pytest.raises(ConfigError, match="not base64"):
        EnvKeyProvider({"COURIERGUARD_KEYS": flat[:40] + "%" + flat[40:]})


class InMemoryKms:
    """A stand-in KMS for the protocol test: AES-GCM keys held in a dict, as a KMS would hold them."""

    def __init__(self) -> None:
        self.keys: dict[str, Aead] = {}

    def create_key(self) -> str:
        key_id = f"kms-{len(self.keys) + 1}"
        self.keys[key_id] = Aead(new_key())
        return key_id

    def encrypt(self, key_id: str, plaintext: bytes, context: bytes) -> bytes:
        return self.keys[key_id].seal(plaintext, context)

    def decrypt(self, key_id: str, ciphertext: bytes, context: bytes) -> bytes:
        return self.keys[key_id].open(ciphertext, context)


def test_kms_provider_wraps_through_the_kms_and_rotates() -> None:
    kms = InMemoryKms()
    provider = KmsKeyProvider(kms, kms.create_key(), b"b" * 32, b"s" * 32)
    kek, wrapped = provider.wrap(b"z" * 32, b"ctx")
    new = provider.rotate()
    assert new != kek and provider.unwrap(kek, wrapped, b"ctx") == b"z" * 32
    with pytest.raises(KeyUnavailable):
        provider.unwrap("kms-missing", wrapped, b"ctx")
    with pytest.raises(ConfigError):
        provider.dev_issuer_key()


_PLUGIN_KMS = InMemoryKms()
_PLUGIN_KEY = _PLUGIN_KMS.create_key()


def kms_provider() -> KmsKeyProvider:
    """A KEY_PROVIDER_FACTORY as an operator writes one: their KMS client, their secrets."""
    return KmsKeyProvider(_PLUGIN_KMS, _PLUGIN_KEY, b"b" * 32, b"s" * 32)


def not_a_provider() -> object:
    return object()


def test_a_plugin_key_provider_is_named_in_the_settings(tmp_path: Path) -> None:
    from courierguard.app import open_core
    from courierguard.config import Settings
    from courierguard.domain import NewWaybill
    from courierguard.events import PiiField
    from courierguard.sim.synthetic import PartyGenerator

    settings = Settings(
        data_dir=tmp_path,
        key_provider="plugin",
        key_provider_factory="tests.unit.vault.test_keys:kms_provider",
    )
    core = open_core(settings)
    try:
        assert isinstance(core.keys, KmsKeyProvider) and not (tmp_path / "keys.json").exists()
        party = PartyGenerator(3).party()
        core.vault.ingest([NewWaybill("YT0000000000001", "O1", "O2", "R", party, party, datetime.now(UTC))])
        assert (
            core.vault.reveal("YT0000000000001", [PiiField.SENDER_NAME])[PiiField.SENDER_NAME] == party.name
        )
        with core.engine.connect() as conn:
            assert conn.execute(text("SELECT kek_id FROM data_keys")).scalar_one() == _PLUGIN_KEY  # the KMS's
    finally:
        core.close()


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        (None, "needs KEY_PROVIDER_FACTORY"),
        ("tests.unit.vault.no_such_module:provider", "failed (ModuleNotFoundError)"),
        ("tests.unit.vault.test_keys:no_such_function", "failed (AttributeError)"),
        ("tests.unit.vault.test_keys:not_a_provider", "returned no key provider (lacks active_kek_id"),
    ],
)
def test_a_plugin_key_provider_that_cannot_be_made_is_one_line(
    tmp_path: Path, factory: str | None, says: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        key_provider_from_settings("plugin", tmp_path / "keys.json", factory=factory)


def test_a_factory_that_is_not_module_colon_function_is_refused() -> None:
    from courierguard.config import Settings

    with pytest.raises(ConfigError, match="KEY_PROVIDER_FACTORY"):
        Settings.from_env(environ={"COURIERGUARD_KEY_PROVIDER_FACTORY": "os; rm -rf /"})


def test_a_missing_key_file_is_not_created_when_asked_not_to(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        key_provider_from_settings("file", tmp_path / "keys.json", create=False)
    assert not (tmp_path / "keys.json").exists()
