"""The compiled policies against Cedar itself, on random policies over random entities.

``compiled`` may decline a request (``Fallback``: Cedar then decides), but whenever it answers,
Cedar must give the same decision, name the same policies, and report no error. These tests draw
policies from a grammar covering the compiled subset and its edges (mixed types, booleans against
longs, overflow, missing attributes and tags, sets of entities), and a few constructs outside it.
"""

from __future__ import annotations

import json

import cedarpy
import pytest
from cedarpy import _internal as cedar_ext
from hypothesis import given, settings
from hypothesis import strategies as st

from courierguard.policy import PolicyEngine
from courierguard.policy._internal import compiled
from courierguard.policy._internal.loading import compile_slices

LONG_MAX = 2**63 - 1
ATTRS = ("a", "b", "c")
TAGS = ("t", "u")
STRINGS = ("x", "y", "")
ROLES = ("courier", "agent")

# --- values in the entities and the context (JSON, as translate.build gives them) ---------------

scalars = st.one_of(
    st.sampled_from(STRINGS),
    st.booleans(),
    st.sampled_from([0, 1, LONG_MAX, -LONG_MAX - 1]),  # 0 and 1 meet false and true often
)
json_values = st.one_of(
    scalars,
    st.lists(st.sampled_from(STRINGS), max_size=3),
    st.lists(st.sampled_from([0, 1]), max_size=3),
    st.lists(scalars, max_size=3),  # may mix types or hold booleans: outside the subset
)
records = st.dictionaries(st.sampled_from(ATTRS), json_values, max_size=3)

# --- expressions, as Cedar text -----------------------------------------------------------------


def _quoted(text: str) -> str:
    return json.dumps(text)


literals = st.one_of(
    st.sampled_from(STRINGS).map(_quoted),
    st.sampled_from(["true", "false"]),
    st.sampled_from(["0", "1", str(LONG_MAX)]),
    st.sampled_from(ROLES).map(lambda r: f'Role::"{r}"'),
)
variables = st.sampled_from(["principal", "resource", "context", "action"])
attributes = st.builds(lambda v, a: f"{v}.{a}", variables, st.sampled_from(ATTRS))
leaves = st.one_of(literals, attributes, variables)


BINARY = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*", "in"])
METHODS = st.sampled_from(["contains", "containsAll", "containsAny"])


def _compose(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary, methods = BINARY, METHODS
    return st.one_of(
        st.builds(lambda left, op, right: f"({left} {op} {right})", inner, binary, inner),
        st.builds(lambda e: f"(!{e})", inner),
        st.builds(lambda e: f"(-{e})", inner),
        st.builds(lambda e, m, arg: f"({e}).{m}({arg})", inner, methods, inner),
        st.builds(lambda e: f"({e}).isEmpty()", inner),
        st.builds(lambda items: "[" + ", ".join(items) + "]", st.lists(inner, max_size=3)),
        st.builds(lambda v, a: f"({v} has {a})", variables, st.sampled_from(ATTRS)),
        st.builds(lambda v, t: f"{v}.hasTag({_quoted(t)})", variables, st.sampled_from(TAGS)),
        st.builds(lambda v, t: f"{v}.getTag({_quoted(t)})", variables, st.sampled_from(TAGS)),
        st.builds(lambda c, a, b: f"(if {c} then {a} else {b})", inner, inner, inner),
        st.builds(lambda e, t: f"({e} is {t})", inner, st.sampled_from(["Employee", "Waybill", "Role"])),
    )


# One operator over two leaves decides the policy more often than a deep tree does, so each
# operator's edges (true against 1, say) are met within a few hundred examples.
expressions = st.one_of(
    st.builds(lambda left, op, right: f"{left} {op} {right}", leaves, BINARY, leaves),
    st.builds(lambda e, m, arg: f"{e}.{m}({arg})", leaves, METHODS, leaves),
    st.recursive(leaves, _compose, max_leaves=8),
)

scopes = st.sampled_from(
    [
        "principal, action, resource",
        'principal in Role::"courier", action, resource',
        'principal == Employee::"E-1", action in [Action::"reveal", Action::"view"], resource is Waybill',
        'principal is Employee in Role::"agent", action == Action::"view", resource',
    ]
)
clauses = st.lists(
    st.builds(lambda kind, e: f"{kind} {{ {e} }}", st.sampled_from(["when", "unless"]), expressions),
    max_size=2,
)
policies = st.builds(
    lambda effect, scope, body: f"{effect} ({scope})\n" + "\n".join(body) + ";",
    st.sampled_from(["permit", "forbid"]),
    scopes,
    clauses,
)


def _entity(
    kind: str, uid: str, attrs: dict[str, object], parents: list[str], tags: dict[str, object]
) -> dict:
    entity: dict[str, object] = {
        "uid": {"type": kind, "id": uid},
        "attrs": attrs,
        "parents": [{"type": "Role", "id": p} for p in parents],
    }
    if tags:
        entity["tags"] = tags
    return entity


principals = st.builds(
    _entity,
    st.just("Employee"),
    st.sampled_from(["E-1", "E-2"]),
    records,
    st.lists(st.sampled_from(ROLES), max_size=2, unique=True),
    st.just({}),
)
resources = st.builds(
    _entity,
    st.sampled_from(["Waybill", "Scope"]),
    st.just("W-1"),
    records,
    st.just([]),
    st.dictionaries(st.sampled_from(TAGS), json_values, max_size=2),
)


def _cedar(
    source: str, principal: dict, action: str, resource: dict, context: dict
) -> tuple[bool, set[str], list[str]]:
    request = {
        "principal": principal["uid"],
        "action": {"type": "Action", "id": action},
        "resource": resource["uid"],
        "context": json.dumps(context),
    }
    entities = cedar_ext.Entities.from_json_str(json.dumps([principal, resource]))
    answer = json.loads(
        cedar_ext.is_authorized_batch([request], cedar_ext.PolicySet.from_str(source), entities, None, False)[
            0
        ]
    )
    diagnostics = answer["diagnostics"]
    return answer["decision"] == "Allow", set(diagnostics["reason"]), diagnostics["errors"]


def _program(source: str) -> compiled.Program | None:
    tree = cedarpy.policies_to_pst(source)
    ids = tuple(tree.static_policies)
    return compile_slices(tree, {("any", "any"): ids}).get(("any", "any"))


@settings(max_examples=1500, deadline=None)
@given(
    policy_texts=st.lists(policies, min_size=1, max_size=3),
    principal=principals,
    action=st.sampled_from(["reveal", "view"]),
    resource=resources,
    context=records,
)
def test_compiled_answers_only_as_cedar_does(
    policy_texts: list[str], principal: dict, action: str, resource: dict, context: dict
) -> None:
    source = "\n".join(policy_texts)
    try:
        cedarpy.PolicySet.from_str(source)
    except ValueError:
        return  # the grammar can write what Cedar does not parse (e.g. "--1"): nothing to compare
    program = _program(source)
    if program is None:
        return  # a policy outside the subset: the engine asks Cedar, nothing to compare
    allowed, reasons, errors = _cedar(source, principal, action, resource, context)
    try:
        env = compiled.environment(principal, action, resource, context)
        got = program.decide(env)
    except compiled.Fallback:
        return  # declined: Cedar decides (always allowed; see the coverage test below)
    assert not errors, f"compiled answered where Cedar erred: {errors}"
    assert got[0] == allowed
    assert set(got[1]) == reasons


def test_the_random_policies_are_mostly_answered() -> None:
    """Guards the test above against passing vacuously: most drawn cases must be compared."""
    compared = declined = 0

    @settings(max_examples=400, deadline=None, database=None)
    @given(policy=policies, principal=principals, resource=resources, context=records)
    def count(policy: str, principal: dict, resource: dict, context: dict) -> None:
        nonlocal compared, declined
        program = _program(policy)
        if program is None:
            return
        try:
            program.decide(compiled.environment(principal, "view", resource, context))
            compared += 1
        except compiled.Fallback:
            declined += 1

    count()
    assert compared > 100, (compared, declined)


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ('context.a like "x*"', "like"),
        ("context.a == {x: 1}", "records"),
        ('context.a == ip("127.0.0.1")', "extension functions"),
    ],
)
def test_a_policy_outside_the_subset_leaves_its_slices_to_cedar(expression: str, why: str) -> None:
    source = f"permit (principal, action, resource) when {{ {expression} }};"
    assert _program(source) is None, why


def test_every_slice_of_the_shipped_policies_is_compiled() -> None:
    loaded = PolicyEngine.default()._loaded
    assert loaded.programs.keys() == loaded.by_action.keys()


@pytest.mark.parametrize(
    ("expression", "context"),
    [
        ("context.a == 1", {"a": True}),  # Python: True == 1; Cedar: false
        ("[1].contains(context.a)", {"a": True}),
        ("context.a.contains(1)", {"a": [True, 1]}),  # a boolean in a set: declined
        ("context.a + 1 > 0", {"a": LONG_MAX}),  # overflow: Cedar errs
        ('context.a < "y"', {"a": "x"}),  # strings do not compare in Cedar
        ("context.missing == 1", {}),
        ('resource.getTag("t") == 1', {}),
        ('context.a == "x\\" or True or \\"x"', {"a": "y"}),  # text in a policy stays a constant
    ],
)
def test_edges_match_cedar(expression: str, context: dict) -> None:
    source = f"permit (principal, action, resource) when {{ {expression} }};"
    program = _program(source)
    assert program is not None
    principal = {"uid": {"type": "Employee", "id": "E-1"}, "attrs": {}, "parents": []}
    resource = {"uid": {"type": "Waybill", "id": "W-1"}, "attrs": {}, "parents": []}
    allowed, _, errors = _cedar(source, principal, "view", resource, context)
    try:
        got = program.decide(compiled.environment(principal, "view", resource, context))
    except compiled.Fallback:
        return  # declined: Cedar answers, whatever it says

    assert not errors
    assert got[0] == allowed


POOL: list[object] = [
    "x",
    "",
    True,
    False,
    0,
    1,
    LONG_MAX,
    -LONG_MAX - 1,
    [],
    ["x"],
    [0, 1],
    [1],
    [True],
    {"k": 1},
]
"""Every kind of value the subset meets, and some it declines (a boolean in a set, a record)."""


@pytest.mark.parametrize(
    "template",
    [f"context.a {op} context.b" for op in ("==", "!=", "<", "<=", ">", ">=", "&&", "||")]
    + [f"context.a {op} context.b == 1" for op in ("+", "-", "*")]
    + [f"context.a.{m}(context.b)" for m in ("contains", "containsAll", "containsAny")]
    + ["context.a.isEmpty()", "!context.a", "-context.a == context.b", "(if context.a then true else false)"]
    + ["(if context.a then context.b else false)"],
)
def test_each_operator_on_every_pair_of_values(template: str) -> None:
    """Exhaustive over a small pool: the random tests rarely meet, say, true against 1."""
    source = f"permit (principal, action, resource) when {{ {template} }};"
    program = _program(source)
    assert program is not None
    principal = {"uid": {"type": "Employee", "id": "E-1"}, "attrs": {}, "parents": []}
    resource = {"uid": {"type": "Waybill", "id": "W-1"}, "attrs": {}, "parents": []}
    answered = 0
    for a in POOL:
        for b in POOL:
            context = {"a": a, "b": b}
            allowed, _, errors = _cedar(source, principal, "view", resource, context)
            try:
                got = program.decide(compiled.environment(principal, "view", resource, context))
            except compiled.Fallback:
                continue
            answered += 1
            assert not errors, (a, b, errors)
            assert got[0] == allowed, (a, b)
    assert answered > 0


LITERAL_SETS = ["[]", '["x", ""]', "[0, 1]", f"[{LONG_MAX}, -1]", '[Role::"courier", Role::"x"]', '["x", 1]']
"""Set literals the compiler builds once, at compile time: each kind of member, and a mix."""


@pytest.mark.parametrize("literal", LITERAL_SETS)
@pytest.mark.parametrize(
    "template",
    ["{s}.contains(context.a)", "{s}.containsAll(context.a)", "{s}.containsAny(context.a)",
     "context.a.containsAll({s})", "{s} == context.a", "{s}.isEmpty()", "principal in {s}"],
)  # fmt: skip
def test_folded_set_literals_decide_as_cedar(literal: str, template: str) -> None:
    source = f"permit (principal, action, resource) when {{ {template.format(s=literal)} }};"
    program = _program(source)
    assert program is not None
    assert "_set((" not in _source(source)  # folded: no set is built per decision
    resource = {"uid": {"type": "Waybill", "id": "W-1"}, "attrs": {}, "parents": []}
    answered, errors_seen = 0, 0
    for role in ("courier", "clerk"):
        parents = [{"type": "Role", "id": role}]
        principal = {"uid": {"type": "Employee", "id": "E-1"}, "attrs": {}, "parents": parents}
        for a in POOL:
            context = {"a": a}
            allowed, _, errors = _cedar(source, principal, "view", resource, context)
            errors_seen += bool(errors)
            try:
                got = program.decide(compiled.environment(principal, "view", resource, context))
            except compiled.Fallback:
                continue
            answered += 1
            assert not errors, (a, errors)
            assert got[0] == allowed, (role, a)
    assert answered > 0 or errors_seen == 2 * len(POOL)  # ``principal in ["x"]`` is always a type error


def _source(source: str) -> str:
    tree = cedarpy.policies_to_pst(source)
    return "".join(compiled.compile_policy(i, p).source for i, p in tree.static_policies.items())


def test_the_same_entity_as_principal_and_resource_is_left_to_cedar() -> None:
    """Cedar refuses duplicate entities; the environment steps aside however it is built."""
    same = {"uid": {"type": "Employee", "id": "E-1"}, "attrs": {}, "parents": []}
    with pytest.raises(compiled.Fallback):
        compiled.environment(same, "view", same, {})
    with pytest.raises(compiled.Fallback):
        compiled.Env(("Employee", "E-1"), ("Action", "view"), ("Employee", "E-1"), {}, {})


@pytest.mark.parametrize("compile_policies", [True, False])
def test_an_entity_id_that_is_not_a_string_is_denied_by_both_paths(compile_policies: bool) -> None:
    """Cedar refuses a non-string id (a deny); the compiled policies compared an integer principal
    with an integer assignee and allowed. Ids come typed from tokens and HTTP, but a row or a
    direct caller may not be."""
    from dataclasses import replace

    from policy_factories import NOW, principal, waybill

    from courierguard.events import PiiField, Role
    from courierguard.policy import PolicyAction, PolicyRequest

    engine = PolicyEngine.default(compile_policies=compile_policies)
    fields = (PiiField.RECIPIENT_PHONE,)
    good = PolicyRequest(principal(Role.COURIER), PolicyAction.REVEAL, waybill(), NOW, "delivery", fields)
    assert engine.decide(good).allowed
    numeric = replace(
        good, principal=replace(principal(Role.COURIER), id=7), resource=replace(waybill(), assignee=7)
    )
    assert not engine.decide(numeric).allowed
    admin = PolicyRequest(replace(principal(Role.ADMIN), id=7), PolicyAction.ADMIN, None, NOW)
    assert not engine.decide(admin).allowed
