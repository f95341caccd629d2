"""The need-to-know policy engine: Cedar policies decide every access to a waybill.

The policy set and schema are parsed and validated once, when the engine is built; each decision
then builds two small entities (the principal and the waybill or scope) and evaluates the policies
of its (action, role) slice. A slice is evaluated by its compiled form (``_internal.compiled``,
Cedar's semantics as generated Python, several times cheaper inside a busy server) and by Cedar
itself whenever the compiled form cannot answer exactly (``compile_policies=False``: always by
Cedar). Any failure on the way (bad input, an evaluation error in any policy) is a deny: the engine
fails closed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from courierguard.errors import ConfigError, CourierGuardError, DenyReason
from courierguard.events import Role
from courierguard.policy._internal import cedar, compiled, translate
from courierguard.policy._internal.loading import LoadedPolicies, PolicyInfo, load_folder
from courierguard.policy.models import PolicyAction, PolicyDecision, PolicyRequest

# When several forbids refuse at once, the most specific explanation wins.
_WORDED_KEPT = 4096
"""Decisions worded and kept (see ``PolicyEngine._decision``); the set starts over when full."""
_REASON_PRIORITY = (DenyReason.ACCOUNT_INACTIVE, DenyReason.FOUR_EYES, DenyReason.NO_TASK)


def default_policy_dir() -> Path:
    """The folder of the shipped default policy set (inside the installed package)."""
    return Path(str(resources.files("courierguard.policy").joinpath("default")))


class PolicyEngine:
    """Decides :class:`PolicyRequest` against a validated Cedar policy set.

    Build it with :meth:`from_folder` or :meth:`default`; ``grace_hours`` is how long after sign-off
    the delivering courier may still reveal (``Settings.reveal_grace_hours``), handed to the policies
    as ``context.grace_seconds``. ``compile_policies=False`` has Cedar evaluate every decision (the
    reference the compiled policies are tested against).

    >>> engine = PolicyEngine.default()
    >>> "courier-contact-recipient-while-delivering" in engine.policy_ids
    True
    """

    def __init__(
        self, loaded: LoadedPolicies, *, grace_hours: int = 24, compile_policies: bool = True
    ) -> None:
        if grace_hours < 0:
            raise ConfigError(f"grace_hours must be >= 0, got {grace_hours}")
        self._loaded = loaded
        self._programs = loaded.programs if compile_policies else {}
        self._compiled = compile_policies
        self._order = {cedar_id: n for n, cedar_id in enumerate(loaded.policies)}
        self._worded: dict[tuple[PolicyAction, Role, bool, tuple[str, ...]], PolicyDecision] = {}
        self._grace_seconds = grace_hours * 3600
        self.grace_hours = grace_hours
        self._graced: dict[int, PolicyEngine] = {}

    def with_grace(self, grace_hours: int) -> PolicyEngine:
        """The same rules, read once, with another grace period (this engine when it is the same):
        how a cases file written for a stated grace is decided under a server configured otherwise."""
        if grace_hours == self.grace_hours:
            return self
        variant = self._graced.get(grace_hours)
        if variant is None:
            variant = self._graced[grace_hours] = PolicyEngine(
                self._loaded, grace_hours=grace_hours, compile_policies=self._compiled
            )
        return variant

    @classmethod
    def from_folder(cls, path: Path, *, grace_hours: int = 24, compile_policies: bool = True) -> PolicyEngine:
        """Load every ``*.cedar`` file of ``path`` (hidden ones excepted) and its schema; invalid or
        empty raises ConfigError."""
        return cls(load_folder(Path(path)), grace_hours=grace_hours, compile_policies=compile_policies)

    @classmethod
    def default(cls, *, grace_hours: int = 24, compile_policies: bool = True) -> PolicyEngine:
        """The engine over the shipped default policy set."""
        return cls.from_folder(
            default_policy_dir(), grace_hours=grace_hours, compile_policies=compile_policies
        )

    @property
    def folder(self) -> Path:
        """The folder the policies were loaded from."""
        return self._loaded.folder

    @property
    def schema_file(self) -> Path:
        """The schema file the policies were validated against."""
        return self._loaded.schema_file

    @property
    def digest(self) -> str:
        """SHA-256 over the names and bytes of the schema, rule and cases files as read: exactly
        what this engine was built from (each file is read once)."""
        return self._loaded.digest

    @property
    def own_cases(self) -> bytes | None:
        """The folder's ``cases.yaml`` as read with the rules (None: the folder has none)."""
        return self._loaded.cases

    @property
    def ignored(self) -> tuple[str, ...]:
        """Hidden ``*.cedar`` files of the folder (editor locks, macOS' ``._`` files): never loaded."""
        return self._loaded.ignored

    @property
    def policies(self) -> tuple[PolicyInfo, ...]:
        """Every loaded policy, in file order."""
        return tuple(self._loaded.policies.values())

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """The @id of every loaded policy, in file order."""
        return tuple(info.name for info in self._loaded.policies.values())

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        """Allow or deny ``request``. Never raises on bad input or engine trouble: that is a deny."""
        action = request.action
        if action.needs_waybill and request.resource is None:
            return PolicyDecision(False, (), DenyReason.POLICY_DENIED, f"{action} needs a waybill")
        role = request.principal.role.value
        try:
            facts = translate.build(request, self._grace_seconds)
            program = self._programs.get((action.value, role))
            if program is not None:
                facts.check_json()
                try:
                    allowed, cedar_ids = program.decide(facts.env())
                except compiled.Fallback:
                    pass  # an error or a value outside the compiled subset: Cedar's answer stands
                else:
                    return self._decision(request, allowed, cedar_ids)
            cedar_request, principal, resource = facts.for_cedar()
            policies = self._loaded.by_action[action.value, role]
            answer = cedar.authorize(cedar_request, policies, principal, resource)
        except (CourierGuardError, ValueError, TypeError, KeyError) as exc:
            # Messages from Cedar can quote ids; the type name is enough to debug and leaks nothing.
            return PolicyDecision(
                False,
                (),
                DenyReason.POLICY_DENIED,
                f"{action}: request rejected by the engine ({type(exc).__name__})",
            )
        diagnostics = answer["diagnostics"]
        if diagnostics["errors"]:
            # Cedar skips a policy that errors, which would silently drop a forbid: deny instead.
            return PolicyDecision(
                False,
                (),
                DenyReason.POLICY_DENIED,
                f"{action}: policy evaluation error, denied (fail closed)",
            )
        # Cedar gives the deciding policies in no fixed order; set order makes decisions repeatable.
        order = self._order
        cedar_ids = tuple(sorted(diagnostics["reason"], key=order.__getitem__))
        return self._decision(request, answer["decision"] == "Allow", cedar_ids)

    def _decision(self, request: PolicyRequest, allowed: bool, cedar_ids: tuple[str, ...]) -> PolicyDecision:
        # The answer is a function of these four alone, and few combinations occur (a slice's
        # policies and which of them held): each is worded once, not on every request.
        key = (request.action, request.principal.role, allowed, cedar_ids)
        decision = self._worded.get(key)
        if decision is None:
            if len(self._worded) >= _WORDED_KEPT:
                self._worded.clear()
            decision = self._worded[key] = self._word(request, allowed, cedar_ids)
        return decision

    def _word(self, request: PolicyRequest, allowed: bool, cedar_ids: tuple[str, ...]) -> PolicyDecision:
        action, role = request.action, request.principal.role.value
        infos = [self._loaded.policies[cedar_id] for cedar_id in cedar_ids]
        names = tuple(info.name for info in infos)
        if allowed:
            return PolicyDecision(True, names, None, f"{action} by {role} allowed by {', '.join(names)}")
        if infos:
            reasons = {info.deny_reason for info in infos}
            reason = next((r for r in _REASON_PRIORITY if r in reasons), DenyReason.POLICY_DENIED)
            return PolicyDecision(False, names, reason, f"{action} by {role} denied by {', '.join(names)}")
        if action.is_contact:
            return PolicyDecision(
                False,
                (),
                DenyReason.NO_TASK,
                f"{action} by {role}: no current task explains it (no permit matched)",
            )
        return PolicyDecision(False, (), DenyReason.POLICY_DENIED, f"{action} by {role}: no permit matched")
