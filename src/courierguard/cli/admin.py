"""`courierguard admin ...`: what an operator does on the host before anyone can sign in.

Service API keys (the order and PDA systems' credentials) and the first administrator cannot come
through the HTTP API, which needs both. Everything else about staff and org units goes through the
admin endpoints, by an administrator, on the audit trail. Each command here is on the audit trail
too (a ``system`` entry whose actor is ``operator:<login>``), recorded before it takes effect.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer

from courierguard.app import Core, open_core
from courierguard.audit import EntryKind
from courierguard.cli._common import (
    DatabaseUrl,
    DataDir,
    KeyFile,
    Tenant,
    console,
    one_line_errors,
    record,
    settings_from,
)
from courierguard.company import CompanyStore, check_employee_id
from courierguard.domain import Employee, EmployeeStatus, OrgUnit, OrgUnitKind, says_something
from courierguard.errors import Conflict, InvalidInput, NotFound
from courierguard.events import Role
from courierguard.gateway.identity import ApiKeys
from courierguard.risk.alerts import SqlSink

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")

app = typer.Typer(
    help="Operator tasks: service API keys, the first administrator, risk alerts.", no_args_is_help=True
)
api_key = typer.Typer(help="API keys of service accounts (order system, PDA system).", no_args_is_help=True)
app.add_typer(api_key, name="api-key")


def _record(core: Core, what: str, **details: str | int) -> None:
    record(core, EntryKind.SYSTEM, {"what": what, **details})


def _identifier(value: str, what: str) -> str:
    if not 1 <= len(value) <= 64 or not set(value) <= ID_CHARS:
        raise InvalidInput(what, "must be 1 to 64 letters, digits or the characters _ . : -")
    return value


@api_key.command("create")
def create_api_key(
    name: Annotated[str, typer.Argument(help="Which system uses it, e.g. order-system or pda-gateway.")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Create a service API key and print it once (only its SHA-256 is stored).

    Example: courierguard admin api-key create order-system
    """
    with one_line_errors():
        name = name.strip()
        if not 1 <= len(name) <= 100 or not name.isprintable():
            raise InvalidInput("name", "must be 1 to 100 printable characters (no line breaks or controls)")
        core = open_core(settings_from(database_url, data_dir, key_file, tenant))
        try:
            keys = ApiKeys(core.engine, tenant=core.settings.tenant, seals=core.vault.seals)
            record, secret = keys.create(name, core.clock.now())
            try:
                _record(core, "api_key.created", key_id=record.id, name=name)
            except Exception:
                keys.revoke(record.id, core.clock.now())  # no unrecorded credential stays usable
                raise
        finally:
            core.close()
        console.print(
            f"API key {record.id} for {name} (shown once; send it as 'Authorization: ApiKey <key>'):",
            soft_wrap=True,
        )
        console.print(secret, highlight=False, soft_wrap=True)


@api_key.command("list")
def list_api_keys(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """List the tenant's API keys: id, name, created, revoked.

    Example: courierguard admin api-key list
    """
    with one_line_errors():
        core = open_core(settings_from(database_url, data_dir, key_file, tenant))
        try:
            rows = ApiKeys(core.engine, tenant=core.settings.tenant, seals=core.vault.seals).listing()
        finally:
            core.close()
        for info in rows:
            revoked = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
            if not info.sealed:  # written without the seal key: refused whatever it says
                revoked = "REFUSED (no valid seal)"
            console.print(
                f"{info.id}  {info.created_at:%Y-%m-%d %H:%M}  {revoked:<24} {info.name}", highlight=False
            )
        if not rows:
            console.print("no API keys")


@api_key.command("revoke")
def revoke_api_key(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `api-key list` shows it.")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Revoke an API key; requests that present it are refused from the next one on.

    Example: courierguard admin api-key revoke 3f9a0c1d2e4b
    """
    with one_line_errors():
        _identifier(key_id, "key_id")
        core = open_core(settings_from(database_url, data_dir, key_file, tenant))
        try:
            keys = ApiKeys(core.engine, tenant=core.settings.tenant, seals=core.vault.seals)
            info = keys.info(key_id)
            if info.revoked_at is None:
                _record(core, "api_key.revoked", key_id=key_id)
                keys.revoke(key_id, core.clock.now())
        finally:
            core.close()
        when = "" if info.revoked_at is None else f" (already, on {info.revoked_at:%Y-%m-%d %H:%M})"
        console.print(f"API key {info.id} ({info.name}) revoked{when}", highlight=False)


@app.command()
def bootstrap(
    employee_id: Annotated[
        str, typer.Argument(help="The administrator's employee number (the token's sub).")
    ],
    org_unit: Annotated[
        str, typer.Option("--org-unit", help="Their org unit; created as HQ if missing.")
    ] = "HQ",
    unit_name: Annotated[
        str, typer.Option("--unit-name", help="Name of a newly created org unit.")
    ] = "Headquarters",
    company_name: Annotated[str, typer.Option("--company", help="The tenant's display name.")] = "Courier",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Create the first administrator of a new deployment; refused once the tenant has one.

    Further staff and org units come through the admin API, from this administrator's account.

    Example: courierguard admin bootstrap E000001 --org-unit HQ --company "Example Express"
    """
    with one_line_errors():
        check_employee_id(employee_id, "employee_id")
        _identifier(org_unit, "org_unit")
        for field, value in (("unit_name", unit_name), ("company", company_name)):
            if not says_something(value) or len(value) > 200 or "\x00" in value:
                raise InvalidInput(field, "must say something (1 to 200 characters, not only blanks)")
        core = open_core(settings_from(database_url, data_dir, key_file, tenant))
        try:
            company = CompanyStore(core.engine, tenant=core.settings.tenant, seals=core.vault.seals)
            if any(e.role is Role.ADMIN for e in company.employees()):
                raise Conflict(
                    "this tenant already has an administrator: use the admin API from that account"
                )
            try:
                company.employee(employee_id)
                raise Conflict(
                    f"employee {employee_id} exists: an administrator changes roles through the API"
                )
            except NotFound:
                pass
            now = core.clock.now()
            _record(core, "admin.bootstrap", employee=employee_id, org_unit=org_unit)
            company.ensure_tenant(company_name, now)
            try:
                company.org_unit(org_unit)
            except NotFound:
                company.put_org_unit(OrgUnit(org_unit, OrgUnitKind.HQ, unit_name))
            company.put_employee(Employee(employee_id, Role.ADMIN, org_unit), now)
        finally:
            core.close()
        console.print(
            f"administrator {employee_id} created in {org_unit}; they sign in with your identity provider"
        )


@app.command("first-officer")
def first_officer(
    employee_id: Annotated[
        str, typer.Argument(help="The security officer's employee number (the token's sub).")
    ],
    org_unit: Annotated[
        str,
        typer.Option("--org-unit", help="Their org unit; it must exist (create it through the admin API)."),
    ] = "HQ",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """Create the first security officer of a deployment; refused while the tenant has an active one.

    Giving anyone a privileged role (admin, security officer, auditor) takes two people: an admin
    or officer asks (POST /v1/approvals, kind role) and a security officer approves. The first
    officer has nobody to approve them, so, like the first admin, they come from whoever runs the
    deployment (this command, recorded on the audit trail). The same holds when every officer has
    left or is suspended: nobody would be left to approve.

    Example: courierguard admin first-officer E000002 --org-unit HQ
    """
    with one_line_errors():
        check_employee_id(employee_id, "employee_id")
        _identifier(org_unit, "org_unit")
        core = open_core(settings_from(database_url, data_dir, key_file, tenant))
        try:
            company = CompanyStore(core.engine, tenant=core.settings.tenant, seals=core.vault.seals)
            officers = [e for e in company.employees() if e.role is Role.SECURITY_OFFICER]
            if any(e.status is EmployeeStatus.ACTIVE for e in officers):
                raise Conflict(
                    "this tenant already has an active security officer: ask for the role through the "
                    "API (POST /v1/approvals, kind role), and an officer approves it"
                )
            company.org_unit(org_unit)  # NotFound: one line, nothing written
            try:
                company.employee(employee_id)
                raise Conflict(f"employee {employee_id} exists: ask for the role through the API (kind role)")
            except NotFound:
                pass
            now = core.clock.now()
            # With every officer gone (left, suspended, held), nobody could approve a role request:
            # the deployment's operator makes one again, on the record with how many were inactive.
            _record(core, "admin.first_officer", employee=employee_id, org_unit=org_unit,
                    inactive_officers=len(officers))  # fmt: skip
            company.put_employee(Employee(employee_id, Role.SECURITY_OFFICER, org_unit), now)
        finally:
            core.close()
        console.print(
            f"security officer {employee_id} created in {org_unit}; they sign in with your identity provider"
        )


@app.command()
def alerts(
    actor: Annotated[str | None, typer.Option("--actor", help="Only this account's alerts.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="The newest N.")] = 50,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    key_file: KeyFile = None,
    tenant: Tenant = None,
) -> None:
    """List risk alerts (step-ups, throttles, denials, locks), newest last, with their reasons.

    They name accounts and reason codes, never a customer's data. Each line: the time (UTC, RFC 3339,
    as on the trail and the webhook), action, account, session (`-` for none), score, reasons. Each
    alert is also an entry on the audit trail (`courierguard audit query --actor ID --session S`: what
    that session did) and, if configured, a webhook POST.

    Example: courierguard admin alerts --actor E000041
    """
    with one_line_errors():
        if actor is not None:
            _identifier(actor, "actor")
        core = open_core(settings_from(database_url, data_dir, key_file, tenant))
        try:
            rows = SqlSink(core.engine).fetch(actor, tenant=core.settings.tenant, limit=limit)
        finally:
            core.close()
        for row in rows:
            reasons = ",".join(r["code"] for r in row["reasons"])
            console.print(
                f"{row['ts'].astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}  {row['action']:<8} {row['actor_id']:<12} "
                f"{row['session_id'] or '-':<20} score {row['score']:>5.1f}  {reasons}",
                highlight=False,
                soft_wrap=True,
            )
        if not rows:
            console.print("no alerts")
