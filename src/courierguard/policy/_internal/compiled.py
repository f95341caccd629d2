"""Cedar policies compiled to Python, answering exactly as Cedar would or not at all.

Why: a Cedar decision through cedarpy costs about 50 µs in a tight loop but 120-180 µs inside the
serving process, where every request's Python work has pushed Cedar's code and data out of the CPU
caches. It was the largest single cost of a guarded request. The shipped policies use a small part
of the language (scopes, ``has``, attribute reads, ``==``, ``<``, ``+``, ``in``, set methods, tags),
which evaluates in a few microseconds as generated Python functions that stay warm.

How it stays exact:

* The policies are still parsed and validated by Cedar (``loading``); this module compiles Cedar's
  own tree of them (``cedarpy.policies_to_pst``), not the text.
* It compiles only the subset it implements. A policy using anything else (``like``, records,
  extension functions, templates) raises :class:`Unsupported` at load time, and
  every slice holding that policy is decided by Cedar.
* At run time, whatever Cedar would report as an error (a type mismatch, a missing attribute, an
  overflow), or a value outside the subset (a record, a boolean in a set), raises
  :class:`Fallback`. The engine then asks Cedar, whose answer stands. So this module never has to
  reproduce Cedar's error handling: it only answers requests on which every policy evaluated
  cleanly, and for those Cedar's semantics are simple (forbid wins, then permit, else deny).
* Tests compare the two on random requests against the shipped policies, on random policies over
  random entities, and exhaustively per operator over a pool of values
  (``tests/unit/policy/test_compiled.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cedarpy import pst

Uid = tuple[str, str]
"""An entity reference: (type, id)."""

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class Unsupported(Exception):
    """The policy uses a part of Cedar this module does not compile (Cedar decides instead)."""


class Fallback(Exception):
    """This request must be decided by Cedar: an evaluation error, or a value outside the subset."""


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity as Cedar's JSON entity format gives it: attributes and tags in JSON values."""

    attrs: Mapping[str, Any]
    parents: frozenset[Uid]
    tags: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Env:
    """What one decision sees: the request's principal, action, resource and context, and the
    entity store (principal and resource)."""

    principal: Uid
    action: Uid
    resource: Uid
    context: Mapping[str, Any]
    store: Mapping[Uid, Entity]
    ancestors: dict[Uid, frozenset[Uid]] = field(default_factory=dict)
    """Each entity's ancestors, found once per decision (every ``in`` of every policy asks)."""
    principal_attrs: Mapping[str, Any] = field(init=False)
    resource_attrs: Mapping[str, Any] = field(init=False)
    """The attributes of ``principal`` and ``resource``, which are always in ``store``: the
    generated code reads ``principal.x`` and ``resource.x`` from these without a lookup."""

    def __post_init__(self) -> None:
        store = self.store
        if self.principal == self.resource:
            raise Fallback  # Cedar refuses duplicate entities
        if self.principal not in store or self.resource not in store:
            raise Fallback  # never by construction: both are the decision's own entities
        object.__setattr__(self, "principal_attrs", store[self.principal].attrs)
        object.__setattr__(self, "resource_attrs", store[self.resource].attrs)


Fn = Callable[[Env], Any]


# --- run-time helpers (the generated code calls them) -------------------------------------------


def value(raw: Any) -> Any:
    """A JSON value (as Cedar parses it without a schema) as a Cedar value of the subset.

    Strings, booleans and longs are themselves; a list is a set. Booleans are kept out of sets
    because Python's ``True == 1`` would make ``[1].contains(true)`` hold, where Cedar says false.
    """
    kind = type(raw)
    if kind is str or kind is bool:
        return raw
    if kind is int:
        if not _LONG_MIN <= raw <= _LONG_MAX:
            raise Fallback
        return raw
    if kind is list:
        return _set(value(item) for item in raw)
    raise Fallback  # records, entity references in attributes, floats: Cedar decides


def _set(items: Any) -> frozenset[Any]:
    try:
        members = frozenset(items)
    except TypeError:  # a record in a set
        raise Fallback from None
    for member in members:
        if type(member) is bool:
            raise Fallback
    return members


def _entity_of(env: Env, uid: Any) -> Entity:
    if type(uid) is not tuple:
        raise Fallback  # Cedar: type error, expected an entity
    found = env.store.get(uid)
    if found is None:
        raise Fallback  # Cedar: the entity does not exist
    return found


def _ancestors(env: Env, uid: Uid) -> frozenset[Uid]:
    """Every ancestor of ``uid`` in the store (an entity not in the store has none)."""
    known = env.ancestors.get(uid)
    if known is None:
        known = env.ancestors[uid] = frozenset(_walk_up(env, uid))
    return known


def _walk_up(env: Env, uid: Uid) -> set[Uid]:
    seen: set[Uid] = set()
    todo = [uid]
    store = env.store
    while todo:
        entity = store.get(todo.pop())
        if entity is None:
            continue
        for parent in entity.parents:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _in(env: Env, uid: Any, targets: Any) -> bool:
    """Cedar's ``in``: ``uid`` is one of ``targets`` (an entity or a set of them) or below one."""
    if type(uid) is not tuple:
        raise Fallback
    if type(targets) is tuple:
        wanted: frozenset[Any] = frozenset((targets,))
    elif type(targets) is frozenset:
        wanted = targets
        for target in wanted:
            if type(target) is not tuple:
                raise Fallback
    else:
        raise Fallback
    if uid in wanted:
        return True
    return not wanted.isdisjoint(_ancestors(env, uid))


def _bool(result: Any) -> bool:
    if type(result) is not bool:
        raise Fallback
    return result


def _long(result: Any) -> int:
    if type(result) is not int:
        raise Fallback
    return result


def _in_range(result: int) -> int:
    if not _LONG_MIN <= result <= _LONG_MAX:
        raise Fallback  # Cedar: overflow error
    return result


def _a_set(result: Any) -> frozenset[Any]:
    if type(result) is not frozenset:
        raise Fallback
    return result


def _equal(left: Any, right: Any) -> bool:
    # Cedar's == is false across types, never an error; Python's says True == 1.
    if type(left) is dict or type(right) is dict:
        raise Fallback  # records hold JSON values (lists, not sets): Cedar compares them
    return type(left) is type(right) and left == right


def _get_attr(env: Env, base: Any, attr: str) -> Any:
    if type(base) is tuple:
        attrs = _entity_of(env, base).attrs
    elif type(base) is dict:
        attrs = base
    else:
        raise Fallback
    if attr not in attrs:
        raise Fallback  # Cedar: attribute not found
    return value(attrs[attr])


def _attr(attrs: Mapping[str, Any], attr: str) -> Any:
    """``principal.attr`` or ``resource.attr``: :func:`_get_attr` of an entity known to exist."""
    if attr not in attrs:
        raise Fallback  # Cedar: attribute not found
    return value(attrs[attr])


def _in_one(env: Env, uid: Any, target: Uid) -> bool:
    """``uid in <entity literal>``: :func:`_in` of a target known to be one entity."""
    if type(uid) is not tuple:
        raise Fallback
    return uid == target or target in _ancestors(env, uid)


def _in_any(env: Env, uid: Any, targets: frozenset[Uid]) -> bool:
    """``uid in [<entity literals>]``: :func:`_in` of a set known to hold only entities."""
    if type(uid) is not tuple:
        raise Fallback
    return uid in targets or not targets.isdisjoint(_ancestors(env, uid))


def _has_attr(env: Env, base: Any, attr: str) -> bool:
    if type(base) is tuple:
        return attr in _entity_of(env, base).attrs
    if type(base) is dict:
        return attr in base
    raise Fallback


def _contains(members: frozenset[Any], item: Any) -> bool:
    if type(item) is dict:
        raise Fallback
    # Sets never hold booleans (see ``value``), so a boolean is never a member, as in Cedar.
    return type(item) is not bool and item in members


def _has_tag(env: Env, uid: Any, tag: Any) -> bool:
    if type(tag) is not str:
        raise Fallback
    return tag in _entity_of(env, uid).tags


def _get_tag(env: Env, uid: Any, tag: Any) -> Any:
    if type(tag) is not str:
        raise Fallback
    tags = _entity_of(env, uid).tags
    if tag not in tags:
        raise Fallback  # Cedar: tag not found
    return value(tags[tag])


def _is(uid: Any, type_name: str) -> bool:
    if type(uid) is not tuple:
        raise Fallback
    return bool(uid[0] == type_name)


_HELPERS: dict[str, Any] = {
    "_a_set": _a_set, "_attr": _attr, "_bool": _bool, "_contains": _contains, "_equal": _equal,
    "_get_attr": _get_attr, "_get_tag": _get_tag, "_has_attr": _has_attr, "_has_tag": _has_tag, "_in": _in,
    "_in_any": _in_any, "_in_one": _in_one, "_in_range": _in_range, "_is": _is, "_long": _long, "_set": _set,
}  # fmt: skip
"""What the generated code may call, and nothing else."""


# --- code generation ----------------------------------------------------------------------------
#
# Each policy becomes one Python function ``f(E)`` over the environment: one call per policy
# instead of one per expression node, about twice as fast as a tree of closures (measured). Only fixed
# fragments of this module and indices into the constant tuple ``K`` are written into the source:
# every string, number, entity and attribute name of the policy is a constant, so nothing in a
# policy can become code. Python keeps Cedar's evaluation order: operands left to right, ``&&``,
# ``||`` and ``if`` short-circuiting.


def _uid(entity: pst.EntityUid) -> Uid:
    return ("::".join((*entity.type.namespace, entity.type.basename)), entity.id)


def _type_name(entity_type: pst.EntityType) -> str:
    return "::".join((*entity_type.namespace, entity_type.basename))


_CONSTANT_MEMBERS = (pst.StringLit, pst.LongLit, pst.EntityLit)
"""Literals a set may be folded from at compile time (never booleans: see :func:`value`)."""


def _literal(node: pst.StringLit | pst.LongLit | pst.EntityLit) -> Any:
    if isinstance(node, pst.LongLit):
        return _in_range(node.value)
    if isinstance(node, pst.StringLit):
        return node.value
    return _uid(node.value)


_OWN_ATTRS = {"principal": "E.principal_attrs", "resource": "E.resource_attrs", "context": "E.context"}
"""Where the generated code reads ``principal.x``, ``resource.x`` and ``context.x`` (the request's own
entities, always in the store, and its context record) without :func:`_get_attr`'s checks."""

_VAR_CODE = {
    "principal": "E.principal",
    "action": "E.action",
    "resource": "E.resource",
    "context": "E.context",
}


class _Writer:
    def __init__(self) -> None:
        self.constants: list[Any] = []

    def constant(self, item: Any) -> str:
        self.constants.append(item)
        return f"K[{len(self.constants) - 1}]"

    def boolean(self, node: Any) -> str:
        code, is_bool = self.expr(node)
        return code if is_bool else f"_bool({code})"

    def expr(self, node: Any) -> tuple[str, bool]:
        """Python source evaluating ``node``, and whether it is known to give a boolean."""
        if isinstance(node, pst.Var):
            return _VAR_CODE[node.name], False
        if isinstance(node, pst.BoolLit):
            return ("True" if node.value else "False"), True
        if isinstance(node, pst.LongLit):
            return self.constant(_in_range(node.value)), False
        if isinstance(node, pst.StringLit):
            return self.constant(node.value), False
        if isinstance(node, pst.EntityLit):
            return self.constant(_uid(node.value)), False
        if isinstance(node, pst.Set):
            literals = [e for e in node.elements if isinstance(e, _CONSTANT_MEMBERS)]
            if len(literals) == len(node.elements):
                # A set of literals is built once, here, instead of on every decision.
                return self.constant(_set(_literal(e) for e in literals)), False
            codes = [self.expr(e)[0] for e in node.elements]
            return f"_set(({''.join(code + ', ' for code in codes)}))", False
        if isinstance(node, pst.GetAttr):
            own = _OWN_ATTRS.get(node.base.name) if isinstance(node.base, pst.Var) else None
            if own is not None:
                return f"_attr({own}, {self.constant(node.attr)})", False
            return f"_get_attr(E, {self.expr(node.base)[0]}, {self.constant(node.attr)})", False
        if isinstance(node, pst.HasAttr):
            if len(node.attrs) != 1:
                raise Unsupported("has with an attribute path")
            own = _OWN_ATTRS.get(node.base.name) if isinstance(node.base, pst.Var) else None
            if own is not None:
                return f"({self.constant(node.attrs[0])} in {own})", True
            return f"_has_attr(E, {self.expr(node.base)[0]}, {self.constant(node.attrs[0])})", True
        if isinstance(node, pst.UnaryOp):
            return self.unary(node)
        if isinstance(node, pst.BinaryOp):
            return self.binary(node)
        if isinstance(node, pst.IfThenElse):
            then, then_bool = self.expr(node.then_expr)
            other, other_bool = self.expr(node.else_expr)
            return f"({then} if {self.boolean(node.cond)} else {other})", then_bool and other_bool
        if isinstance(node, pst.Is):
            base = self.expr(node.base)[0]
            test = f"_is({base}, {self.constant(_type_name(node.entity_type))})"
            if node.in_expr is None:
                return test, True
            return f"({test} and _in(E, {base}, {self.expr(node.in_expr)[0]}))", True
        raise Unsupported(type(node).__name__)

    def unary(self, node: pst.UnaryOp) -> tuple[str, bool]:
        if node.op == "not":
            return f"(not {self.boolean(node.arg)})", True
        arg = self.expr(node.arg)[0]
        if node.op == "neg":
            return f"_in_range(-_long({arg}))", False
        if node.op == "is_empty":
            return f"(not _a_set({arg}))", True
        raise Unsupported(node.op)

    def binary(self, node: pst.BinaryOp) -> tuple[str, bool]:
        op = node.op
        if op in ("and", "or"):
            return f"({self.boolean(node.left)} {op} {self.boolean(node.right)})", True
        left, right = self.expr(node.left)[0], self.expr(node.right)[0]
        if op in ("eq", "not_eq"):
            if isinstance(node.left, pst.StringLit) or isinstance(node.right, pst.StringLit):
                # A string equals only a string, in Python as in Cedar: no type check needed.
                return f"({left} {'==' if op == 'eq' else '!='} {right})", True
            return f"({'' if op == 'eq' else 'not '}_equal({left}, {right}))", True
        if op in _COMPARISONS:
            return f"(_long({left}) {_COMPARISONS[op]} _long({right}))", True
        if op in _ARITHMETIC:
            return f"_in_range(_long({left}) {_ARITHMETIC[op]} _long({right}))", False
        if op == "in" and isinstance(node.right, pst.EntityLit):
            return f"_in_one(E, {left}, {right})", True
        if (
            op == "in"
            and isinstance(node.right, pst.Set)
            and all(isinstance(e, pst.EntityLit) for e in node.right.elements)
        ):
            return f"_in_any(E, {left}, {right})", True  # folded into one constant set of entities
        if op not in _CALLS:
            raise Unsupported(op)
        template, is_bool = _CALLS[op]
        return template.format(left=left, right=right), is_bool

    def scope(self, node: Any, var: str) -> str | None:
        """The check of a principal or resource scope; None when it matches everything."""
        if isinstance(node, pst.ScopeAny):
            return None
        if isinstance(node, pst.ScopeIs):
            return f"({var}[0] == {self.constant(_type_name(node.entity_type))})"
        if not isinstance(node, pst.ScopeEq | pst.ScopeIn | pst.ScopeIsIn):
            raise Unsupported(type(node).__name__)
        if not isinstance(node.entity, pst.EntityUid):
            raise Unsupported("template slot")
        target = self.constant(_uid(node.entity))
        if isinstance(node, pst.ScopeEq):
            return f"({var} == {target})"
        if isinstance(node, pst.ScopeIn):
            return f"_in_one(E, {var}, {target})"
        return f"({var}[0] == {self.constant(_type_name(node.entity_type))} and _in_one(E, {var}, {target}))"


_COMPARISONS = {"less": "<", "less_eq": "<=", "greater": ">", "greater_eq": ">="}
_ARITHMETIC = {"add": "+", "sub": "-", "mul": "*"}
_CALLS = {
    "in": ("_in(E, {left}, {right})", True),
    "contains": ("_contains(_a_set({left}), {right})", True),
    "contains_all": ("(_a_set({left}) >= _a_set({right}))", True),
    "contains_any": ("(not _a_set({left}).isdisjoint(_a_set({right})))", True),
    "has_tag": ("_has_tag(E, {left}, {right})", True),
    "get_tag": ("_get_tag(E, {left}, {right})", False),
}
"""Operators written as a template over the operands' code, and whether they give a boolean."""


def _action_scope(node: Any) -> frozenset[Uid] | None:
    """The actions a policy names; None when it names all. Cedar is asked without a schema, so
    an action has no parent groups: ``in`` a list of actions is membership."""
    if isinstance(node, pst.ScopeAny):
        return None
    if isinstance(node, pst.ActionEq):
        return frozenset((_uid(node.entity),))
    if isinstance(node, pst.ActionIn):
        return frozenset(_uid(e) for e in node.entities)
    raise Unsupported(type(node).__name__)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    cedar_id: str
    forbid: bool
    actions: frozenset[Uid] | None
    condition: Fn
    """Principal scope, resource scope, then each clause, in Cedar's order, short-circuiting."""
    source: str
    """The generated Python, for reading and debugging."""


def compile_policy(cedar_id: str, policy: pst.Template) -> CompiledPolicy:
    """One static policy as a Python function; :class:`Unsupported` if it uses more than the subset."""
    writer = _Writer()
    checks = [
        check
        for check in (
            writer.scope(policy.principal, "E.principal"),
            writer.scope(policy.resource, "E.resource"),
        )
        if check is not None
    ]
    for clause in policy.clauses:
        if not isinstance(clause, pst.When | pst.Unless):
            raise Unsupported(type(clause).__name__)
        test = writer.boolean(clause.expr)
        checks.append(test if isinstance(clause, pst.When) else f"(not {test})")
    actions = _action_scope(policy.action)
    source = "def condition(E):\n    return " + (" and ".join(checks) or "True") + "\n"
    namespace: dict[str, Any] = {**_HELPERS, "K": tuple(writer.constants)}
    try:
        exec(compile(source, f"<policy {cedar_id}>", "exec"), namespace)  # noqa: S102 - see above
    except (SyntaxError, RecursionError, MemoryError, ValueError):  # nesting beyond Python's parser
        raise Unsupported("expression too deep") from None
    return CompiledPolicy(cedar_id, policy.effect == "forbid", actions, namespace["condition"], source)


class Program:
    """The compiled policies of one slice, decided as Cedar decides when nothing errs."""

    def __init__(self, policies: tuple[CompiledPolicy, ...]) -> None:
        # What ``CompiledPolicy.satisfied`` reads, unpacked once: a method call per policy per
        # decision cost more than most conditions.
        self._flat = tuple((p.actions, p.condition, p.forbid, p.cedar_id) for p in policies)

    def decide(self, env: Env) -> tuple[bool, tuple[str, ...]]:
        """(allowed, ids of the deciding policies in set order); :class:`Fallback` for Cedar to answer.

        Every policy is evaluated even once a forbid holds, as Cedar does: an error anywhere must
        reach Cedar, which reports it (and the engine then denies)."""
        forbids: list[str] = []
        permits: list[str] = []
        action = env.action
        try:
            for actions, condition, forbid, cedar_id in self._flat:
                if (actions is None or action in actions) and condition(env):
                    (forbids if forbid else permits).append(cedar_id)
        except Fallback:
            raise
        except Exception:  # anything unforeseen in this module: Cedar decides, as for an error
            raise Fallback from None
        if forbids:
            return False, tuple(forbids)
        return bool(permits), tuple(permits)


def environment(
    principal: Mapping[str, Any], action: str, resource: Mapping[str, Any], context: Mapping[str, Any]
) -> Env:
    """The environment of one decision, from the entities and context in Cedar's JSON shapes (as
    ``translate.build`` makes them): ``{"uid": {"type", "id"}, "attrs", "parents", "tags"?}``."""
    store: dict[Uid, Entity] = {}
    uids: list[Uid] = []
    for raw in (principal, resource):
        uid = (raw["uid"]["type"], raw["uid"]["id"])
        store[uid] = Entity(
            raw.get("attrs", {}),
            frozenset((p["type"], p["id"]) for p in raw.get("parents", ())),
            raw.get("tags", {}),
        )
        uids.append(uid)
    return Env(uids[0], ("Action", action), uids[1], context, store)
