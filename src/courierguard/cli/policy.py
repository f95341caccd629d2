"""`courierguard policy ...`: validate a policy folder and check it against a cases file.

Thin commands: parse options, call :mod:`courierguard.policy`, render. Errors are one line on
stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from courierguard.config import Settings
from courierguard.errors import ConfigError, CourierGuardError
from courierguard.policy import PolicyEngine, check_own_cases, default_policy_dir, load_cases, run_cases

app = typer.Typer(
    help="Need-to-know policies: validate a Cedar policy folder, run its test cases.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

PolicyDirOption = Annotated[
    str | None,
    typer.Option(
        "--policy-dir",
        help="Folder of *.cedar files and schema.cedarschema. Default: COURIERGUARD_POLICY_DIR (the folder the "
        "server loads), else the shipped default set.",
    ),
]
# A string, checked here: a Path option reads "" as "." (an empty ${POLICY_DIR} validated whatever
# folder the shell stood in), and its own checks answered in click's usage box, not one line.


def _folder(policy_dir: str | None) -> Path | None:
    if policy_dir is None:
        return None
    if not policy_dir.strip():
        raise ConfigError("--policy-dir: empty; leave it out for the server's folder, or name a folder")
    folder = Path(policy_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError("--policy-dir: names a file, not a folder")
    return folder


def _engine(policy_dir: str | None) -> PolicyEngine:
    """The folder given, else the one the server loads: COURIERGUARD_POLICY_DIR or the shipped set.

    Built as the server builds it, with its grace period (COURIERGUARD_REVEAL_GRACE_HOURS becomes
    ``context.grace_seconds``): otherwise a case could pass here that the server decides otherwise.
    """
    settings = Settings.from_env()
    return PolicyEngine.from_folder(
        _folder(policy_dir) or settings.policy_dir or default_policy_dir(),
        grace_hours=settings.reveal_grace_hours,
        compile_policies=settings.policy_compiled,
    )


def _fail(console: Console, exc: CourierGuardError) -> typer.Exit:
    console.print(f"error: {exc.diagnostics()}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


@app.command()
def validate(policy_dir: PolicyDirOption = None) -> None:
    """Parse the policies, validate them against the schema and run the folder's own cases.yaml,
    as the server does at start: "ok" exactly when the server would start on the folder.

    Example: ``courierguard policy validate --policy-dir ./policies``
    """
    err = Console(stderr=True)
    try:
        engine = _engine(policy_dir)
        passed = check_own_cases(engine)
    except CourierGuardError as exc:
        raise _fail(err, exc) from None
    forbids = sum(1 for p in engine.policies if p.effect == "forbid")
    cases = "no cases.yaml (not checked)" if passed is None else f"{passed} cases of cases.yaml pass"
    Console().print(
        f"ok: {len(engine.policies)} policies ({len(engine.policies) - forbids} permit, {forbids} forbid) "
        f"valid against {engine.schema_file.name} in {engine.folder}; {cases}; "
        f"grace {engine.grace_hours} h after sign-off (COURIERGUARD_REVEAL_GRACE_HOURS)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if engine.ignored:
        Console().print(
            f"ignored (hidden, never loaded): {', '.join(engine.ignored)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def test(
    cases_file: Annotated[
        Path, typer.Argument(help="YAML file of requests and expected verdicts.", dir_okay=False)
    ],
    policy_dir: PolicyDirOption = None,
) -> None:
    """Decide every case of CASES_FILE and show pass/fail; exit 1 if any case fails.

    Example: ``courierguard policy test src/courierguard/policy/default/cases.yaml``
    """
    err = Console(stderr=True)
    try:
        engine = _engine(policy_dir)
        cases = load_cases(cases_file)
    except CourierGuardError as exc:
        raise _fail(err, exc) from None
    results = run_cases(engine, cases)
    table = Table(title=f"policy cases: {cases_file.name}")
    table.add_column("result")
    table.add_column("case")
    table.add_column("role")
    table.add_column("action")
    table.add_column("decision")
    table.add_column("why")
    for result in results:
        request = result.case.request
        decision = result.decision
        verdict = "allow" if decision.allowed else f"deny ({decision.reason})"
        why = ", ".join(decision.policy_ids) or "no permit matched"
        table.add_row(
            "[green]pass[/]" if result.passed else "[red]FAIL[/]",
            result.case.name,
            request.principal.role.value,
            request.action.value,
            verdict,
            why if result.passed else f"{why}; {result.problem}",
        )
    out = Console()
    out.print(table)
    failed = sum(1 for r in results if not r.passed)
    out.print(f"{len(results) - failed} passed, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(1)
