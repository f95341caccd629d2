"""Loading fails closed: a broken, empty or unlabelled policy folder never yields an engine."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import cedarpy
import pytest
from policy_factories import NOW, principal, waybill

from courierguard.errors import ConfigError, InvalidInput
from courierguard.events import PiiField, Role
from courierguard.policy import PolicyAction, PolicyEngine, PolicyRequest, default_policy_dir
from courierguard.policy._internal import loading, translate

DEFAULT = default_policy_dir()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(DEFAULT / "schema.cedarschema", tmp_path)
    shutil.copy(DEFAULT / "policies.cedar", tmp_path)
    return tmp_path


def test_default_set_ships_in_the_package() -> None:
    for name in ("policies.cedar", "schema.cedarschema", "cases.yaml", "README.md"):
        assert (DEFAULT / name).is_file(), name


def test_copy_of_default_loads(folder: Path) -> None:
    assert PolicyEngine.from_folder(folder).policy_ids == PolicyEngine.default().policy_ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no policies|empty"),
        ("permit (principal, action, resource) when {", "policies.cedar"),
        ('@id("x")\npermit (principal, action, resource) when { principal.nope == 1 };', r"\(x\): "),
        ('@id("x")\npermit (principal in Role::"curier", action, resource);', "curier"),
        ("permit (principal, action, resource);", "@id"),
        (
            '@id("x")\npermit (principal, action, resource);\n@id("x")\nforbid (principal, action, resource);',
            "duplicate",
        ),
        ('@id("x")\n@deny_reason("because")\nforbid (principal, action, resource);', "deny_reason"),
        ('@id("x")\npermit (principal == ?principal, action, resource);', "template"),
    ],
)
def test_broken_policies_raise_config_error(folder: Path, text: str, message: str) -> None:
    (folder / "policies.cedar").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        PolicyEngine.from_folder(folder)
    assert "\n" not in info.value.diagnostics()


_GOOD = '@id("ok")\n// a comment; with a semicolon\npermit (principal, action == Action::"view", resource)\nwhen { principal.org_unit == "A;B" };\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A syntax error: the file and the line its statement starts on.
        (
            _GOOD + '\n@id("bad")\npermit (principal, action resource);\n',
            r"^policies\.cedar:6: unexpected token",
        ),
        # Validation errors: file, line and @id, not Cedar's internal "policy1".
        (
            _GOOD + '@id("typo")\npermit (principal, action, resource) when { principal.orgunit == "A" };\n',
            r"^policies\.cedar:5 \(typo\): attribute `orgunit`",
        ),
        (
            _GOOD + '\n\n@id("act")\npermit (principal, action == Action::"view_route", resource);\n',
            r"^policies\.cedar:7 \(act\): unrecognized action",
        ),
        (_GOOD + "permit (principal, action, resource);\n", r"^policies\.cedar:5: .*@id"),
        (
            _GOOD + '@id("ok")\nforbid (principal, action, resource);\n',
            r"^policies\.cedar:5: duplicate @id 'ok'",
        ),
        (
            _GOOD + '@id("y")\n@deny_reason("nope")\nforbid (principal, action, resource);\n',
            r"^policies\.cedar:5 \(y\): unknown @deny_reason",
        ),
    ],
)
def test_errors_name_the_file_and_line(folder: Path, text: str, message: str) -> None:
    (folder / "policies.cedar").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        PolicyEngine.from_folder(folder)
    diagnostics = info.value.diagnostics().removeprefix("Configuration error: ")
    assert re.search(message, diagnostics), diagnostics
    assert "policy1" not in diagnostics and "\n" not in diagnostics


def test_errors_in_a_second_file_name_that_file(folder: Path) -> None:
    (folder / "zz-local.cedar").write_text(
        '// local rules\n\n@id("local")\npermit (principal in Role::"hub_operatr", action, resource);\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"zz-local\.cedar:3 \(local\): .*hub_operatr"):
        PolicyEngine.from_folder(folder)


def test_missing_folder_schema_or_policies(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        PolicyEngine.from_folder(tmp_path / "absent")
    (folder / "schema.cedarschema").unlink()
    with pytest.raises(ConfigError, match="schema"):
        PolicyEngine.from_folder(folder)
    with pytest.raises(ConfigError, match=r"\*\.cedar"):
        PolicyEngine.from_folder(_only_schema(tmp_path / "s"))


def _only_schema(path: Path) -> Path:
    path.mkdir()
    shutil.copy(DEFAULT / "schema.cedarschema", path)
    return path


def test_broken_schema(folder: Path) -> None:
    (folder / "schema.cedarschema").write_text("entity {", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"schema\.cedarschema"):
        PolicyEngine.from_folder(folder)


def test_negative_grace_is_refused() -> None:
    with pytest.raises(ConfigError):
        PolicyEngine.default(grace_hours=-1)


def test_naive_timestamp_is_refused_by_translation() -> None:
    request = PolicyRequest(principal(Role.COURIER), PolicyAction.VIEW, waybill(), datetime(2026, 11, 11, 12))
    with pytest.raises(InvalidInput):
        translate.build(request, 0)
    # ...and decide() turns it into a deny rather than an exception.
    decision = PolicyEngine.default().decide(request)
    assert not decision.allowed


def test_translation_conforms_to_the_schema() -> None:
    # decide() skips request-time schema validation for speed, so check here that what translate
    # builds is exactly what the schema declares.
    schema = cedarpy.Schema.from_str((DEFAULT / "schema.cedarschema").read_text(encoding="utf-8"))
    policies = (DEFAULT / "policies.cedar").read_text(encoding="utf-8")
    from policy_factories import case

    for action in PolicyAction:
        resource = (
            waybill(cases=(case(),), delivered_at=NOW)
            if action.needs_waybill or action is PolicyAction.INGEST
            else None
        )
        request = PolicyRequest(
            principal(Role.SECURITY_OFFICER),
            action,
            resource,
            NOW,
            "p",
            (PiiField.RECIPIENT_PHONE,),
            org_unit="OUT-SH-01",
            approved_by="E-2",
            requested_by="E-3",
        )
        cedar_request, principal_entities, resource_entities = translate.build(request, 3600).for_cedar()
        entities = json.dumps(json.loads(principal_entities) + json.loads(resource_entities))
        cedarpy.Entities.from_json_str(entities, schema)
        result = cedarpy.is_authorized(cedar_request, policies, entities, schema)
        assert not result.diagnostics.errors, (action, result.diagnostics.errors)


def test_a_principal_parsed_once_still_answers_for_its_current_attributes() -> None:
    """The engine caches each principal's parsed entity: a changed status, role or outlet is a new
    entity, never the cached one (the same employee, suspended or moved, is refused)."""
    from courierguard.domain import EmployeeStatus

    engine = PolicyEngine.default()

    def reveal(who: object) -> bool:
        request = PolicyRequest(
            who, PolicyAction.REVEAL, waybill(), NOW, "delivery_contact", (PiiField.RECIPIENT_PHONE,)
        )  # type: ignore[arg-type]
        return engine.decide(request).allowed

    assert reveal(principal(Role.COURIER))
    assert not reveal(principal(Role.COURIER, status=EmployeeStatus.SUSPENDED))
    assert not reveal(principal(Role.OUTLET_CLERK))
    assert reveal(principal(Role.COURIER))  # and back: the cache holds each variant, not one per id


def test_cedar_answers_match_the_public_cedarpy_api() -> None:
    """The direct call into cedarpy's extension gives what its public wrapper gives."""
    from courierguard.policy._internal import cedar

    policies = (DEFAULT / "policies.cedar").read_text(encoding="utf-8")
    parsed = cedarpy.PolicySet.from_str(policies)
    for role in (Role.COURIER, Role.CUSTOMER_SERVICE, Role.HUB_OPERATOR, Role.SECURITY_OFFICER):
        for action in (PolicyAction.REVEAL, PolicyAction.VIEW, PolicyAction.VIEW_ROUTING):
            request = PolicyRequest(principal(role), action, waybill(), NOW, "p", (PiiField.RECIPIENT_PHONE,))
            cedar_request, who, resource = translate.build(request, 3600).for_cedar()
            direct = cedar.authorize(cedar_request, parsed, who, resource)
            entities = json.dumps(json.loads(who) + json.loads(resource))
            public = cedarpy.is_authorized(cedar_request, policies, entities)
            assert (direct["decision"] == "Allow") == public.allowed
            assert sorted(direct["diagnostics"]["reason"]) == sorted(public.diagnostics.reasons)


def test_worded_decisions_name_their_own_role_and_action() -> None:
    """Decisions are worded once per (action, role, answer, deciding policies): each keeps its own."""
    from policy_factories import NOW, principal, waybill

    from courierguard.events import Role
    from courierguard.policy import PolicyAction, PolicyEngine, PolicyRequest

    engine = PolicyEngine.default()
    seen = {}
    for _ in range(2):  # the second round answers from the worded decisions
        for role in (Role.HUB_OPERATOR, Role.OUTLET_CLERK, Role.COURIER):
            for action in (PolicyAction.REVEAL, PolicyAction.CALL, PolicyAction.VIEW):
                got = engine.decide(PolicyRequest(principal(role), action, waybill(assignee="E-9"), NOW))
                assert f"{action} by {role.value}" in got.detail
                assert seen.setdefault((role, action), got) == got
    fresh = PolicyEngine.default()
    for (role, action), got in seen.items():
        assert fresh.decide(PolicyRequest(principal(role), action, waybill(assignee="E-9"), NOW)) == got


_EDGE = '@id("edge")\npermit (principal, action == Action::"view", resource) when { '


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # Each of these crashed the whole process inside Cedar (a native stack overflow) before the
        # shape check; the rest of Cedar's own limits now surface as one-line ConfigErrors too.
        pytest.param("(" * 900 + "true" + ")" * 900, "nested deeper than 64", id="parentheses"),
        pytest.param("[" * 900 + "1" + "]" * 900 + " == [1]", "nested deeper than 64", id="lists"),
        pytest.param("{a:" * 900 + "1" + "}" * 900 + " == {a: 1}", "nested deeper than 64", id="records"),
        pytest.param(" && ".join(["true"] * 3000), "longer than 1,500 tokens", id="and-chain"),
        pytest.param("principal" + ".x" * 2000 + ' == "a"', "longer than 1,500 tokens", id="attribute-chain"),
        pytest.param(" + ".join(["1"] * 700) + " == 1", "supported limit of 100 levels", id="plus-chain-700"),
        pytest.param(" && ".join(["true"] * 70), "nested too deeply for Cedar", id="and-chain-70"),
        pytest.param("if true then " * 70 + "true" + " else false" * 70, "nested too deeply", id="if-70"),
    ],
)
def test_policies_too_deep_for_cedar_are_refused_not_crashed(
    folder: Path, expression: str, message: str
) -> None:
    (folder / "policies.cedar").write_text(_EDGE + expression + " };\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        PolicyEngine.from_folder(folder)
    assert "\n" not in info.value.diagnostics()


def test_shape_limits_leave_room_for_real_policies(folder: Path) -> None:
    (folder / "policies.cedar").write_text(
        _EDGE + "(" * 60 + " && ".join(["true"] * 50) + ")" * 60 + " };\n", encoding="utf-8"
    )
    assert PolicyEngine.from_folder(folder).policy_ids == ("edge",)


def test_shape_check_skips_comments_and_strings() -> None:
    text = (
        '// ((((((((\n@id("a(((")\npermit (principal, action, resource) when { "' + "(" * 100 + '" == "x" };'
    )
    loading.check_shape(text, "p.cedar")  # nothing inside a comment or a string literal counts
    with pytest.raises(ConfigError, match=r"p.cedar:3: brackets"):
        loading.check_shape("\n\n" + "(" * 65, "p.cedar")


def test_schema_nesting_is_bounded(folder: Path) -> None:
    schema = folder / "schema.cedarschema"
    schema.write_text(
        schema.read_text(encoding="utf-8") + "\ntype Deep = " + "Set<" * 900 + "Long" + ">" * 900 + ";\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"schema\.cedarschema:\d+: brackets nested deeper than 64"):
        PolicyEngine.from_folder(folder)


def test_a_byte_that_is_not_utf8_is_named_by_line(folder: Path) -> None:
    text = (folder / "policies.cedar").read_bytes()
    (folder / "policies.cedar").write_bytes(text + b"\n// caf\xe9\n")
    line = text.count(b"\n") + 2
    with pytest.raises(ConfigError, match=rf"policies\.cedar:{line}: not UTF-8"):
        PolicyEngine.from_folder(folder)


def test_a_file_saved_with_a_byte_order_mark_and_crlf_loads(folder: Path) -> None:
    # What a Windows editor writes; Cedar read the mark as "invalid token" on line 1.
    path = folder / "policies.cedar"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert PolicyEngine.from_folder(folder).policy_ids == PolicyEngine.default().policy_ids


def _line_of(text: str, marker: str) -> int:
    """The line the first non-blank character of ``marker`` is on."""
    start = text.index(marker) + len(marker) - len(marker.lstrip())
    return text[:start].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "marker", "message"),
    [
        # A syntax error: the line of the declaration it is in.
        ("entity Employee in [Role]", "entity Employee in [Role] x", "entity Employee in", "unexpected token"),
        # A declaration missing its ";": the line of that declaration.
        ("  status: String,\n};", "  status: String,\n}", "entity Employee in", "unexpected token"),
        # A type that does not exist: the line that names it.
        ("entity Employee in [Role]", "entity Employee in [Rolle]", "entity Employee in", "failed to resolve type: Rolle"),
        ("  org_unit: String,", "  org_unit: Strin,", "  org_unit: Strin,", "failed to resolve type: Strin"),
        # A second declaration of a name: the second one's line.
        (None, "\n// again\nentity Employee;\n", "\nentity Employee;", "`Employee` is declared twice"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_line(
    folder: Path, old: str | None, new: str, marker: str, message: str
) -> None:
    path = folder / "schema.cedarschema"
    text = path.read_text(encoding="utf-8")
    text = text + new if old is None else text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        PolicyEngine.from_folder(folder)
    assert re.match(rf"schema\.cedarschema:{_line_of(text, marker)}: .*{message}", str(info.value)), (
        info.value
    )


def test_json_schema_errors_name_the_line(folder: Path) -> None:
    (folder / "schema.cedarschema").unlink()
    entity_types = {"Role": {}, "Employee": {"memberOfTypes": ["Role"], "shap": {}}}
    text = json.dumps({"": {"entityTypes": entity_types, "actions": {}}}, indent=2)
    (folder / "schema.cedarschema.json").write_text(text, encoding="utf-8")
    line = _line_of(text, '"shap"')
    with pytest.raises(ConfigError, match=rf"^schema\.cedarschema\.json:{line}: unknown field `shap`"):
        PolicyEngine.from_folder(folder)
