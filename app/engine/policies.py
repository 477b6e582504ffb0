"""auth.policies: read at load, resolved per route into what every request of the route must satisfy.

A policy selects routes by tag and asks for scopes (``effect: allow``), refuses everyone but admins (``deny``),
or names the path parameter holding the namespace whose permission a request needs once namespace grants exist.
A policy (or a route itself) may also declare the ``challenge`` its 401 answers send in ``WWW-Authenticate``
(RFC 9110 §11.6.1), checked here at load. The runner (app/engine/runner.py) checks a route's RoutePolicy before
its first step; the engine (app/engine/run.py) puts the challenge on the route's 401s.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from app.identity.access import RANK, require_resource
from app.identity.auth import require
from app.engine.compiled import RoutePolicy, path_entity
from app.engine.definitions import FieldsOnly, chain
from app.engine.expr import Template, TemplateSyntaxError, parse_template
from app.engine.report import Report, place
from app.errors import DepotError

if TYPE_CHECKING:
    from app.engine.compiled import Step
    from app.engine.context import ExecutionContext


class Policy(NamedTuple):
    tags: frozenset[str]
    effect: str
    scopes: frozenset[str]
    namespace: str | None
    permission: str
    challenge: str | None = None


# the schemes a challenge may name: those whose credentials app/identity/auth.py accepts (a client answering any
# other could never get in)
ACCEPTED_SCHEMES = ("Basic", "Bearer")
# RFC 9110 §11.6.1: challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ], in printable ASCII
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e]|\\[\t\x20-\x7e])*"'
_PARAM = r"%s[ \t]*=[ \t]*(?:%s|%s)" % (_TOKEN, _TOKEN, _QUOTED)
_CHALLENGE = re.compile(r"(%s)(?: +(%s(?:[ \t]*,[ \t]*%s)*|[A-Za-z0-9._~+/-]+=*))?" % (_TOKEN, _PARAM, _PARAM))
_LIST_SEPARATOR = re.compile(r"[ \t]*,[ \t]*")
_PARAM_NAMES = re.compile(r"(%s)[ \t]*=[ \t]*(?:%s|%s)" % (_TOKEN, _TOKEN, _QUOTED))


def parse_challenges(text: str) -> list[tuple[str, str]] | None:
    """The (scheme, parameters) of each challenge of a WWW-Authenticate value, or None when it is not one."""
    found, position = [], 0
    while True:
        match = _CHALLENGE.match(text, position)
        if match is None:
            return None
        found.append((match.group(1), match.group(2) or ""))
        if match.end() == len(text):
            return found
        separator = _LIST_SEPARATOR.match(text, match.end())
        if separator is None:
            return None
        position = separator.end()


def read_challenge(text: Any, where: str, report: Report) -> str | None:
    """A declared ``challenge``: one or more challenges (comma-separated) naming schemes Depot accepts; a Basic
    challenge names its realm (RFC 7617). None, with the error reported, when it is not so."""
    challenges = parse_challenges(text) if isinstance(text, str) else None
    if challenges is None or not isinstance(text, str):
        report.error(where, "a challenge is what WWW-Authenticate says: a scheme, then a token68 or name=value "
                     "parameters (values a token or a quoted string), e.g. 'Basic realm=\"pypi\"'; several are "
                     "separated by commas")
        return None
    accepted = {scheme.lower(): scheme for scheme in ACCEPTED_SCHEMES}
    for scheme, parameters in challenges:
        if scheme.lower() not in accepted:
            report.error(where, "the scheme %r is not one whose credentials Depot accepts (%s): a client would "
                         "answer it with credentials it refuses" % (scheme, ", ".join(ACCEPTED_SCHEMES)))
            return None
        names = {match.group(1).lower() for match in _PARAM_NAMES.finditer(parameters)}
        if scheme.lower() == "basic" and "realm" not in names:
            report.error(where, "a Basic challenge names its realm (RFC 7617), e.g. 'Basic realm=\"pypi\"'")
            return None
    return text


class _ChallengeScope:
    """What a route's challenge template reads: the request's path parameters (each made safe inside a quoted
    string) and ``{request.base_url}``."""
    __slots__ = ("fields", "request")
    vars: dict[str, Any] = {}
    principal = None
    event = None

    def __init__(self, fields: Mapping[str, Any], request: Any) -> None:
        self.fields = {name: _quotable(value) for name, value in fields.items()}
        self.request = request


def _quotable(value: Any) -> str:
    text = "".join(c for c in str(value) if " " <= c <= "~")  # printable ASCII only: a header value stays one
    return text.replace("\\", "\\\\").replace('"', '\\"')


class _SampleRequest:
    template_attrs = ("base_url",)
    base_url = "http://registry.example"


@dataclass(frozen=True)
class Challenge:
    """What a route's 401s say in WWW-Authenticate: ``text`` as declared; ``template`` when it reads the request
    (a Bearer realm naming this server's token endpoint, a scope naming the repository asked for)."""
    text: str
    template: Template | None = None

    def render(self, path_params: Mapping[str, Any], request: Any) -> str:
        if self.template is None:
            return self.text
        return str(self.template.render(_ChallengeScope(path_params, request)))


def read_route_challenge(text: Any, where: str, params: Sequence[str], report: Report) -> Challenge | None:
    """A route's own ``challenge``: a challenge (read_challenge), which may read the route's path parameters and
    ``{request.base_url}`` (write ``{{`` for a literal brace)."""
    if not isinstance(text, str) or "{" not in text:
        checked = read_challenge(text, where, report)
        return Challenge(checked) if checked is not None else None
    try:
        template = parse_template(text)
    except TemplateSyntaxError as exc:
        report.error(where, str(exc))
        return None
    for ref in template.refs:
        readable = (ref.namespace == "field" and ref.root in params and not ref.path) or \
            (ref.namespace == "request" and ref.path == ("base_url",))
        if not readable:
            report.error(where, "a challenge reads the route's path parameters and {request.base_url} only, not %s"
                         % ref.source)
            return None
    sample = str(template.render(_ChallengeScope({name: "x" for name in params}, _SampleRequest())))
    if read_challenge(sample, where, report) is None:
        return None
    return Challenge(text, template)


def route_challenge(policies: Iterable[Policy], tags: Iterable[str], own: Challenge | None) -> Challenge | None:
    """The challenge of a route's 401s: its own, else those of the policies selecting it (in their order, each
    once), else None (the default, ``Bearer``)."""
    if own is not None:
        return own
    selected = [p.challenge for p in policies if p.challenge is not None and p.tags & set(tags)]
    joined = ", ".join(dict.fromkeys(selected))
    return Challenge(joined) if joined else None


@dataclass(frozen=True)
class ResourceGuard:
    """A principal restricted to named resources (an access token a token endpoint issued for some repositories)
    reaches a route only through the resource the route names (``resource``, rendered from its path parameters),
    with at least ``permission`` on it. A route naming a namespace but no resource refuses such a principal; other
    principals pass untouched."""
    resource: Template | None
    permission: str

    def __call__(self, ctx: ExecutionContext) -> None:
        principal = ctx.principal
        resources = principal.get("resources") if principal is not None else None
        if resources is None:
            return
        if self.resource is None:
            raise DepotError("FORBIDDEN", 403, "this token was issued for %s only" % ", ".join(sorted(resources)))
        require_resource(principal, str(self.resource.render(FieldsOnly(ctx.request.path_params))), self.permission)


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
    challenge = read_challenge(policy["challenge"], where + ".challenge", report) if "challenge" in policy else None
    return Policy(frozenset(policy.get("when", {}).get("route.tags", [])), policy.get("effect", "allow"),
                  frozenset(scopes), namespace, permission, challenge)


def route_policy(policies: Iterable[Policy], tags: Iterable[str], params: Sequence[str], steps: Sequence[Step],
                 where: str, report: Report, challenge: Challenge | None = None,
                 resource: Template | None = None) -> RoutePolicy:
    """What the policies selecting a route (by its ``tags``) ask of its requests, and the challenge of its 401s
    (``challenge``: the route's own, already read). A route with a namespace path parameter, access-controlled
    but by no namespace permission, is warned about."""
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
    restricted = None  # a route open to anyone is open to an access token too: only a controlled route asks
    controlled = bool(required) or denied or namespace is not None or any(scope_check(step) for step in steps)
    if resource is not None or (namespaces and controlled):
        restricted = ResourceGuard(resource, namespace[1] if namespace is not None else "read")
    return RoutePolicy(frozenset(required), denied, guard, route_challenge(policies, tags, challenge), restricted)


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
