"""Schema -> compiled routes and pipelines, checked on the way. Runs once per schema load.

load (JSON) -> shape check (metaschema) -> definitions -> routes and pipelines (each step bound to its op,
templates parsed, references resolved, bindings analysed) -> schema-level checks (app.checks).
Every problem is recorded in the Report with its place; the schema is servable only if no error was found.
"""
import hashlib
import json
import re
from collections import namedtuple
from types import SimpleNamespace

import jsonschema

import operations  # noqa: F401  (registers the vocabulary)
from app.access import RANK
from app import checks
from app.conditions import ConditionError, compile_condition
from app.definitions import (BlobStoreDef, Constraint, Document, Entity, EventLog, EventType, Limits, Upstream,
                             Validator, Versioning, chain, compile_normalizer)
from app.auth import DEFAULTS as AUTH_DEFAULTS, require
from app.budget import over_budget
from app.codegen import FunctionBuilder
from app.errors import DepotError, SchemaLoadError
from app.expr import TemplateSyntaxError, parse_template
from app.metaschema import METASCHEMA
from app.openapi import route_operation
from app.opspec import REGISTRY, BindError, Output
from app.ratelimit import parse_rate
from app.rows import RowContext
from app.report import Report, place
from app.stores.interfaces import IndexDef, IndexKeyDef
from app.stores.registry import REGISTRY as STORE_KINDS

_PATH_PARAM = re.compile(r"\{([^{}]*)\}")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_LOG = ("_depot", "eventlog/", 262144)
PAIR_LIMIT = "rate_limit_per_username_and_address"
OLD_PAIR_LIMIT = "rate_limit_per_username"
RESERVED_PATHS = ("/auth", "/admin", "/health", "/openapi.json", "/docs")
Policy = namedtuple("Policy", "tags effect scopes namespace permission")


class Step:
    __slots__ = ("op", "fn", "args", "when", "place", "decl", "io")

    def __init__(self, decl, args, when, place_):
        self.io = decl.io
        self.op = decl.name
        self.fn = decl.fn
        self.decl = decl
        self.args = args
        self.when = when
        self.place = place_


class Pipeline:
    def __init__(self, name, steps, place_):
        self.name = name
        self.steps = steps
        self.place = place_
        self._set_plan(steps)

    def _set_plan(self, steps, policy_scopes=frozenset(), denied=False, namespace_guard=None):
        """``plan``: what the runner needs per step, flattened once: (op function, bound args, condition, io,
        ends, mutates). ``run(ctx, cpu_budget_ns, clock)``: the policies, then the plan, as one generated function
        (see generate_runner)."""
        self.plan = _plan(steps)
        granted = None
        if namespace_guard is not None:  # once grants exist, the namespace permission replaces the scope checks
            granted = generate_runner(_plan([s for s in steps if not _scope_check(s)]), frozenset(), denied,
                                      namespace_guard=namespace_guard)
        self.run = generate_runner(self.plan, policy_scopes, denied, granted=granted)

    def guard(self, policy_scopes, denied, namespace_guard=None):
        """The route's auth.policies (scopes every request needs; ``denied``: admin only; ``namespace_guard``:
        the namespace permission a request needs once grants exist) are checked first. An unconditional
        auth.require_scopes asking nothing beyond them cannot fail: it is left out of the plan (it stays in
        ``steps``)."""
        if policy_scopes or denied or namespace_guard is not None:
            self._set_plan([s for s in self.steps if not (_scope_check(s) and s.args.scopes <= policy_scopes)],
                           policy_scopes, denied, namespace_guard)


def _plan(steps):
    return tuple((s.fn, s.args, s.when, s.io, s.op.startswith("respond."), s.decl.mutates) for s in steps)


def _scope_check(step):
    """An unconditional auth.require_scopes that names no namespace: a check of the global scopes only."""
    return step.op == "auth.require_scopes" and step.when is None and step.args.namespace is None


class NamespaceGuard:
    """The namespace permission a route's policies ask for: the namespace is the path parameter ``param``,
    normalized as the route's entity normalizes it, so the permission checked is the one of the namespace the
    route goes on to use."""

    def __init__(self, param, normalize, permission):
        self.param = param
        self.normalize = normalize
        self.permission = permission

    def __call__(self, ctx):
        namespace = ctx.request.path_params.get(self.param)
        if isinstance(namespace, str):
            namespace = self.normalize(namespace)
        ctx.engine.access.require(ctx.principal, namespace, self.permission)


def generate_runner(plan, policy_scopes=frozenset(), denied=False, granted=None, namespace_guard=None):
    """The plan as straight-line code, after the route's policies (a principal holding ``policy_scopes``, or
    admin; only admin when ``denied``; the namespace permission of ``namespace_guard``): each step a direct
    call of its op function with its bound arguments, under its `when` if it has one, returning after a
    respond step; before each step that does I/O, the CPU budget check, on the clocks ``clock`` (an
    app.budget.BudgetClock) reads; before each step that changes the repository, the read-only replica check
    (replayed events, which carry ctx.event, are how a replica changes). Any error aborts the open transaction
    and propagates. ``granted``: the runner to use instead while namespace grants exist."""
    builder = FunctionBuilder("run_pipeline", "ctx, budget, clock")
    if granted is not None:
        builder.line("if ctx.engine.access.active:")
        builder.line("return %s(ctx, budget, clock)" % builder.bind(granted, "granted"), 1)
    over = builder.bind(over_budget, "over_budget")
    read_only = builder.bind(_read_only, "read_only")
    builder.line("cpu, wall = clock.cpu, clock.wall")
    builder.line("started_cpu, started_wall = cpu(), wall()")
    builder.line("try:")
    builder.depth += 1
    if policy_scopes or denied:  # the common case inline; enforce_policies works out the refusal
        policy = builder.bind(frozenset(policy_scopes), "policy")
        builder.line("principal = ctx.principal")
        held = "" if denied else " or %s <= principal['scopes']" % policy
        builder.line("if principal is None or not ('admin' in principal['scopes']%s):" % held)
        builder.line("%s(principal, %s, %s)" % (builder.bind(enforce_policies, "enforce"), policy,
                                                builder.bind(bool(denied), "denied")), 1)
    if namespace_guard is not None:
        builder.line("%s(ctx)" % builder.bind(namespace_guard, "namespace_guard"))
    for fn, args, when, io, ends, mutates in plan:
        if io:  # CPU time never exceeds wall time over the same interval, so the cheap wall clock decides
            # whether the CPU clock (for the thread's, a system call) needs reading at all
            builder.line("if wall() - started_wall - ctx.exempt_wall_ns > budget and cpu() - started_cpu - "
                         "ctx.exempt_ns > budget:")
            builder.line("%s(ctx, clock, started_cpu, budget)" % over, 1)
        deeper = 0
        if when is not None:
            builder.line("if %s(ctx):" % builder.bind(when, "when"))
            deeper = 1
        if mutates:
            builder.line("if ctx.engine.read_only and ctx.event is None:", deeper)
            builder.line("%s()" % read_only, deeper + 1)
        builder.line("%s(ctx, %s)" % (builder.bind(fn, "step"), builder.bind(args, "args")), deeper)
        if ends:  # only respond.* steps set a response
            builder.line("return", deeper)
    if builder.lines[-1].endswith("try:"):  # nothing to run
        builder.line("pass")
    builder.depth -= 1
    builder.line("except BaseException:")
    builder.line("ctx.abort_txn()", 1)
    builder.line("raise", 1)
    return builder.build()


def _segments(path):
    """A path's segments: a parameter segment ('{name}') as (name,), a literal as itself."""
    return [(m.group(1),) if m else part for part, m in
            ((part, re.fullmatch(r"\{([^{}]*)\}", part)) for part in path.strip("/").split("/"))]


def _shadowing(first, second):
    """(winner, loser, [(position, loser's parameter, winner's literal)]) when one URL can match both routes,
    else None."""
    if first.method != second.method:
        return None
    a, b = _segments(first.path), _segments(second.path)
    if len(a) != len(b):
        return None
    differing = []
    for position, (x, y) in enumerate(zip(a, b)):
        literal_x, literal_y = isinstance(x, str), isinstance(y, str)
        if literal_x and literal_y:
            if x != y and not ("{" in x or "{" in y):
                return None  # two different literals: no URL matches both
            continue
        if literal_x != literal_y:
            differing.append((position, literal_x))
    if not differing:
        return None  # the same shape: reported as a duplicate
    first_wins = differing[0][1]
    winner, loser = (first, second) if first_wins else (second, first)
    winner_segments, loser_segments = (a, b) if first_wins else (b, a)
    lost = [(p, loser_segments[p][0], winner_segments[p]) for p, literal_first in differing
            if literal_first == first_wins]
    return winner, loser, lost


def _path_entity(route):
    """The entity the route's parse.path binds its parameters as, or None."""
    for step in route.pipeline.steps:
        if step.op == "parse.path":
            return step.args.entity
    return None


def enforce_policies(principal, policy_scopes, denied):
    """Raise the route policies' refusal for ``principal``: 401 without credentials, else 403."""
    if denied and (principal is None or "admin" not in principal["scopes"]):
        require(principal, {"admin"}, "a deny policy on this route")
    require(principal, policy_scopes, "a policy on this route")


def _read_only():
    raise DepotError("READ_ONLY", 403, "this server is a read-only replica: send changes to its primary")


class Route:
    def __init__(self, spec, pipeline, place_, params):
        self.id = spec["id"]
        self.method = spec["method"]
        self.path = spec["path"]
        self.tags = spec.get("tags", [])
        self.description = spec.get("description", "")
        self.pipeline = pipeline
        self.place = place_
        self.params = params
        self.rule = _PATH_PARAM.sub(lambda m: "<%s>" % m.group(1), self.path)
        self.disabled = None  # (code, message) when a feature switch turns the route off: it answers 404


class CompiledSchema:
    """Everything a running engine needs, decided at load."""

    def __init__(self, doc, report):
        self.doc = doc
        self.report = report
        self.sha256 = schema_digest(doc)
        self.routes = []
        self.apply_pipelines = {}


def schema_digest(doc):
    """A schema's identity, the one /health, /openapi.json and /admin/schema show: SHA-256 over its canonical
    JSON (keys sorted, no spaces), so neither key order nor spacing makes two equal schemas differ."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_schema_file(path):
    with open(path, "rb") as handle:
        return json.load(handle)


def compile_schema(doc, source="schema"):
    """Check and compile; returns (CompiledSchema or None, Report)."""
    report = Report(source)
    if not isinstance(doc, dict):
        report.error("", "a schema is a JSON object")
        return None, report
    for error in jsonschema.Draft202012Validator(METASCHEMA).iter_errors(doc):
        report.error(place(*error.absolute_path), "%s (schema shape)" % error.message)
    if not report.ok:
        return None, report
    compiled = Compiler(doc, report).compile()
    return (compiled if report.ok else None), report


def compile_or_raise(doc, source="schema"):
    compiled, report = compile_schema(doc, source)
    if compiled is None:
        raise SchemaLoadError(report)
    return compiled


class Compiler:
    def __init__(self, doc, report):
        self.doc = doc
        self.report = report
        self.out = CompiledSchema(doc, report)
        self.definitions = {}

    def compile(self):
        out = self.out
        out.limits = Limits(self.doc["ops"].get("limits"))
        out.features = dict(self.doc.get("features", {}))
        out.versioning = Versioning(self.doc.get("entities", {}).get("versioning"))
        scopes = self.doc.get("auth", {}).get("scopes", [])
        for i, scope in enumerate(scopes):
            if [s["name"] for s in scopes].index(scope["name"]) != i:
                self.report.error(place("auth.scopes", i, "name"), "duplicate scope %r" % scope["name"])
        self.definitions = {
            "scope": {s["name"]: s for s in scopes},
            "schema": self._schemas(),
            "kv_store": dict(self.doc.get("storage", {}).get("kv_stores", {})),
        }
        for where, message in STORE_KINDS.kind_problems(self.doc.get("storage", {})):
            self.report.error(where, message)
        self.definitions["entity"] = self._entities(out.versioning)
        self.definitions["document"] = self._documents()
        self.definitions["index"] = self._indexes()
        self.definitions["blob_store"] = self._blob_stores()
        self.definitions["upstream"] = {n: Upstream(n, s) for n, s in self.doc.get("upstreams", {}).items()}
        self.definitions["event_type"] = self._event_types()
        out.definitions = self.definitions
        out.event_log = self._event_log()
        out.caching = self._caching()
        self._auth()
        out.allowed_ops = set(self.doc["ops"]["allowed"])
        for name in out.allowed_ops - set(REGISTRY):
            self.report.error("ops.allowed", "op %r is not in Depot's vocabulary" % name)
        self._routes()
        self._check_shadowing()
        self._apply_pipelines()
        out.runtime = checks.run_all(self)
        return out

    # --- definitions ------------------------------------------------------------------------------------

    def _schemas(self):
        validators = {}
        for name, schema in self.doc.get("storage", {}).get("schemas", {}).items():
            problem = Validator.schema_errors(schema)
            if problem:
                self.report.error(place("storage.schemas", name), "not a valid JSON Schema: %s" % problem)
            else:
                validators[name] = Validator(schema, name)
        return validators

    def _entities(self, versioning):
        entities = {}
        for name, spec in self.doc.get("entities", {}).items():
            if name == "versioning":
                continue
            where = place("entities", name)
            normalizers = []
            for field, fspec in spec["fields"].items():
                rules = []
                for i, rule in enumerate(fspec.get("normalize", [])):
                    try:
                        rules.append(compile_normalizer(rule))
                    except ValueError as exc:
                        self.report.error(place(where, "fields", field, "normalize", i), str(exc))
                if rules:
                    normalizers.append((field, rules))
            constraints = []
            for i, cspec in enumerate(spec.get("constraints", [])):
                cwhere = place(where, "constraints", i)
                if cspec["field"] not in spec["fields"]:
                    self.report.error(cwhere + ".field", "unknown field %r of entity %s" % (cspec["field"], name))
                    continue
                try:
                    constraints.append(Constraint(**cspec))
                except re.error as exc:
                    self.report.error(cwhere + ".regex", "invalid regular expression: %s" % exc)
            for i, field in enumerate(spec.get("primary_key", [])):
                if field not in spec["fields"]:
                    self.report.error(place(where, "primary_key", i), "unknown field %r" % field)
            entities[name] = Entity(name, spec["fields"], normalizers, constraints, versioning)
        return entities

    def _template(self, source, where):
        try:
            return parse_template(source)
        except TemplateSyntaxError as exc:
            self.report.error(where, str(exc))
            return None

    def _documents(self):
        documents = {}
        for name, spec in self.doc.get("storage", {}).get("documents", {}).items():
            where = place("storage.documents", name)
            if spec["store"] not in self.definitions["kv_store"]:
                self.report.error(where + ".store", "unknown kv store %r; expected one of: %s"
                                  % (spec["store"], ", ".join(sorted(self.definitions["kv_store"]))))
            validator = None
            if "schema" in spec:
                validator = self.definitions["schema"].get(spec["schema"])
                if validator is None:
                    self.report.error(where + ".schema", "unknown schema %r; storage.schemas declares: %s"
                                      % (spec["schema"], ", ".join(sorted(self.definitions["schema"]))))
            key = self._template(spec["key_template"], where + ".key_template")
            if key is not None:
                for ref in key.refs:
                    if ref.namespace != "field":
                        self.report.error(where + ".key_template", "%s: key templates read document fields only"
                                          % ref.source)
                documents[name] = Document(name, spec["store"], key, validator)
        return documents

    def _indexes(self):
        indexes = {}
        for name, spec in self.doc.get("indexes", {}).items():
            where = place("indexes", name)
            source = self.definitions["document"].get(spec["source_document"])
            if source is None:
                self.report.error(where + ".source_document", "unknown document %r; expected one of: %s"
                                  % (spec["source_document"], ", ".join(sorted(self.definitions["document"]))))
                continue
            keys = [IndexKeyDef(name, k["name"], k["fields"], k.get("sort", []), k.get("unique", False),
                                self.out.versioning.ordering, self._row_condition(k.get("where"),
                                                                                  place(where, "keys", i, "where")))
                    for i, k in enumerate(spec["keys"])]
            indexes[name] = IndexDef(name, keys, _rowid_from(source))
        return indexes

    def _row_condition(self, spec, where):
        """A condition over an index row ({field} reads the row's fields), as ``row -> bool``."""
        if spec is None:
            return None
        try:
            predicate = compile_condition(spec, where)
        except (ConditionError, TemplateSyntaxError) as exc:
            self.report.error(getattr(exc, "place", "") or where, str(exc))
            return None
        return lambda row: predicate(RowContext(row))

    def _blob_stores(self):
        stores = {}
        for name, spec in self.doc.get("storage", {}).get("blob_stores", {}).items():
            where = place("storage.blob_stores", name)
            addressing = spec.get("addressing", {})
            if addressing.get("mode", "content_addressed") != "content_addressed":
                self.report.error(where + ".addressing.mode", "only content_addressed blob stores are supported")
            if addressing.get("digest", "sha256") != "sha256":
                self.report.error(where + ".addressing.digest", "only sha256 is supported")
            definition = BlobStoreDef(name, spec)
            template = self._template(definition.path_template, where + ".addressing.path_template")
            if template is not None:
                bad = [r.source for r in template.refs if r.namespace != "field" or r.root not in ("digest", "algo")]
                if bad or "digest" not in {r.root for r in template.refs}:
                    self.report.error(where + ".addressing.path_template",
                                      "a path template may use only {digest} (with slices) and {algo}, and must "
                                      "use {digest}")
            stores[name] = definition
        return stores

    def _event_types(self):
        types = {}
        for i, spec in enumerate(self.doc.get("events", {}).get("types", [])):
            schema = spec.get("schema", {"type": "object"})
            problem = Validator.schema_errors(schema)
            if problem:
                self.report.error(place("events.types", i, "schema"), "not a valid JSON Schema: %s" % problem)
                continue
            if spec["name"] in types:
                self.report.error(place("events.types", i, "name"), "duplicate event type %r" % spec["name"])
            types[spec["name"]] = EventType(spec["name"], Validator(schema, spec["name"]))
        return types

    def _event_log(self):
        log = self.doc.get("replication", {}).get("log", {})
        store = log.get("store", DEFAULT_LOG[0])
        if "store" in log and store not in self.definitions["kv_store"]:
            self.report.error("replication.log.store", "unknown kv store %r" % store)
        shipping = self.doc.get("replication", {}).get("shipping", {})
        batch, dedupe = shipping.get("batch", {}), shipping.get("dedupe", {})
        return EventLog(store, log.get("key_prefix", DEFAULT_LOG[1]), log.get("max_event_bytes", DEFAULT_LOG[2]),
                        batch.get("max_events", 1000), batch.get("max_bytes", 10 * 1024 * 1024),
                        dedupe.get("key", "event_id") if dedupe.get("enabled", True) else None)

    def _auth(self):
        """auth.login (password and login-token settings, login rate limits), auth.tokens (API token lifetimes),
        auth.anonymous, auth.policies."""
        auth = self.doc.get("auth", {})
        self.out.auth_settings = self._auth_settings(auth)
        self.out.login_limits = self._login_limits(dict(auth.get("login", {})))
        anonymous = auth.get("anonymous", {})
        self.out.anonymous = None
        if anonymous.get("enabled"):
            scopes = anonymous.get("scopes", ["read"])
            for i, scope in enumerate(scopes):
                if scope not in self.definitions["scope"]:
                    self.report.error(place("auth.anonymous.scopes", i), "unknown scope %r" % scope)
            self.out.anonymous = {"sub": "anonymous", "scopes": frozenset(scopes), "kind": "anonymous",
                                  "token_id": None}
        self.policies = [self._policy(policy, place("auth.policies", i))
                         for i, policy in enumerate(auth.get("policies", []))]

    def _policy(self, policy, where):
        unknown = set(policy.get("when", {})) - {"route.tags"}
        if unknown:
            self.report.error(where + ".when", "unknown policy condition(s) %s; expected route.tags"
                              % ", ".join(sorted(unknown)))
        require_ = policy.get("require", {})
        scopes = require_.get("scopes", [])
        for j, scope in enumerate(scopes):
            if scope not in self.definitions["scope"]:
                self.report.error(place(where, "require.scopes", j), "unknown scope %r" % scope)
        namespace = require_.get("namespace")
        permission = require_.get("permission", "read")
        if "permission" in require_ and namespace is None:
            self.report.error(place(where, "require.permission"), "a permission is checked on a namespace: "
                              "name the path parameter holding it in require.namespace")
        return Policy(frozenset(policy.get("when", {}).get("route.tags", [])), policy.get("effect", "allow"),
                      frozenset(scopes), namespace, permission)

    def _auth_settings(self, auth):
        """What app.auth.Identity reads: password and login-token settings, the declared scope names, and API
        token lifetimes (a default that may not exceed the maximum)."""
        login, tokens = auth.get("login", {}), auth.get("tokens", {})
        settings = {k: login[k] for k in ("min_password_length", "token_ttl_seconds") if k in login}
        settings["scopes"] = tuple(self.definitions["scope"])
        maximum = tokens.get("max_ttl_seconds", AUTH_DEFAULTS["api_token_max_ttl_seconds"])
        default = tokens.get("default_ttl_seconds", min(AUTH_DEFAULTS["api_token_default_ttl_seconds"], maximum))
        if default > maximum:
            self.report.error(place("auth.tokens", "default_ttl_seconds"), "the default API token lifetime (%d s) "
                              "is longer than max_ttl_seconds (%d s)" % (default, maximum))
        settings.update(api_token_default_ttl_seconds=default, api_token_max_ttl_seconds=maximum)
        return settings

    def _login_limits(self, login):
        """Login attempts allowed per (username, client address) pair and per client address. A schema written
        before the pair limit existed names it rate_limit_per_username, which counts per pair now too."""
        if OLD_PAIR_LIMIT in login:
            if PAIR_LIMIT in login:
                self.report.error(place("auth.login", OLD_PAIR_LIMIT), "%s is the older name of %s; give only %s"
                                  % (OLD_PAIR_LIMIT, PAIR_LIMIT, PAIR_LIMIT))
            else:
                self.report.warning(place("auth.login", OLD_PAIR_LIMIT), "counts login attempts per (username, "
                                    "client address) pair, not per username; rename it %s" % PAIR_LIMIT)
                login[PAIR_LIMIT] = login[OLD_PAIR_LIMIT]
        limits = {}
        for key, default in ((PAIR_LIMIT, "5/m"), ("rate_limit_per_address", "20/m")):
            limits[key] = login.get(key, default)
            try:
                parse_rate(limits[key])
            except ValueError as exc:
                self.report.error(place("auth.login", key), str(exc))
        return limits

    def _route_policy(self, route, where):
        """(scopes every request must hold, whether a deny policy applies, the namespace guard or None) for
        ``route``, from the policies its tags select."""
        required, denied, namespace = set(), False, None
        for policy in self.policies:
            if not policy.tags & set(route.tags):
                continue
            if policy.effect == "deny":
                denied = True
                continue
            required |= policy.scopes
            if policy.namespace in route.params and (
                    namespace is None or RANK[policy.permission] > RANK[namespace[1]]):
                namespace = (policy.namespace, policy.permission)
        guard = None
        if namespace is not None:
            guard = NamespaceGuard(namespace[0], self._param_normalizer(route, namespace[0]), namespace[1])
        elif set(route.params) & {p.namespace for p in self.policies} and (required or any(
                _scope_check(step) for step in route.pipeline.steps)):  # access-controlled, but not by namespace
            self.report.warning(where + ".tags", "the route has a {%s} path parameter but no policy checks a "
                                "namespace permission on it: once grants exist, any caller holding the route's "
                                "scopes reaches every namespace" % sorted(set(route.params) & {
                                    p.namespace for p in self.policies})[0])
        return frozenset(required), denied, guard

    def _param_normalizer(self, route, param):
        """The normalize rules the route's entity (its parse.path step's) applies to ``param``."""
        for step in route.pipeline.steps:
            if step.op == "parse.path" and step.args.entity is not None:
                for field, rules in step.args.entity.normalizers:
                    if field == param:
                        return chain(rules)
        return str

    def _caching(self):
        caching = self.doc.get("caching", {})
        return {"response": caching.get("response_cache", {}), "blob": caching.get("blob_cache", {})}

    # --- routes and pipelines ---------------------------------------------------------------------------

    def _routes(self):
        seen_ids, seen_shapes = {}, {}
        for i, spec in enumerate(self.doc["api"]["routes"]):
            where = place("api.routes", i)
            if spec["id"] in seen_ids:
                self.report.error(where + ".id", "duplicate route id %r (also %s)" % (spec["id"], seen_ids[spec["id"]]))
            seen_ids.setdefault(spec["id"], where)
            params = _PATH_PARAM.findall(spec["path"])
            bad = [p for p in params if not _IDENT.match(p)]
            if bad or len(set(params)) != len(params) or "{" in _PATH_PARAM.sub("", spec["path"]):
                self.report.error(where + ".path", "path parameters are {name} segments with distinct identifier "
                                  "names")
                continue
            shape = (spec["method"], _PATH_PARAM.sub("{}", spec["path"]))
            if shape in seen_shapes:
                self.report.error(where + ".path", "%s %s duplicates %s" % (spec["method"], spec["path"],
                                                                             seen_shapes[shape]))
            seen_shapes.setdefault(shape, where)
            if any(spec["path"] == p or spec["path"].startswith(p + "/") for p in RESERVED_PATHS):
                self.report.error(where + ".path", "paths under %s belong to Depot itself" % ", ".join(RESERVED_PATHS))
            pipeline = self._pipeline(spec["id"], spec["pipeline"], where + ".pipeline",
                                      Scope(self, params=params))
            route = Route(spec, pipeline, where, params)
            route.policy_scopes, route.denied, route.namespace_guard = self._route_policy(route, where)
            route.pipeline.guard(route.policy_scopes, route.denied, route.namespace_guard)
            if "proxy" in route.tags and not self.out.features.get("proxy_enabled", True):
                route.disabled = ("PROXY_DISABLED", "proxying is disabled (features.proxy_enabled is false)")
            route.openapi = route_operation(route)
            self.out.routes.append(route)

    def _check_shadowing(self):
        """Two routes of one method whose paths can match the same URL: the router takes, at the first segment
        where one has a literal and the other a parameter, the literal (Werkzeug's rule). The other route then
        never sees that parameter taking that literal (a namespace called 'search' beside GET /v1/search).
        That is an error unless the parameter's entity field refuses the literal anyway (a constraint,
        `reserved` for instance, or the versioning scheme): then no valid request is lost."""
        routes = [r for r in self.out.routes]
        for i, first in enumerate(routes):
            for second in routes[i + 1:]:
                shadowing = _shadowing(first, second)
                if shadowing is not None:
                    self._report_shadowing(*shadowing)

    def _report_shadowing(self, winner, loser, lost):
        """``lost``: [(position, parameter, literal)] the loser's parameters would have to take."""
        entity = _path_entity(loser)
        if entity is not None and any(param in entity.fields and not entity.accepts(param, literal)
                                      for _, param, literal in lost):
            return
        values = " and ".join("%s is %r" % (param, literal) for _, param, literal in lost)
        _, param, literal = lost[0]
        self.report.error(loser.place + ".path", "%s %s is hidden by %s %s (%s) when %s: reserve %r for %s in "
                          "the entity's constraints (%s) or change one of the paths"
                          % (loser.method, loser.path, winner.method, winner.path, winner.place, values, literal,
                             "%s.%s" % (entity.name, param) if entity else param,
                             json.dumps({"field": param, "reserved": [literal]})))

    def _apply_pipelines(self):
        replication = self.doc.get("replication", {})
        by_pipeline = {}
        for event_name, pipeline_name in replication.get("replay", {}).get("apply_pipelines", {}).items():
            where = place("replication.replay.apply_pipelines", event_name)
            if event_name not in self.definitions["event_type"]:
                self.report.error(where, "unknown event type %r" % event_name)
            elif pipeline_name not in replication.get("apply_pipelines", {}):
                self.report.error(where, "unknown apply pipeline %r" % pipeline_name)
            else:
                by_pipeline.setdefault(pipeline_name, []).append(event_name)
        for name, steps in replication.get("apply_pipelines", {}).items():
            if name not in by_pipeline:  # its fields would come from the event types it applies: there are none
                self.report.warning(place("replication.apply_pipelines", name), "no event type is applied with "
                                    "this pipeline (replication.replay.apply_pipelines); it is not compiled")
                continue
            event_types = [self.definitions["event_type"][e] for e in by_pipeline[name]]
            scope = Scope(self, event_types=event_types)
            pipeline = self._pipeline(name, steps, place("replication.apply_pipelines", name), scope)
            for event_type in event_types:
                self.out.apply_pipelines[event_type.name] = pipeline

    def _pipeline(self, name, raw_steps, where, scope):
        limit = self.out.limits.max_pipeline_ops
        if len(raw_steps) > limit:
            self.report.error(where, "pipeline has %d ops; ops.limits.max_pipeline_ops is %d" % (len(raw_steps), limit))
        steps = []
        for i, raw in enumerate(raw_steps):
            step = self._step(raw, place(where, i), scope)
            if step is not None:
                steps.append(step)
        return Pipeline(name, steps, where)

    def _step(self, raw, where, scope):
        name = raw["op"]
        decl = REGISTRY.get(name)
        if name not in self.out.allowed_ops:
            self.report.error(where + ".op", "op %r is not in ops.allowed" % name, "val.pipeline_ops_allowed")
            return None
        if decl is None:
            self.report.error(where + ".op", "op %r is not in Depot's vocabulary" % name)
            return None
        args = dict(raw.get("args", {}))
        when_spec = args.pop("when", None) or raw.get("when")
        when_place = where + (".args.when" if "when" in raw.get("args", {}) else ".when")
        when = None
        if when_spec is not None:
            refs = []
            try:
                when = compile_condition(when_spec, when_place, refs=refs)
                scope.place = when_place
                scope.uses(refs)
            except (ConditionError, TemplateSyntaxError) as exc:
                self.report.error(getattr(exc, "place", "") or when_place, str(exc))
        bound = self._bind_args(decl, args, where + ".args", scope)
        if bound is None:
            return None
        if decl.prepare is not None:
            try:
                decl.prepare(bound, scope)
            except BindError as exc:
                self.report.error(place(where, "args", exc.arg) if exc.arg else where, str(exc))
                return None
        if decl.binds is not None:
            scope.place = where
            decl.binds(scope, args)
        return Step(decl, bound, when, where)

    def _bind_args(self, decl, args, where, scope):
        ok = True
        for unknown in sorted(set(args) - set(decl.args)):
            self.report.error(place(where, unknown), "unknown argument for %s; expected: %s"
                              % (decl.name, ", ".join(decl.args) or "(none)"))
            ok = False
        bound = {}
        inputs = [(n, a) for n, a in decl.args.items() if not isinstance(a, Output)]
        outputs = [(n, a) for n, a in decl.args.items() if isinstance(a, Output)]
        for arg_name, arg in inputs + outputs:  # a step's outputs are bound after its inputs are read
            scope.place = place(where, arg_name)
            if arg_name not in args:
                if arg.required:
                    self.report.error(scope.place, "missing required argument of %s (%s)"
                                      % (decl.name, arg.describe()))
                    ok = False
                default = arg.default
                bound[arg_name] = arg.bind(default, scope) if default is not None and arg.kind == "template" \
                    else default
                continue
            try:
                bound[arg_name] = arg.bind(args[arg_name], scope)
            except BindError as exc:
                self.report.error(scope.place, str(exc))
                ok = False
        return SimpleNamespace(**bound) if ok else None


def _rowid_from(document):
    template = document.key

    class _Row:
        __slots__ = ("fields",)
        vars = {}
        principal = None
        event = None

    def rowid(row):
        view = _Row()
        view.fields = row
        return template.render(view)
    return rowid


class Scope:
    """What a pipeline has bound so far, for the load-time binding analysis (and the env ops bind against)."""

    def __init__(self, compiler, params=(), event_types=None):
        self.compiler = compiler
        self.report = compiler.report
        self.definitions = compiler.definitions
        self.params = list(params)
        self.replay = event_types is not None
        self.fields = set()
        self.body_fields = set()
        self.unknown_sources = []
        self.vars = set()
        self.json_vars = set()
        self.place = ""
        if self.replay:
            props = [set(e.validator.schema.get("properties", {})) for e in event_types]
            self.fields = set.intersection(*props) if props else set()
            if any(not e.validator.schema.get("properties") for e in event_types):
                self.unknown_sources.append("the event payload")

    # --- used by op declarations and argument kinds ---

    def compile_json_schema(self, schema):
        problem = Validator.schema_errors(schema)
        if problem:
            raise BindError("not a valid JSON Schema: %s" % problem)
        return Validator(schema)

    def binds_var(self, name):
        self.vars.add(name)

    def bind_fields(self, names):
        self.fields.update(names)

    def may_bind(self, field):
        """Whether the field can hold a value at this point of the pipeline."""
        return field in self.fields or field in self.body_fields or bool(self.unknown_sources)

    def bind_unknown(self, source):
        self.unknown_sources.append(source)

    def bind_path_params(self, entity_name):
        entity = self.definitions["entity"].get(entity_name) if entity_name else None
        if entity is not None:
            for param in self.params:
                if param not in entity.fields:
                    self.report.error(self.place + ".args.entity", "path parameter {%s} is not a field of entity %s"
                                      % (param, entity.name))
        self.fields.update(self.params)

    def bind_json_body(self, out):
        if out:
            self.json_vars.add(out)
        self.bind_unknown("the JSON body")

    def bind_body_schema(self, value, schema):
        if isinstance(value, str) and value.startswith("$") and value[1:] in self.json_vars:
            if isinstance(schema, str):
                validator = self.definitions["schema"].get(schema)
                schema = validator.schema if validator else {}
            if isinstance(schema, dict):
                self.body_fields.update(schema.get("properties", {}))

    def uses(self, refs):
        for ref in refs:
            self._check_ref(ref)

    def _check_ref(self, ref):
        if ref.namespace == "var":
            if ref.root not in self.vars:
                self.report.error(self.place, "%s can never be bound here: no earlier step outputs $%s (bound: %s)"
                                  % (ref.source, ref.root, ", ".join(sorted(self.vars)) or "none"))
        elif ref.namespace == "event":
            if not self.replay:
                self.report.error(self.place, "%s: {event.*} is bound only in replication apply pipelines"
                                  % ref.source)
        elif ref.namespace == "principal":
            if self.replay:
                self.report.error(self.place, "%s: replayed events have no principal" % ref.source)
        elif ref.root in self.fields:
            return
        elif ref.root in self.body_fields:
            self.report.warning(self.place, "%s is not a path or query field; it resolves from the parsed JSON "
                                "body (write $%s.%s to say so)" % (ref.source, next(iter(self.json_vars), "body"),
                                                                    ref.root), "bindings")
        elif self.unknown_sources:
            self.report.warning(self.place, "%s is bound only if %s carries it" % (ref.source,
                                                                                 " or ".join(self.unknown_sources)),
                                "bindings")
        elif not ref.optional:
            self.report.error(self.place, "%s can never be bound: fields bound here are %s"
                              % (ref.source, ", ".join(sorted(self.fields)) or "none"))
