"""Schema -> compiled routes and pipelines, checked on the way. Runs once per schema load.

load (JSON; route packs embedded, app.engine.packs) -> shape check (metaschema) -> packs merged -> definitions ->
routes and pipelines (each step bound to its op, templates parsed, references resolved, bindings analysed) ->
schema-level checks (app.engine.checks).
Every problem is recorded in the Report with its place; the schema is servable only if no error was found.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Optional

import jsonschema

from app.engine import checks, packs
from app.engine.binding import Scope
from app.engine.error_bodies import ErrorBody, ErrorBodyError, compile_error_body
from app.engine.compiled import PATH_PARAM, CompiledSchema, Definitions, Pipeline, Route, Step, split_param
from app.engine.conditions import ConditionError, compile_condition
from app.engine.definitions import (BlobStoreDef, Constraint, Document, Entity, EventLog, EventType, FieldsOnly,
                                    Limits, Upstream, Validator, Versioning, compile_normalizer, UploadSessionsDef)
from app.identity.auth import DEFAULTS as AUTH_DEFAULTS
from app.errors import SchemaLoadError
from app.engine.expr import Ref, Template, TemplateSyntaxError, parse_template
from app.engine.metaschema import METASCHEMA
from app.engine.opspec import BindError, OpDecl, Output, load_vocabulary, unknown_ref_message
from app.engine.policies import Policy, read_policies, read_route_challenge, route_policy
from app.identity.ratelimit import parse_rate
from app.engine.rows import RowContext
from app.engine.report import Report, place
from app.engine.runner import compile_pipeline
from app.engine.shadowing import check_shadowing
from app.engine.versions import SCHEMES, VersionScheme
from app.stores.interfaces import IndexDef, IndexKeyDef
from app.stores.registry import REGISTRY as STORE_KINDS

_PATH_PARAM = PATH_PARAM
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_LOG = ("_depot", "eventlog/", 262144)
PAIR_LIMIT = "rate_limit_per_username_and_address"
OLD_PAIR_LIMIT = "rate_limit_per_username"
RESERVED_PATHS = ("/auth", "/admin", "/health", "/openapi.json", "/docs")
SchemaDoc = dict[str, Any]  # a schema document, parsed JSON


def _rule_param(match: re.Match[str]) -> str:
    """A path parameter in Werkzeug's rule syntax: {name} -> <name>, {name:path} -> <path:name>."""
    name, kind = split_param(match.group(1))
    return "<%s:%s>" % (kind, name) if kind else "<%s>" % name


def schema_digest(doc: Any) -> str:
    """A schema's identity, the one /health, /openapi.json and /admin/schema show: SHA-256 over its canonical
    JSON (keys sorted, no spaces), so neither key order nor spacing makes two equal schemas differ."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_schema_file(path: str, embed_packs: bool = True) -> Any:
    """The schema in ``path``, each of its route packs' files (relative to the schema file's directory) embedded
    in its entry (app.engine.packs.embed; PackFileError, a ValueError, when one cannot be read). Without
    ``embed_packs``: the file as written (to edit it)."""
    with open(path, "rb") as handle:
        doc = json.load(handle)
    return packs.embed(doc, os.path.dirname(os.path.abspath(path))) if embed_packs else doc


def compile_schema(doc: Any, source: str = "schema") -> tuple[CompiledSchema | None, Report]:
    """Check and compile; returns (CompiledSchema or None, Report)."""
    report = Report(source)
    if not isinstance(doc, dict):
        report.error("", "a schema is a JSON object")
        return None, report
    for error in jsonschema.Draft202012Validator(METASCHEMA).iter_errors(doc):
        report.error(place(*error.absolute_path), "%s (schema shape)" % error.message)
    if not report.ok:
        return None, report
    merged = packs.merge(doc, report)
    if report.errors:  # a pack's shape, or a name defined twice
        return None, report
    compiled = Compiler(merged, report, load_vocabulary(), schema_digest(doc)).compile()
    return (compiled if report.ok else None), report


def compile_or_raise(doc: Any, source: str = "schema") -> CompiledSchema:
    compiled, report = compile_schema(doc, source)
    if compiled is None:
        raise SchemaLoadError(report)
    return compiled


class Compiler:
    """One schema's compilation: the definitions, then the routes and apply pipelines that use them, then the
    schema-level checks; ``compile`` returns the CompiledSchema (servable only if the report has no error)."""

    def __init__(self, doc: SchemaDoc, report: Report, ops: Mapping[str, OpDecl], sha256: str | None = None) -> None:
        """``doc``: the schema with its packs merged; ``sha256``: the digest of the schema as written (default:
        ``doc``'s)."""
        self.doc = doc
        self.sha256 = sha256 or schema_digest(doc)
        self.ops = ops  # the op vocabulary, given (app.engine.opspec.load_vocabulary)
        self.report = report
        self.limits = Limits(doc["ops"].get("limits"))
        self.features = dict(doc.get("features", {}))
        self.versioning = self._versioning(doc.get("entities", {}).get("versioning"), "entities.versioning")
        self.shared_versioning: Versioning | None = self.versioning  # set from the entities (_entities)
        self.versioned_differently = ""  # which entity versions how, when they differ (for findings)
        self.allowed_ops = frozenset(doc["ops"]["allowed"])
        self.definitions: Definitions = {}

    def compile(self) -> CompiledSchema:
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
        self.definitions["entity"] = self._entities(self.versioning)
        self.definitions["document"] = self._documents()
        self.definitions["index"] = self._indexes()
        self.definitions["blob_store"] = self._blob_stores()
        self.definitions["upload_sessions"] = self._upload_sessions()
        self.definitions["upstream"] = {n: Upstream(n, s) for n, s in self.doc.get("upstreams", {}).items()}
        self.definitions["event_type"] = self._event_types()
        event_log = self._event_log()
        auth = self.doc.get("auth", {})
        auth_settings, login_limits = self._auth_settings(auth), self._login_limits(dict(auth.get("login", {})))
        anonymous = self._anonymous(auth)
        policies = read_policies(auth, self.definitions["scope"], self.report)
        for name in sorted(self.allowed_ops - set(self.ops)):
            self.report.error("ops.allowed", "op %r is not in Depot's vocabulary" % name)
        routes = self._routes(policies)
        check_shadowing(routes, self.report)
        apply_pipelines = self._apply_pipelines()
        runtime = checks.run_all(checks.Subject(self.doc, self.definitions, routes, apply_pipelines), self.report)
        return CompiledSchema(
            doc=self.doc, report=self.report, sha256=self.sha256, limits=self.limits,
            features=self.features, versioning=self.versioning, definitions=self.definitions, event_log=event_log,
            caching=self._caching(), auth_settings=auth_settings, login_limits=login_limits, anonymous=anonymous,
            allowed_ops=self.allowed_ops, routes=routes, apply_pipelines=apply_pipelines, runtime=runtime)

    # --- definitions ------------------------------------------------------------------------------------

    def _schemas(self) -> dict[str, Validator]:
        validators = {}
        for name, schema in self.doc.get("storage", {}).get("schemas", {}).items():
            problem = Validator.schema_errors(schema)
            if problem:
                self.report.error(place("storage.schemas", name), "not a valid JSON Schema: %s" % problem)
            else:
                validators[name] = Validator(schema, name)
        return validators

    def _versioning(self, spec: Mapping[str, Any] | None, where: str) -> Versioning:
        """A versioning declaration (`entities.versioning` or an entity's own); an unknown scheme or ordering is
        reported there (and semver stands in, so the rest still compiles)."""
        spec = spec or {}
        scheme = SCHEMES.get(spec.get("scheme", "semver"))
        if scheme is None:
            self.report.error(place(where, "scheme"), "unknown versioning scheme %r; expected one of: %s"
                              % (spec["scheme"], ", ".join(sorted(SCHEMES))))
            scheme = SCHEMES["semver"]
        ordering = spec.get("ordering", scheme.name)
        if ordering not in SCHEMES:
            self.report.error(place(where, "ordering"), "unknown version ordering %r; expected a scheme: %s"
                              % (ordering, ", ".join(sorted(SCHEMES))))
            ordering = scheme.name
        return Versioning(scheme, ordering, spec.get("allow_prerelease", True), where)

    def _shared_versioning(self, entities: Mapping[str, Entity]) -> Versioning | None:
        """The versioning of every entity with a `version` field (`entities.versioning` when none has one), which
        indexes and conditions naming no entity follow; None when the entities version differently."""
        by_kind: dict[tuple[str, str], Versioning] = {}
        for entity in entities.values():
            if "version" in entity.fields:
                by_kind.setdefault((entity.versioning.scheme.name, entity.versioning.ordering), entity.versioning)
        if len(by_kind) > 1:
            self.versioned_differently = ", ".join(
                "%s: %s" % (e.name, e.versioning.scheme.name if e.versioning.ordering == e.versioning.scheme.name
                            else "%s ordered as %s" % (e.versioning.scheme.name, e.versioning.ordering))
                for e in entities.values() if "version" in e.fields)
            return None
        return next(iter(by_kind.values()), self.versioning)

    def _entities(self, versioning: Versioning) -> dict[str, Entity]:
        entities = {}
        for name, spec in self.doc.get("entities", {}).items():
            if name == "versioning":
                continue
            where = place("entities", name)
            own = self._versioning(spec["versioning"], where + ".versioning") if "versioning" in spec else versioning
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
            entities[name] = Entity(name, spec["fields"], normalizers, constraints, own)
        self.shared_versioning = self._shared_versioning(entities)
        return entities

    def _template(self, source: str, where: str) -> Template | None:
        try:
            template: Template = parse_template(source)
        except TemplateSyntaxError as exc:
            self.report.error(where, str(exc))
            return None
        return template

    def _documents(self) -> dict[str, Document]:
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

    def _indexes(self) -> dict[str, IndexDef]:
        indexes = {}
        for name, spec in self.doc.get("indexes", {}).items():
            where = place("indexes", name)
            source = self.definitions["document"].get(spec["source_document"])
            if source is None:
                self.report.error(where + ".source_document", "unknown document %r; expected one of: %s"
                                  % (spec["source_document"], ", ".join(sorted(self.definitions["document"]))))
                continue
            versioning = self._index_versioning(spec, where)
            scheme = versioning.scheme if versioning is not None else None
            ordering = versioning.ordering if versioning is not None else "semver"
            keys = [IndexKeyDef(name, k["name"], k["fields"], k.get("sort", []), k.get("unique", False), ordering,
                                self._row_condition(k.get("where"), place(where, "keys", i, "where"), scheme))
                    for i, k in enumerate(spec["keys"])]
            indexes[name] = IndexDef(name, keys, _rowid_from(source), scheme.name if scheme is not None else None,
                                     self._text_fields(spec.get("text"), place(where, "text")))
        return indexes

    def _text_fields(self, spec: Mapping[str, Any] | None, where: str) -> list[str] | None:
        """An index's text search fields (app/stores/text.py), each named once."""
        if spec is None:
            return None
        fields: list[str] = []
        for i, field in enumerate(spec["fields"]):
            if field in fields:
                self.report.error(place(where, "fields", i), "field %r is already a text field" % field)
            else:
                fields.append(field)
        return fields

    def _index_versioning(self, spec: Mapping[str, Any], where: str) -> Versioning | None:
        """The versioning an index's rows follow: its `entity`'s, else the one the entities share. None (reported
        when a key sorts by version) when it names no entity and the entities version differently."""
        name = spec.get("entity")
        if name is None:
            if self.shared_versioning is None and any(
                    s.partition(":")[0] == "version" for k in spec["keys"] for s in k.get("sort", [])):
                self.report.error(where + ".entity", "a key sorts by version and the entities version differently "
                                  "(%s): name the entity whose versions this index holds" % self.versioned_differently)
            return self.shared_versioning
        entity: Entity | None = self.definitions["entity"].get(name)
        if entity is None:
            self.report.error(where + ".entity", "unknown entity %r; expected one of: %s"
                              % (name, ", ".join(sorted(self.definitions["entity"]))))
            return self.shared_versioning
        return entity.versioning

    def _no_scheme(self, what: str) -> str:
        return "%s, and the entities version differently (%s)" % (what, self.versioned_differently)

    def _row_condition(self, spec: Any, where: str,
                       scheme: VersionScheme | None) -> Callable[[dict[str, Any]], bool] | None:
        """A condition over an index row ({field} reads the row's fields), as ``row -> bool``."""
        if spec is None:
            return None
        try:
            predicate = compile_condition(spec, where, scheme=scheme,
                                          no_scheme=self._no_scheme("the index names no entity"))
        except (ConditionError, TemplateSyntaxError) as exc:
            self.report.error(getattr(exc, "place", "") or where, str(exc))
            return None
        return lambda row: predicate(RowContext(row))

    def _blob_stores(self) -> dict[str, BlobStoreDef]:
        stores = {}
        for name, spec in self.doc.get("storage", {}).get("blob_stores", {}).items():
            where = place("storage.blob_stores", name)
            addressing = spec.get("addressing", {})
            if addressing.get("mode", "content_addressed") != "content_addressed":
                self.report.error(where + ".addressing.mode", "only content_addressed blob stores are supported")
            if addressing.get("digest", "sha256") != "sha256":
                self.report.error(where + ".addressing.digest", "only sha256 is supported")
            definition = BlobStoreDef(name, spec, self._local_cache_bytes())
            template = self._template(definition.path_template, where + ".addressing.path_template")
            if template is not None:
                bad = [r.source for r in template.refs
                       if r.namespace != "field" or r.root not in ("digest", "algo") or r.filters]
                if bad or "digest" not in {r.root for r in template.refs}:
                    self.report.error(where + ".addressing.path_template",
                                      "a path template may use only {digest} (with slices) and {algo}, without "
                                      "filters, and must use {digest}")
            stores[name] = definition
        return stores

    def _upload_sessions(self) -> dict[str, UploadSessionsDef]:
        sessions = {}
        for name, spec in self.doc.get("storage", {}).get("upload_sessions", {}).items():
            definition = UploadSessionsDef(name, spec)
            if definition.blob_store not in self.definitions["blob_store"]:
                self.report.error(place("storage.upload_sessions", name, "blob_store"), unknown_ref_message(
                    "blob_store", definition.blob_store, self.definitions["blob_store"]))
                continue
            sessions[name] = definition
        return sessions

    def _event_types(self) -> dict[str, EventType]:
        types: dict[str, EventType] = {}
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

    def _event_log(self) -> EventLog:
        log = self.doc.get("replication", {}).get("log", {})
        store = log.get("store", DEFAULT_LOG[0])
        if "store" in log and store not in self.definitions["kv_store"]:
            self.report.error("replication.log.store", "unknown kv store %r" % store)
        shipping = self.doc.get("replication", {}).get("shipping", {})
        batch, dedupe = shipping.get("batch", {}), shipping.get("dedupe", {})
        return EventLog(store, log.get("key_prefix", DEFAULT_LOG[1]), log.get("max_event_bytes", DEFAULT_LOG[2]),
                        batch.get("max_events", 1000), batch.get("max_bytes", 10 * 1024 * 1024),
                        dedupe.get("key", "event_id") if dedupe.get("enabled", True) else None)

    def _anonymous(self, auth: dict[str, Any]) -> dict[str, Any] | None:
        """auth.anonymous: the principal of requests without credentials, or None when it is off."""
        anonymous = auth.get("anonymous", {})
        if not anonymous.get("enabled"):
            return None
        scopes = anonymous.get("scopes", ["read"])
        for i, scope in enumerate(scopes):
            if scope not in self.definitions["scope"]:
                self.report.error(place("auth.anonymous.scopes", i), "unknown scope %r" % scope)
        return {"sub": "anonymous", "scopes": frozenset(scopes), "kind": "anonymous", "token_id": None}

    def _auth_settings(self, auth: dict[str, Any]) -> dict[str, Any]:
        """What app.identity.auth.Identity reads: password and login-token settings, the declared scope names, and API
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

    def _login_limits(self, login: dict[str, Any]) -> dict[str, str]:
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

    def _local_cache_bytes(self) -> Optional[int]:
        """caching.blob_cache's bound, when it is enabled with one: remote blob stores keep a local disk cache."""
        blob_cache = self.doc.get("caching", {}).get("blob_cache", {})
        bound = blob_cache.get("max_bytes")
        return bound if blob_cache.get("enabled", False) and isinstance(bound, int) and bound > 0 else None

    def _caching(self) -> dict[str, dict[str, Any]]:
        caching = self.doc.get("caching", {})
        return {"response": caching.get("response_cache", {}), "blob": caching.get("blob_cache", {})}

    # --- routes and pipelines ---------------------------------------------------------------------------

    def _routes(self, policies: list[Policy]) -> tuple[Route, ...]:
        routes = []
        seen_ids: dict[str, str] = {}
        seen_shapes: dict[tuple[str, str], str] = {}
        for i, spec in enumerate(self.doc["api"]["routes"]):
            where = place("api.routes", i)
            if spec["id"] in seen_ids:
                self.report.error(where + ".id", "duplicate route id %r (also %s)"
                                  % (spec["id"], self.report.display(seen_ids[spec["id"]])))
            seen_ids.setdefault(spec["id"], where)
            declared = [split_param(p) for p in _PATH_PARAM.findall(spec["path"])]
            params = [name for name, _ in declared]
            bad = [name for name, kind in declared if not _IDENT.match(name) or kind not in ("", "path")]
            if bad or len(set(params)) != len(params) or "{" in _PATH_PARAM.sub("", spec["path"]):
                self.report.error(where + ".path", "path parameters are {name} (one segment) or {name:path} "
                                  "(one or more segments) with distinct identifier names")
                continue
            shape = (spec["method"], _PATH_PARAM.sub(lambda m: "{%s}" % split_param(m.group(1))[1],
                                                      spec["path"]))
            if shape in seen_shapes:
                self.report.error(where + ".path", "%s %s duplicates %s" % (
                    spec["method"], spec["path"], self.report.display(seen_shapes[shape])))
            seen_shapes.setdefault(shape, where)
            if any(spec["path"] == p or spec["path"].startswith(p + "/") for p in RESERVED_PATHS):
                self.report.error(where + ".path", "paths under %s belong to Depot itself" % ", ".join(RESERVED_PATHS))
            routes.append(self._route(spec, where, params, policies))
        return tuple(routes)

    def _route(self, spec: dict[str, Any], where: str, params: list[str], policies: list[Policy]) -> Route:
        """The route of ``spec``: its steps, the policies its tags select, its runner, its OpenAPI operation."""
        tags = tuple(spec.get("tags", []))
        steps = self._steps(spec["pipeline"], where + ".pipeline", Scope(self.report, self.definitions, params))
        own = read_route_challenge(spec["challenge"], where + ".challenge", params, self.report) \
            if "challenge" in spec else None
        error_body = self._error_body(spec["error_body"], where + ".error_body") if "error_body" in spec else None
        resource = self._resource(spec["resource"], where + ".resource", params) if "resource" in spec else None
        policy = route_policy(policies, tags, params, steps, where, self.report, own, resource)
        disabled = None
        if "proxy" in tags and not self.features.get("proxy_enabled", True):
            disabled = ("PROXY_DISABLED", "proxying is disabled (features.proxy_enabled is false)")
        route = Route(id=spec["id"], method=spec["method"], path=spec["path"],
                      rule=_PATH_PARAM.sub(_rule_param, spec["path"]), params=tuple(params),
                      spans=tuple(name for name, kind in map(split_param, _PATH_PARAM.findall(spec["path"]))
                                  if kind == "path"),
                      tags=tags, description=spec.get("description", ""), spec=spec, place=where,
                      pipeline=compile_pipeline(spec["id"], steps, where + ".pipeline", policy), policy=policy,
                      disabled=disabled, error_body=error_body)
        return route

    def _resource(self, value: Any, where: str, params: list[str]) -> Template | None:
        """A route's `resource`: what it acts on, as a template of its path parameters."""
        template = self._template(value, where) if isinstance(value, str) else None
        if template is None:
            self.report.error(where, "a route's resource is a string template of its path parameters")
            return None
        if not template.refs or any(r.namespace != "field" or r.root not in params for r in template.refs):
            self.report.error(where, "a route's resource reads its path parameters only (e.g. "
                              "\"{namespace}/{repo}\")")
            return None
        return template

    def _error_body(self, value: Any, where: str) -> ErrorBody | None:
        try:
            return compile_error_body(value)
        except ErrorBodyError as exc:
            self.report.error(where, str(exc))
            return None

    def _apply_pipelines(self) -> dict[str, Pipeline]:
        """event type -> the pipeline replaying it (replication.replay.apply_pipelines)."""
        replication = self.doc.get("replication", {})
        by_pipeline: dict[str, list[str]] = {}
        pipelines: dict[str, Pipeline] = {}
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
            where = place("replication.apply_pipelines", name)
            scope = Scope(self.report, self.definitions, event_types=event_types)
            pipeline = compile_pipeline(name, self._steps(steps, where, scope), where)
            for event_type in event_types:
                pipelines[event_type.name] = pipeline
        return pipelines

    def _steps(self, raw_steps: list[dict[str, Any]], where: str, scope: Scope) -> list[Step]:
        """A pipeline's steps, bound in order (the binding analysis follows them); a step that fails to bind is
        reported and left out."""
        limit = self.limits.max_pipeline_ops
        if len(raw_steps) > limit:
            self.report.error(where, "pipeline has %d ops; ops.limits.max_pipeline_ops is %d" % (len(raw_steps), limit))
        steps = []
        for i, raw in enumerate(raw_steps):
            step = self._step(raw, place(where, i), scope)
            if step is not None:
                steps.append(step)
        return steps

    def _step(self, raw: dict[str, Any], where: str, scope: Scope) -> Step | None:
        name = raw["op"]
        decl = self.ops.get(name)
        if name not in self.allowed_ops:
            self.report.error(where + ".op", "op %r is not in ops.allowed" % name, "val.pipeline_ops_allowed")
            return None
        if decl is None:
            self.report.error(where + ".op", "op %r is not in Depot's vocabulary" % name)
            return None
        args = dict(raw.get("args", {}))
        when_spec = args.pop("when", None) or raw.get("when")
        when_place = where + (".args.when" if "when" in raw.get("args", {}) else ".when")
        when: Callable[[Any], Any] | None = None
        if when_spec is not None:
            refs: list[Ref] = []
            try:
                shared = self.shared_versioning
                when = compile_condition(when_spec, when_place, refs=refs,
                                         scheme=shared.scheme if shared is not None else None,
                                         no_scheme=self._no_scheme("a step's condition follows no entity"))
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

    def _bind_args(self, decl: OpDecl, args: dict[str, Any], where: str, scope: Scope) -> SimpleNamespace | None:
        ok = True
        for unknown in sorted(set(args) - set(decl.args)):
            self.report.error(place(where, unknown), "unknown argument for %s; expected: %s"
                              % (decl.name, ", ".join(decl.args) or "(none)"))
            ok = False
        bound: dict[str, Any] = {}
        inputs = [(n, a) for n, a in decl.args.items() if not isinstance(a, Output)]
        outputs = [(n, a) for n, a in decl.args.items() if isinstance(a, Output) and not a.per_item]
        items = [(n, a) for n, a in decl.args.items() if isinstance(a, Output) and a.per_item]
        # a step's outputs are bound after its inputs are read; a variable bound to each item of a list the step
        # walks (kv.get's `as`) is read by its inputs, so it comes first
        for arg_name, arg in items + inputs + outputs:
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


def _rowid_from(document: Document) -> Callable[[dict[str, Any]], str]:
    """An index row's id: its source document's key template rendered over the row's fields."""
    template = document.key

    def rowid(row: dict[str, Any]) -> str:
        key: str = template.render(FieldsOnly(row))
        return key
    return rowid
