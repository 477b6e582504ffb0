"""Compiled definitions of the schema's named objects: entities, JSON schemas, documents, upstreams, events.

Each is built once at load; ops receive them already resolved.
"""
import re
from functools import partial
from operator import methodcaller
from typing import Callable, Iterable, Mapping, Optional, Sequence

import jsonschema

from app.engine.body import MAX_JSON_DEPTH
from app.engine.codegen import FunctionBuilder, enabled as generating, literal
from app.engine.expr import Template, parse_template
from app.engine.filters import ascii_lower, ascii_upper
from app.engine.versions import DEFAULT_SCHEME, SCHEMES, VersionScheme
from app.errors import DepotError, bad_request
from app.stores.interfaces import JsonValue

Normalizer = Callable[[str], str]  # one compiled normalize rule


class Validator:
    """A JSON Schema compiled once; ``check`` raises a DepotError naming the offending field."""

    def __init__(self, schema: dict[str, JsonValue], name: str = "") -> None:
        self.schema = schema
        self.name = name
        self._validator = jsonschema.Draft202012Validator(schema)

    @staticmethod
    def schema_errors(schema: JsonValue) -> Optional[str]:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            message: str = exc.message
            return message
        return None

    def check(self, value: JsonValue, code: str, status: int) -> None:
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return
        path: list[str | int] = list(error.absolute_path)
        if error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            path = path + missing[:1]
        field = ".".join(str(p) for p in path) or None
        what = ("%s: " % self.name) if self.name else ""
        raise DepotError(code, status, "%s%s" % (what, error.message), field)


# --- entities -----------------------------------------------------------------------------------------------

NORMALIZERS: dict[str, Callable[..., Normalizer]] = {}  # name -> factory taking the rule's ':' parameters


def normalizer(name: str) -> Callable[[Callable[..., Normalizer]], Callable[..., Normalizer]]:
    def register(fn: Callable[..., Normalizer]) -> Callable[..., Normalizer]:
        NORMALIZERS[name] = fn
        return fn
    return register


# The built-in rules change ASCII characters only. Unicode case mapping and whitespace would fold look-alikes into
# ASCII (the Kelvin sign K lower-cases to "k", U+017F long s upper-cases to "S"), so a name the entity's
# constraints would refuse could pass them once normalized; left as they are, such characters meet the
# constraints and are refused there. (The template filters lower and upper are the same two functions.)
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_ASCII_SPACE_RUN = re.compile("[%s]+" % re.escape(_ASCII_SPACE))


# methodcallers, not lambdas: a request normalizes each field, and a C call costs no Python frame (ascii_lower and
# ascii_upper are functions: see app.engine.filters)
@normalizer("trim")
def _trim() -> Normalizer:
    return methodcaller("strip", _ASCII_SPACE)


@normalizer("lower")
def _lower() -> Normalizer:
    return ascii_lower


@normalizer("upper")
def _upper() -> Normalizer:
    return ascii_upper


@normalizer("replace")
def _replace(old: str, new: str) -> Normalizer:
    return methodcaller("replace", old, new)


@normalizer("collapse_whitespace")
def _collapse() -> Normalizer:
    return lambda value: _ASCII_SPACE_RUN.sub(" ", value).strip(" ")


@normalizer("pep440")
def _pep440() -> Normalizer:
    """A PEP 440 version in its normal form (1.0-RC1 -> 1.0rc1, v1.0 -> 1.0), so two spellings of one version are
    one key; anything else is left as it is, for validate.entity to refuse."""
    parse = SCHEMES["pep440"].parse
    return lambda value: str(parsed) if (parsed := parse(value)) is not None else value


def chain(rules: Sequence[Normalizer]) -> Normalizer:
    """One function applying ``rules`` in order: ``rules[-1](...rules[0](value))``, generated as one expression."""
    if len(rules) == 1:
        return rules[0]
    if not generating():
        return partial(_apply_in_order, tuple(rules))
    builder = FunctionBuilder("normalize", "value")
    builder.line("return " + _nested_calls(builder, rules, "value"))
    normalize: Normalizer = builder.build()
    normalize.rules = tuple(rules)  # type: ignore[attr-defined]  # for fields_normalizer to write out in place
    return normalize


def _nested_calls(builder: FunctionBuilder, rules: Sequence[Normalizer], value: str) -> str:
    """``rules[-1](...rules[0](value))`` as an expression, each rule bound as a global of ``builder``."""
    for rule in rules:
        value = "%s(%s)" % (builder.bind(rule, "rule"), value)
    return value


def fields_normalizer(normalizers: Sequence[tuple[str, Normalizer]]) -> Callable[[dict[str, JsonValue]], None]:
    """One function normalizing, in place, each named field holding a string: ``[(field, normalize), ...]``,
    generated as one statement per field (the loop, without generation)."""
    if not generating():
        return partial(_normalize_fields, tuple(normalizers))
    builder = FunctionBuilder("normalize_fields", "fields")
    for name, normalize in normalizers:
        value = builder.local()
        builder.line("%s = fields.get(%s)" % (value, literal(name)))
        builder.line("if isinstance(%s, str):" % value)
        rules = getattr(normalize, "rules", (normalize,))  # a generated chain's rules, called here: one frame less
        builder.line("fields[%s] = %s" % (literal(name), _nested_calls(builder, rules, value)), 1)
    if not normalizers:
        builder.line("pass")
    normalize_fields: Callable[[dict[str, JsonValue]], None] = builder.build()
    return normalize_fields


def _normalize_fields(normalizers: Sequence[tuple[str, Normalizer]], fields: dict[str, JsonValue]) -> None:
    """``fields_normalizer`` without generated code."""
    for name, normalize in normalizers:
        value = fields.get(name)
        if isinstance(value, str):
            fields[name] = normalize(value)


def _apply_in_order(rules: Sequence[Normalizer], value: str) -> str:
    """``chain`` without generated code."""
    for rule in rules:
        value = rule(value)
    return value


def compile_normalizer(spec: str) -> Normalizer:
    """'replace:_:-' -> a function; raises ValueError naming what was expected."""
    name, *params = spec.split(":")
    factory = NORMALIZERS.get(name)
    if factory is None:
        raise ValueError("unknown normalize rule %r; expected one of: %s" % (name, ", ".join(sorted(NORMALIZERS))))
    try:
        return factory(*params)
    except TypeError:
        raise ValueError("normalize rule %r takes a different number of ':' parameters" % spec) from None


class Versioning:
    """An entity's versioning, read at load (app.engine.compiler): its ``scheme`` (what a version is, which are
    pre-releases), the ``ordering`` its index keys sort `version` by (a scheme name, by default its own), and
    whether pre-releases are accepted. ``where`` is the schema place that declared it."""

    def __init__(self, scheme: VersionScheme = DEFAULT_SCHEME, ordering: Optional[str] = None,
                 allow_prerelease: bool = True, where: str = "entities.versioning") -> None:
        self.scheme = scheme
        self.ordering = ordering or scheme.name
        self.allow_prerelease = allow_prerelease
        self.where = where
        # latest_policy is carried out by the schema's own routes and indexes (see OPERATIONS.md), not here

    def check(self, version: str) -> None:
        parsed = self.scheme.parse(version)
        if parsed is None:
            raise DepotError("INVALID_VERSION", 400, "version %r is not %s" % (version, self.scheme.expected),
                             "version")
        if not self.allow_prerelease and self.scheme.prerelease_of(parsed):
            raise DepotError("PRERELEASE_NOT_ALLOWED", 400, "pre-release versions are not accepted "
                             "(%s.allow_prerelease is false)" % self.where, "version")


class Constraint:
    def __init__(self, field: str, regex: Optional[str] = None, when_present: bool = False,
                 min_length: Optional[int] = None, max_length: Optional[int] = None,
                 enum: Optional[list[JsonValue]] = None, reserved: Optional[Iterable[str]] = None,
                 code: str = "INVALID_FIELD") -> None:
        self.field = field
        self.reserved = frozenset(reserved or ())  # values a route's literal path segment takes (see checker)
        self.regex = re.compile(regex) if regex is not None else None
        self.pattern = regex
        self.code = code  # the error code of a value it refuses (a protocol's own: OCI's NAME_INVALID, TAG_INVALID)
        # every constraint applies only to a field that is present, the only behaviour (a false when_present is
        # reported at load, app/engine/schema_keys.py): the key is accepted and not kept
        del when_present
        self.min_length, self.max_length, self.enum = min_length, max_length, enum
        # most constraints are a regex alone: the other tests are skipped together, decided here
        self._more = (min_length is not None or max_length is not None or enum is not None
                      or bool(self.reserved))
        self.regex_alone = not self._more  # a string its regex (if it has one) matches passes

    def check(self, value: JsonValue) -> None:
        if not isinstance(value, str):
            raise self._refused("%s must be a string" % self.field)
        if self.regex is not None and not self.regex.match(value):
            raise self._refused("%s must match %s" % (self.field, self.pattern))
        if self._more:
            self._check_more(value)

    def _check_more(self, value: str) -> None:
        if self.min_length is not None and len(value) < self.min_length or \
                self.max_length is not None and len(value) > self.max_length:
            raise self._refused("%s must be %s to %s characters long" % (self.field, self.min_length, self.max_length))
        if self.enum is not None and value not in self.enum:
            raise self._refused("%s must be one of %s" % (self.field, self.enum))
        if value in self.reserved:
            raise self._refused("%s %r is reserved: a route's path uses it" % (self.field, value))

    def _refused(self, message: str) -> DepotError:
        return DepotError(self.code, 400, message, self.field)


class Entity:
    def __init__(self, name: str, fields: dict[str, JsonValue], normalizers: list[tuple[str, list[Normalizer]]],
                 constraints: list[Constraint], versioning: Versioning) -> None:
        self.name = name
        self.fields = fields
        self.normalizers = normalizers  # [(field, [fn, ...])]
        self.constraints = constraints
        self.versioning = versioning

    def accepts(self, field: str, value: str) -> bool:
        """Whether ``value``, as a path segment bound to ``field``, passes the field's normalize rules, constraints
        and (for the version) the versioning scheme."""
        for name, rules in self.normalizers:
            if name == field:
                value = chain(rules)(value)
        try:
            self.checker(lambda name: name == field)({field: value})
        except DepotError:
            return False
        return True

    def checker(self, may_bind: Callable[[str], bool]) -> Callable[[Mapping[str, JsonValue]], None]:
        """A validator over the fields ``may_bind`` admits: a route checks only what it can have bound."""
        constraints = [c for c in self.constraints if may_bind(c.field)]
        versioning = self.versioning if "version" in self.fields and may_bind("version") else None
        if generating():
            return _generated_checker(constraints, versioning)

        def check(values: Mapping[str, JsonValue]) -> None:
            for constraint in constraints:
                value = values.get(constraint.field)
                if value is not None:
                    constraint.check(value)
            if versioning is not None:
                version = values.get("version")
                if isinstance(version, str):
                    versioning.check(version)
        return check


def _generated_checker(constraints: Sequence[Constraint],
                       versioning: Optional[Versioning]) -> Callable[[Mapping[str, JsonValue]], None]:
    """Entity.checker's check as straight-line code: each constraint's field read and checked in turn."""
    builder = FunctionBuilder("check_fields", "values")
    for constraint in constraints:
        value = builder.local()
        builder.line("%s = values.get(%s)" % (value, literal(constraint.field)))
        if constraint.regex is not None and constraint.regex_alone:
            # a regex alone (the usual constraint): a string it matches passes here, anything else is left to
            # the constraint's own check, which refuses it as it would have
            builder.line("if %s is not None and not (%s.__class__ is str and %s(%s)):" % (
                value, value, builder.bind(constraint.regex.match, "match"), value))
        else:
            builder.line("if %s is not None:" % value)
        builder.line("%s(%s)" % (builder.bind(constraint.check, "constraint"), value), 1)
    if versioning is not None:
        builder.line("version = values.get('version')")
        builder.line("if isinstance(version, str):")
        builder.line("%s(version)" % builder.bind(versioning.check, "versioning"), 1)
    if len(builder.lines) == 0:
        builder.line("pass")
    check: Callable[[Mapping[str, JsonValue]], None] = builder.build()
    return check


class Document:
    def __init__(self, name: str, store: str, key: Template, validator: Optional[Validator]) -> None:
        self.name = name
        self.store = store
        self.key = key  # compiled key_template
        self.validator = validator

    def check(self, value: JsonValue) -> None:
        if self.validator is not None:
            self.validator.check(value, "DOCUMENT_INVALID", 400)


class EventType:
    def __init__(self, name: str, validator: Validator) -> None:
        self.name = name
        self.validator = validator

    def check(self, payload: JsonValue, code: str, status: int) -> None:
        self.validator.check(payload, code, status)


class Upstream:
    DEFAULT_CONNECT_MS, DEFAULT_READ_MS = 5000, 30000

    def __init__(self, name: str, spec: dict[str, JsonValue]) -> None:
        self.name = name
        self.base_url = spec["base_url"].rstrip("/")
        timeouts = spec.get("timeouts_ms", {})
        self.timeout = (timeouts.get("connect", self.DEFAULT_CONNECT_MS) / 1000.0,
                        timeouts.get("read", self.DEFAULT_READ_MS) / 1000.0)
        retry = spec.get("retry", {})
        self.max_attempts = max(1, retry.get("max_attempts", 1))
        self.backoff = retry.get("backoff_ms", 0) / 1000.0
        self.auth_mode = spec.get("auth", {}).get("mode", "none")


class BlobStoreDef:
    """A schema's storage.blob_stores.<name>. ``local_cache_bytes``: the bound of the local disk cache a remote
    store (s3) keeps whole blobs in (caching.blob_cache, when enabled with max_bytes), or None: no cache."""

    def __init__(self, name: str, spec: dict[str, JsonValue], local_cache_bytes: Optional[int] = None) -> None:
        self.name = name
        self.local_cache_bytes = local_cache_bytes
        self.kind = spec["kind"]
        self.spec = spec  # as the schema gives it: what an implementation of another kind reads (a bucket ...)
        self.root = spec.get("root", name)
        # the s3 kind's bucket, its key prefix, and the server's address (none: AWS's own, in ``region``)
        self.bucket = spec.get("bucket")
        self.prefix = spec.get("prefix", "")
        self.endpoint_url = spec.get("endpoint_url")
        self.region = spec.get("region")
        addressing = spec.get("addressing", {})
        self.path_template = addressing.get("path_template", "sha256/{digest:0:2}/{digest:2:2}/{digest}")
        limits = spec.get("limits", {})
        self.min_bytes = limits.get("min_blob_bytes", 0)
        self.max_bytes = limits.get("max_blob_bytes")
        self._layout: Optional[Template] = None

    def layout(self, hexdigest: str) -> str:
        """The relative path of the blob with this sha-256 digest, by ``path_template`` (checked at load;
        parsed on first use so that a malformed one is reported by the checker, not raised here)."""
        if self._layout is None:
            self._layout = parse_template(self.path_template)
        return str(self._layout.render(FieldsOnly({"digest": hexdigest, "algo": "sha256"})))


class UploadSessionsDef:
    """A schema's storage.upload_sessions.<name>: resumable uploads ending in ``blob_store``, forgotten after
    ``ttl_seconds`` idle, at most ``max_bytes`` each (None: the blob store's max_blob_bytes)."""

    DEFAULT_TTL_SECONDS = 3600

    def __init__(self, name: str, spec: dict[str, JsonValue]) -> None:
        self.name = name
        self.spec = spec
        self.blob_store = str(spec["blob_store"])
        self.ttl_seconds = int(spec.get("ttl_seconds", self.DEFAULT_TTL_SECONDS))
        max_bytes = spec.get("max_bytes")
        self.max_bytes = int(max_bytes) if max_bytes is not None else None


class FieldsOnly:
    """The context a template renders against outside a request (a blob path, a row's key): the given fields,
    nothing else bound."""

    __slots__ = ("fields",)
    vars: dict[str, JsonValue] = {}
    principal = None
    event = None
    request = None

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields


MAX_PAGE_SIZE = 200  # one bound for every paginated list, schema routes and Depot's own alike
MAX_PAGE = 10_000_000  # ... and for page numbers: offsets stay far inside the SQL databases' 64-bit integers
# Depot's own lists read ?page= and ?page_size= by these specs, as the schema's list routes declare them
PAGE_QUERY = {"page": {"type": "integer", "default": 1, "minimum": 1, "maximum": MAX_PAGE},
              "page_size": {"type": "integer", "default": 50, "minimum": 1, "maximum": MAX_PAGE_SIZE}}
_QUERY_TYPES: dict[str, Callable[[str], JsonValue]] = {"string": str, "integer": int,
                                                       "boolean": lambda v: v.lower() in ("1", "true", "yes")}


def query_value(raw: Optional[str], name: str, spec: Mapping[str, JsonValue]) -> JsonValue:
    """A query parameter typed and bounded by ``spec`` ({type, default, minimum, maximum, required}); 400
    INVALID_QUERY naming it otherwise. Schema routes (parse.query) and Depot's own lists read them alike."""
    if raw is None:
        if spec.get("required"):
            raise bad_request("INVALID_QUERY", "query parameter %r is required" % name, name)
        return spec.get("default")
    return typed_value(raw, name, spec, "INVALID_QUERY", "query parameter")


def typed_value(raw: str, name: str, spec: Mapping[str, JsonValue], code: str, what: str) -> JsonValue:
    """A request value (``what`` ``name``: a query parameter, a form field) typed and bounded by ``spec``
    ({type, minimum, maximum}); 400 ``code`` naming it otherwise."""
    try:
        value = _QUERY_TYPES[spec.get("type", "string")](raw)
    except ValueError:
        raise bad_request(code, "%s %r must be %s" % (what, name, spec.get("type")), name)
    if "minimum" in spec and value < spec["minimum"] or "maximum" in spec and value > spec["maximum"]:
        raise bad_request(code, "%s %r is out of range [%s, %s]"
                          % (what, name, spec.get("minimum"), spec.get("maximum")), name)
    return value


class Limits:
    DEFAULTS: dict[str, int] = {
        "max_pipeline_ops": 128, "max_request_body_bytes": 2 ** 31, "max_json_bytes": 10 * 2 ** 20,
        "max_kv_value_bytes": 2 ** 20, "max_cpu_ms_per_request": 200, "max_io_ops_per_request": 5000,
        "max_json_depth": MAX_JSON_DEPTH}

    def __init__(self, spec: Optional[dict[str, JsonValue]]) -> None:
        merged = dict(self.DEFAULTS, **(spec or {}))
        self.max_pipeline_ops = merged["max_pipeline_ops"]
        self.max_request_body_bytes = merged["max_request_body_bytes"]
        self.max_json_bytes = merged["max_json_bytes"]
        self.max_json_depth = merged["max_json_depth"]
        self.max_kv_value_bytes = merged["max_kv_value_bytes"]
        self.max_cpu_ns = merged["max_cpu_ms_per_request"] * 1_000_000
        self.max_io_ops = merged["max_io_ops_per_request"]


class EventLog:
    """Where events are appended, and how a replica is fed from them (replication.log and .shipping)."""

    def __init__(self, store: str, key_prefix: str, max_event_bytes: int, batch_events: int = 1000,
                 batch_bytes: int = 10 * 1024 * 1024, dedupe_key: Optional[str] = "event_id") -> None:
        self.store = store  # the kv store it lives in, under keys starting with key_prefix
        self.key_prefix = key_prefix
        self.max_event_bytes = max_event_bytes
        self.batch_events = batch_events  # a shipped batch holds at most this many events
        self.batch_bytes = batch_bytes  # ... and at most this many bytes of them (one event always fits)
        self.dedupe_key = dedupe_key  # the event field a replica applies each event once by; None: no dedupe
