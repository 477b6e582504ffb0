"""auth.policies: read at load, resolved per route into what every request of the route must satisfy.

A policy selects routes by tag and asks for scopes (``effect: allow``), refuses everyone but admins (``deny``),
or names the path parameter holding the namespace whose permission a request needs once namespace grants exist.
The runner (app/engine/runner.py) checks a route's RoutePolicy before its first step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from app.identity.access import RANK
from app.identity.auth import require
from app.engine.compiled import RoutePolicy, path_entity
from app.engine.definitions import chain
from app.engine.report import Report, place

if TYPE_CHECKING:
    from app.engine.compiled import Step
    from app.engine.context import ExecutionContext


class Policy(NamedTuple):
    tags: frozenset[str]
    effect: str
    scopes: frozenset[str]
    namespace: str | None
    permission: str


@dataclass(frozen=True)
class NamespaceGuard:
    """The namespace permission a route's policies ask for: the namespace is the path parameter ``param``,
    normalized as the route's entity normalizes it, so the permission checked is the one of the namespace the
    route goes on to use."""
    param: str
    normalize: Callable[[str], str]
    permission: str

    def __call__(self, ctx: ExecutionContext) -> None:
        namespace = ctx.request.path_params.get(self.param)
        if isinstance(namespace, str):
            namespace = self.normalize(namespace)
        ctx.engine.access.require(ctx.principal, namespace, self.permission)


def read_policies(auth: Mapping[str, Any], scopes: Mapping[str, Any], report: Report) -> list[Policy]:
    """auth.policies, each checked against the declared ``scopes``."""
    return [_policy(policy, place("auth.policies", i), scopes, report)
            for i, policy in enumerate(auth.get("policies", []))]


def _policy(policy: Mapping[str, Any], where: str, declared: Mapping[str, Any], report: Report) -> Policy:
    unknown = set(policy.get("when", {})) - {"route.tags"}
    if unknown:
        report.error(where + ".when", "unknown policy condition(s) %s; expected route.tags"
                     % ", ".join(sorted(unknown)))
    require_ = policy.get("require", {})
    scopes = require_.get("scopes", [])
    for j, scope in enumerate(scopes):
        if scope not in declared:
            report.error(place(where, "require.scopes", j), "unknown scope %r" % scope)
    namespace = require_.get("namespace")
    permission = require_.get("permission", "read")
    if "permission" in require_ and namespace is None:
        report.error(place(where, "require.permission"), "a permission is checked on a namespace: "
                     "name the path parameter holding it in require.namespace")
    return Policy(frozenset(policy.get("when", {}).get("route.tags", [])), policy.get("effect", "allow"),
                  frozenset(scopes), namespace, permission)


def route_policy(policies: Iterable[Policy], tags: Iterable[str], params: Sequence[str], steps: Sequence[Step],
                 where: str, report: Report) -> RoutePolicy:
    """What the policies selecting a route (by its ``tags``) ask of its requests. A route with a namespace path
    parameter, access-controlled but by no namespace permission, is warned about."""
    policies = list(policies)
    required: set[str] = set()
    denied, namespace = False, None  # namespace: (its path parameter, the permission needed) or None
    for policy in policies:
        if not policy.tags & set(tags):
            continue
        if policy.effect == "deny":
            denied = True
            continue
        required |= policy.scopes
        if policy.namespace is not None and policy.namespace in params and (
                namespace is None or RANK[policy.permission] > RANK[namespace[1]]):
            namespace = (policy.namespace, policy.permission)
    guard = None
    namespaces = set(params) & {p.namespace for p in policies}
    if namespace is not None:
        guard = NamespaceGuard(namespace[0], param_normalizer(steps, namespace[0]), namespace[1])
    elif namespaces and (required or any(scope_check(step) for step in steps)):  # controlled, not by namespace
        report.warning(where + ".tags", "the route has a {%s} path parameter but no policy checks a namespace "
                       "permission on it: once grants exist, any caller holding the route's scopes reaches every "
                       "namespace" % sorted(namespaces)[0])
    return RoutePolicy(frozenset(required), denied, guard)


def param_normalizer(steps: Sequence[Step], param: str) -> Callable[[str], str]:
    """The normalize rules the route's entity (its parse.path step's) applies to ``param``."""
    entity = path_entity(steps)
    for field, rules in entity.normalizers if entity is not None else ():
        if field == param:
            normalize: Callable[[str], str] = chain(rules)
            return normalize
    return str


def scope_check(step: Step) -> bool:
    """An unconditional auth.require_scopes that names no namespace: a check of the global scopes only."""
    return step.op == "auth.require_scopes" and step.when is None and step.args.namespace is None


def redundant_scope_check(step: Step, policy: RoutePolicy) -> bool:
    """A scope check that cannot fail once the route's policies passed: they admitted only admins (a deny), or
    a principal holding every scope it asks. (Policies asking no scope admit callers without credentials, whom
    even a check of no scopes refuses.)"""
    return scope_check(step) and (policy.denied or (bool(policy.scopes) and step.args.scopes <= policy.scopes))


def enforce_policies(principal: dict[str, Any] | None, policy_scopes: frozenset[str], denied: bool) -> None:
    """Raise the route policies' refusal for ``principal``: 401 without credentials, else 403."""
    if denied and (principal is None or "admin" not in principal["scopes"]):
        require(principal, {"admin"}, "a deny policy on this route")
    require(principal, policy_scopes, "a policy on this route")
