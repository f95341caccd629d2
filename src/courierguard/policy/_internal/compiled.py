"""Cedar policies compiled to Python closures, answering exactly as Cedar would or not at all.

Why: a Cedar decision through cedarpy costs about 50 µs in a tight loop but 120-180 µs inside the
serving process, where every request's Python work has pushed Cedar's code and data out of the CPU
caches. It was the largest single cost of a guarded request. The shipped policies use a small part
of the language (scopes, ``has``, attribute reads, ``==``, ``<``, ``+``, ``in``, set methods, tags),
which evaluates in a few microseconds as Python closures that stay warm.

How it stays exact:

* The policies are still parsed and validated by Cedar (``loading``); this module compiles Cedar's
  own tree of them (``cedarpy.policies_to_pst``), not the text.
* It compiles only the subset it implements. A policy using anything else (``like``, records,
  extension functions, templates, nested ``has``) raises :class:`Unsupported` at load time, and
  every slice holding that policy is decided by Cedar.
* At run time, whatever Cedar would report as an error (a type mismatch, a missing attribute, an
  overflow), or a value outside the subset (a record, a boolean in a set), raises
  :class:`Fallback`. The engine then asks Cedar, whose answer stands. So this module never has to
  reproduce Cedar's error handling: it only answers requests on which every policy evaluated
  cleanly, and for those Cedar's semantics are simple (forbid wins, then permit, else deny).
* A property test compares the two on random requests against the shipped policies, and on random
  policies over random entities (``tests/unit/policy/test_compiled.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


Fn = Callable[[Env], Any]


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


def _ancestors(env: Env, uid: Uid) -> set[Uid]:
    """Every ancestor of ``uid`` in the store (an entity not in the store has none)."""
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


def _uid(entity: pst.EntityUid) -> Uid:
    return ("::".join((*entity.type.namespace, entity.type.basename)), entity.id)


def _type_name(entity_type: pst.EntityType) -> str:
    return "::".join((*entity_type.namespace, entity_type.basename))


# --- expressions --------------------------------------------------------------------------------

_VARS: dict[str, Fn] = {
    "principal": lambda env: env.principal,
    "action": lambda env: env.action,
    "resource": lambda env: env.resource,
    "context": lambda env: env.context,
}


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


def _has_attr(env: Env, base: Any, attr: str) -> bool:
    if type(base) is tuple:
        return attr in _entity_of(env, base).attrs
    if type(base) is dict:
        return attr in base
    raise Fallback


def _expr(node: Any) -> Fn:
    """The closure evaluating one expression node."""
    if isinstance(node, pst.Var):
        return _VARS[node.name]
    if isinstance(node, pst.BoolLit | pst.StringLit):
        constant: Any = node.value
        return lambda env: constant
    if isinstance(node, pst.LongLit):
        number = _in_range(node.value)
        return lambda env: number
    if isinstance(node, pst.EntityLit):
        uid = _uid(node.value)
        return lambda env: uid
    if isinstance(node, pst.Set):
        elements = tuple(_expr(e) for e in node.elements)
        return lambda env: _set(element(env) for element in elements)
    if isinstance(node, pst.GetAttr):
        base, attr = _expr(node.base), node.attr
        return lambda env: _get_attr(env, base(env), attr)
    if isinstance(node, pst.HasAttr):
        if len(node.attrs) != 1:
            raise Unsupported("has with an attribute path")
        base, name = _expr(node.base), node.attrs[0]
        return lambda env: _has_attr(env, base(env), name)
    if isinstance(node, pst.UnaryOp):
        return _unary(node)
    if isinstance(node, pst.BinaryOp):
        return _binary(node)
    if isinstance(node, pst.IfThenElse):
        cond, then, other = _expr(node.cond), _expr(node.then_expr), _expr(node.else_expr)
        return lambda env: then(env) if _bool(cond(env)) else other(env)
    if isinstance(node, pst.Is):
        base, type_name = _expr(node.base), _type_name(node.entity_type)
        inside = None if node.in_expr is None else _expr(node.in_expr)

        def is_(env: Env) -> bool:
            uid = base(env)
            if type(uid) is not tuple:
                raise Fallback
            if uid[0] != type_name:
                return False
            return inside is None or _in(env, uid, inside(env))

        return is_
    raise Unsupported(type(node).__name__)


def _unary(node: pst.UnaryOp) -> Fn:
    arg = _expr(node.arg)
    if node.op == "not":
        return lambda env: not _bool(arg(env))
    if node.op == "neg":
        return lambda env: _in_range(-_long(arg(env)))
    if node.op == "is_empty":
        return lambda env: not _a_set(arg(env))
    raise Unsupported(node.op)


def _binary(node: pst.BinaryOp) -> Fn:
    op, left, right = node.op, _expr(node.left), _expr(node.right)
    if op == "and":
        return lambda env: _bool(left(env)) and _bool(right(env))
    if op == "or":
        return lambda env: _bool(left(env)) or _bool(right(env))
    if op == "eq":
        return lambda env: _equal(left(env), right(env))
    if op == "not_eq":
        return lambda env: not _equal(left(env), right(env))
    if op == "less":
        return lambda env: _long(left(env)) < _long(right(env))
    if op == "less_eq":
        return lambda env: _long(left(env)) <= _long(right(env))
    if op == "greater":
        return lambda env: _long(left(env)) > _long(right(env))
    if op == "greater_eq":
        return lambda env: _long(left(env)) >= _long(right(env))
    if op == "add":
        return lambda env: _in_range(_long(left(env)) + _long(right(env)))
    if op == "sub":
        return lambda env: _in_range(_long(left(env)) - _long(right(env)))
    if op == "mul":
        return lambda env: _in_range(_long(left(env)) * _long(right(env)))
    if op == "in":
        return lambda env: _in(env, left(env), right(env))
    if op == "contains":
        return lambda env: _contains(_a_set(left(env)), right(env))
    if op == "contains_all":
        return lambda env: _a_set(right(env)) <= _a_set(left(env))
    if op == "contains_any":
        return lambda env: not _a_set(left(env)).isdisjoint(_a_set(right(env)))
    if op == "has_tag":
        return lambda env: _has_tag(env, left(env), right(env))
    if op == "get_tag":
        return lambda env: _get_tag(env, left(env), right(env))
    raise Unsupported(op)


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


# --- scopes and policies ------------------------------------------------------------------------


def _scope(node: Any, var: Fn) -> Fn | None:
    """The check of a principal or resource scope (``var`` reads which); None when it matches all."""
    if isinstance(node, pst.ScopeAny):
        return None
    if isinstance(node, pst.ScopeIs):
        type_name = _type_name(node.entity_type)
        return lambda env: var(env)[0] == type_name
    if not isinstance(node, pst.ScopeEq | pst.ScopeIn | pst.ScopeIsIn):
        raise Unsupported(type(node).__name__)
    if not isinstance(node.entity, pst.EntityUid):
        raise Unsupported("template slot")
    target = _uid(node.entity)
    if isinstance(node, pst.ScopeEq):
        return lambda env: var(env) == target
    if isinstance(node, pst.ScopeIn):
        return lambda env: _in(env, var(env), target)
    type_name = _type_name(node.entity_type)
    return lambda env: var(env)[0] == type_name and _in(env, var(env), target)


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
    checks: tuple[Fn, ...]
    """Principal scope, resource scope, then each clause, in Cedar's order (each short-circuits)."""

    def satisfied(self, env: Env) -> bool:
        if self.actions is not None and env.action not in self.actions:
            return False
        return all(check(env) for check in self.checks)


def _clause(condition: Fn, *, negate: bool) -> Fn:
    if negate:
        return lambda env: not _bool(condition(env))
    return lambda env: _bool(condition(env))


def compile_policy(cedar_id: str, policy: pst.Template) -> CompiledPolicy:
    """One static policy as closures; :class:`Unsupported` if it uses more than the subset."""
    checks: list[Fn] = []
    for scope, var in ((policy.principal, _VARS["principal"]), (policy.resource, _VARS["resource"])):
        check = _scope(scope, var)
        if check is not None:
            checks.append(check)
    for clause in policy.clauses:
        if not isinstance(clause, pst.When | pst.Unless):
            raise Unsupported(type(clause).__name__)
        checks.append(_clause(_expr(clause.expr), negate=isinstance(clause, pst.Unless)))
    actions = _action_scope(policy.action)
    return CompiledPolicy(cedar_id, policy.effect == "forbid", actions, tuple(checks))


class Program:
    """The compiled policies of one slice, decided as Cedar decides when nothing errs."""

    def __init__(self, policies: tuple[CompiledPolicy, ...]) -> None:
        self._policies = policies

    def decide(self, env: Env) -> tuple[bool, tuple[str, ...]]:
        """(allowed, ids of the deciding policies in set order); :class:`Fallback` for Cedar to answer.

        Every policy is evaluated even once a forbid holds, as Cedar does: an error anywhere must
        reach Cedar, which reports it (and the engine then denies)."""
        forbids: list[str] = []
        permits: list[str] = []
        try:
            for policy in self._policies:
                if policy.satisfied(env):
                    (forbids if policy.forbid else permits).append(policy.cedar_id)
        except Fallback:
            raise
        except Exception:  # anything unforeseen in this module: Cedar decides, as for an error
            raise Fallback from None
        if forbids:
            return False, tuple(forbids)
        return bool(permits), tuple(permits)


def compile_slice(policies: Mapping[str, pst.Template]) -> Program:
    """A :class:`Program` over ``policies`` (Cedar id to policy); :class:`Unsupported` if any
    of them uses more than the subset."""
    return Program(tuple(compile_policy(cedar_id, policy) for cedar_id, policy in policies.items()))


def environment(
    principal: Mapping[str, Any], action: str, resource: Mapping[str, Any], context: Mapping[str, Any]
) -> Env:
    """The environment of one decision, from the entities and context in Cedar's JSON shapes (as
    ``translate.build`` makes them): ``{"uid": {"type", "id"}, "attrs", "parents", "tags"?}``."""
    store: dict[Uid, Entity] = {}
    uids: list[Uid] = []
    for raw in (principal, resource):
        uid = (raw["uid"]["type"], raw["uid"]["id"])
        if uid in store:
            raise Fallback  # Cedar refuses duplicate entities
        store[uid] = Entity(
            raw.get("attrs", {}),
            frozenset((p["type"], p["id"]) for p in raw.get("parents", ())),
            raw.get("tags", {}),
        )
        uids.append(uid)
    return Env(uids[0], ("Action", action), uids[1], context, store)
