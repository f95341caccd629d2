"""Settings, declared once: name, default, help and bounds.

Every setting can be given as an environment variable ``COURIERGUARD_<NAME>`` (upper case). The
docs test fails when a setting here is missing from ``docs/configuration.md``. Secrets are never
settings stored in the database: key material comes from the key provider (see ``vault.keys``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from courierguard.db.engine import DATABASE_URL_RULE, parse_database_url
from courierguard.errors import ConfigError

ENV_PREFIX = "COURIERGUARD_"


EMPTY_REFUSED = {
    "policy_dir": "set but empty; unset it for the shipped default set, or name a folder",
    "jwks_url": "set but empty; unset it for the development token issuer (a token for any employee), "
    "or give your identity provider's JWKS URL",
    "database_url": "set but empty; unset it for the embedded SQLite database, or give your database's URL",
    "audit_database_url": "set but empty; unset it for the default audit database, or give its URL",
    "key_file": "set but empty; unset it for DATA_DIR/keys.json, or name your key file",
    "audit_witness_file": "set but empty; unset it to keep no witness file, or name the file",
    "alert_webhook": "set but empty; unset it to send no alerts, or give the receiver's URL",
}
"""Settings whose empty value is refused, and why (the one list: ``from_env``, the validator and the
configuration table read it)."""


class Settings(BaseModel):
    """Courier Guard configuration. Defaults give the embedded single-process deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Annotated[
        Path, Field(description="Folder for the embedded database and the local key file.")
    ] = Path("var")
    database_url: Annotated[
        str | None,
        Field(
            description="SQLAlchemy URL. Unset: SQLite (WAL) at DATA_DIR/courierguard.sqlite3. Set but empty is "
            "refused (a templating slip would otherwise run on an empty embedded database).",
        ),
    ] = None
    audit_database_url: Annotated[
        str | None,
        Field(
            description="SQLAlchemy URL of the audit trail. Unset: with an SQLite DATABASE_URL, a file of its own "
            "beside it (DATA_DIR/courierguard-audit.sqlite3 by default), so that the audit writer's commits "
            "neither hold the data's write lock nor empty the page caches of the readers on every request's "
            "path; an SQLite database that already holds an audit trail keeps it. Any other database: the "
            "main database.",
        ),
    ] = None
    key_provider: Annotated[
        Literal["file", "env", "plugin"],
        Field(
            description="Where key-encryption, blind-index and signing keys come from: the local key file, "
            "COURIERGUARD_KEYS, or KEY_PROVIDER_FACTORY (a KMS or HSM)."
        ),
    ] = "file"
    key_provider_factory: Annotated[
        str | None,
        Field(
            description="With KEY_PROVIDER=plugin: `package.module:function`, called with no arguments, that "
            "returns the key provider (for a KMS: a `KmsKeyProvider` around your KMS client).",
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        ),
    ] = None
    key_file: Annotated[
        Path | None,
        Field(
            description="Local key file (created with mode 0600). Unset: DATA_DIR/keys.json.",
        ),
    ] = None
    tenant: Annotated[str, Field(description="Tenant id used when a request names none.", max_length=64)] = (
        "demo"
    )
    policy_dir: Annotated[
        Path | None,
        Field(
            description="Folder of Cedar policies and schema. Unset: the shipped default set. Set but empty "
            "is refused (a templating slip would otherwise serve the shipped rules in place of yours).",
        ),
    ] = None
    policy_compiled: Annotated[
        bool,
        Field(
            description="Evaluate policies with their compiled Python form, Cedar deciding whatever it declines. "
            "false: Cedar evaluates every decision (the reference; about 4x slower per decision)."
        ),
    ] = True
    host: Annotated[str, Field(description="Address the HTTP API listens on.")] = "127.0.0.1"
    port: Annotated[int, Field(description="Port the HTTP API listens on.", ge=1, le=65535)] = 8700
    trusted_proxies: Annotated[
        str | None,
        Field(
            description="Comma-separated addresses of reverse proxies whose X-Forwarded-For is trusted for the "
            "client IP (risk control keys networks on it). Unset: none; '*' trusts any (only behind a proxy)."
        ),
    ] = None
    max_body_bytes: Annotated[
        int,
        Field(
            description="Largest request body the ingest (POST /v1/waybills) accepts; a larger one is refused "
            "with 413 before it is read in full (a batch of 5,000 waybills is about 3 MB). Every other route "
            "takes at most 64 KB (or this, if lower).",
            ge=1024,
        ),
    ] = 8 * 1024 * 1024
    page_size_max: Annotated[
        int, Field(description="Largest page a list or search returns (masked rows).", ge=1, le=1000)
    ] = 100
    reveal_grace_hours: Annotated[
        int,
        Field(description="Hours after sign-off during which the delivering courier may still reveal.", ge=0),
    ] = 24
    session_max_hours: Annotated[
        int,
        Field(
            description="Hours a session lasts from sign-in, however often its token is renewed; then the "
            "employee signs in again, as a new session.",
            ge=1,
            le=168,
        ),
    ] = 12
    session_idle_minutes: Annotated[
        int,
        Field(
            description="Minutes a session may go unused; the next request after them is refused and the "
            "employee signs in again, as a new session. Measured to the minute: last use is written at "
            "most once a minute per session.",
            ge=5,
            le=720,
        ),
    ] = 30
    export_ttl_minutes: Annotated[
        int, Field(description="Minutes an approved bulk export stays downloadable.", ge=1, le=1440)
    ] = 30
    export_max_rows: Annotated[int, Field(description="Most rows one bulk export may hold.", ge=1)] = 50_000
    approval_pending_hours: Annotated[
        int,
        Field(
            description="Hours a four-eyes request (export, reveal, role) waits for a decision; past them it "
            "is expired, nobody approves or rejects it, and it is asked for again.",
            ge=1,
            le=720,
        ),
    ] = 72
    audit_retention_days: Annotated[
        int,
        Field(
            description="Days audit entries are kept: the default and floor of `audit archive` (law: at least 180).",
            ge=180,
        ),
    ] = 180
    audit_witness_file: Annotated[
        Path | None,
        Field(
            description="File every signed tree head is appended to, outside the database.",
        ),
    ] = None
    audit_commit_delay_ms: Annotated[
        float,
        Field(
            description="Group commit: longest an audit entry waits for others to share its commit, used only "
            "when the arrival rate promises company (under light load nothing waits). 0 commits at once.",
            ge=0,
            le=100,
        ),
    ] = 3.0
    risk_state: Annotated[
        Literal["memory", "redis"], Field(description="Where risk features live: one process, or Redis.")
    ] = "memory"
    redis_url: Annotated[str, Field(description="Redis URL for shared risk state.")] = (
        "redis://127.0.0.1:6379/0"
    )
    alert_webhook: Annotated[
        str | None,
        Field(
            description="URL each risk alert is POSTed to as JSON. Set but empty is refused (a templating slip "
            "would otherwise send the SOC no alert at all).",
        ),
    ] = None
    jwt_issuer: Annotated[str, Field(description="Expected `iss` of employee bearer tokens.")] = (
        "courierguard-dev"
    )
    jwt_audience: Annotated[str, Field(description="Expected `aud` of employee bearer tokens.")] = (
        "courierguard"
    )
    jwks_url: Annotated[
        str | None,
        Field(
            description="JWKS URL of a real identity provider. Unset: the built-in development issuer. Set but "
            "empty is refused (a templating slip would otherwise open /v1/dev/token).",
        ),
    ] = None
    opentelemetry: Annotated[
        bool,
        Field(
            description="Emit FastAPI's native OpenTelemetry traces, metrics and logs (needs a configured "
            "OpenTelemetry SDK). Off: Prometheus at /metrics and JSON logs only, and less work per request."
        ),
    ] = False
    log_level: Annotated[Literal["debug", "info", "warning", "error"], Field(description="Log level.")] = (
        "info"
    )
    inline_database: Annotated[
        bool | None,
        Field(
            description="Run the API's database reads on the event loop rather than in worker threads. Unset: yes "
            "for SQLite (an embedded read takes microseconds, less than a thread hop), no for a networked "
            "database (a round trip would stall every request of the worker)."
        ),
    ] = None

    @field_validator(*EMPTY_REFUSED, mode="before")
    @classmethod
    def _not_empty(cls, value: object, info: ValidationInfo) -> object:
        """A variable set to nothing (``${POLICY_DIR}`` of a missing variable) is a mistake, not "unset"."""
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("empty", EMPTY_REFUSED[str(info.field_name)])
        return value

    @field_validator("database_url", "audit_database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        """A URL of a database Courier Guard runs on; the message never repeats it (it may hold a password)."""
        if value is not None:
            try:
                parse_database_url(value)
            except ConfigError:
                raise PydanticCustomError("database_url", DATABASE_URL_RULE) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        """A Redis URL whose database, if named, is a number: checked here, not when `serve` first
        builds the risk engine (redis-py's traceback), and never repeated (it may hold a password)."""
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            url = None
        database = url.path.strip("/") if url is not None else ""
        if (
            url is None
            or url.scheme not in ("redis", "rediss", "unix")
            or (
                url.scheme != "unix" and database and not database.isdigit()  # redis-py would take 0
            )
        ):
            raise PydanticCustomError(
                "redis_url", "must be a Redis URL (redis://host:6379/<database number>, rediss:// or unix://)"
            )
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'courierguard.sqlite3'}"

    @property
    def resolved_inline_database(self) -> bool:
        if self.inline_database is not None:
            return self.inline_database
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "keys.json"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``COURIERGUARD_*`` variables, then explicit overrides; a bad value is a ConfigError."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            # Empty is unset, except where the default would quietly replace what runs (refused).
            if raw is not None and (raw != "" or name in EMPTY_REFUSED):
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            raise ConfigError(f"{ENV_PREFIX}{where.upper()}: {first['msg']}") from None
