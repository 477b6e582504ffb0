"""How an op is declared: its name, its arguments and their kinds, what it outputs, what it may raise.

One declaration feeds the compiler (which arguments are templates, which are names of schema objects), the
checker (missing, unknown or ill-typed arguments, dangling references), OPERATIONS.md and the OpenAPI generator.
Each argument kind binds a raw schema value into what the op function receives at request time.
"""
import re
from dataclasses import dataclass, field

from app.expr import TemplateSyntaxError, compile_value

REGISTRY = {}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BindError(ValueError):
    """An argument that cannot be bound; ``arg`` names the argument when the error is about one."""

    def __init__(self, message, arg=None):
        super().__init__(message)
        self.arg = arg


class OpDecl:
    def __init__(self, name, fn, args, summary, needs_txn, errors, writes, mutates, example, binds, io, prepare,
                 openapi, answers=(), inputs=()):
        self.name = name
        self.openapi = openapi
        self.answers = list(answers)
        self.inputs = list(inputs)
        self.binds = binds
        self.io = io
        self.prepare = prepare
        self.fn = fn
        self.args = args
        self.summary = summary
        self.needs_txn = needs_txn
        self.errors = errors
        self.writes = writes
        self.mutates = mutates
        self.example = example

    @property
    def outputs(self):
        return [name for name, arg in self.args.items() if isinstance(arg, Output)]


def op(name, summary, args=None, needs_txn=False, errors=(), writes=False, mutates=None, example=None, binds=None,
       io=False, prepare=None, openapi=None, answers=(), inputs=()):
    """Register an op.

    ``needs_txn``: must run between txn.begin and txn.commit. ``writes``: a KV or index write (checked by
    all_kv_or_index_writes_inside_txn). ``mutates``: changes what the repository holds (documents, index rows,
    blobs, the event log); a read-only replica refuses such a step; every write mutates. ``io``: touches a store
    or the network (the CPU budget is checked before such steps). ``binds(scope, raw_args)``: which fields the
    op binds, for the load-time binding
    analysis. ``prepare(bound_args, scope)``: work done once at load on the bound arguments, knowing what the
    pipeline has bound so far (raise BindError to reject them). ``openapi(operation, bound_args)``: what the
    step adds to its route's OpenAPI operation (parameters, request body, responses, security).

    ``errors`` and ``answers``: the statuses the op can produce, written "<status> <CODE>": errors leave as the
    JSON error envelope; answers are the other outcomes it may turn a response into (206 for a Range, 304 for a
    matching If-None-Match). ``inputs``: request headers and query parameters the op reads (RequestInput), so
    the route documents them.
    """
    def register(fn):
        REGISTRY[name] = OpDecl(name, fn, args or {}, summary, needs_txn, list(errors), writes,
                                writes if mutates is None else mutates, example, binds, io, prepare, openapi,
                                answers, inputs)
        return fn
    return register


@dataclass(frozen=True)
class RequestInput:
    """A request header or query parameter an op reads whatever the schema says (``where``: header or query)."""
    where: str
    name: str
    doc: str
    schema: dict = field(default_factory=lambda: {"type": "string"})


def unknown_ref_message(section, value, table):
    return "unknown %s %r; expected one of: %s" % (section.replace("_", " "), value,
                                                   ", ".join(sorted(table)) or "(none defined)")


class Arg:
    kind = "value"

    def __init__(self, doc="", required=True, default=None):
        self.doc = doc
        self.required = required
        self.default = default

    def bind(self, value, env):
        return value

    def describe(self):
        return self.kind


class Template(Arg):
    """A JSON value whose strings may hold {field} and $var references, rendered per request."""
    kind = "template"

    def __init__(self, doc="", required=True, default=None, shape=None):
        super().__init__(doc, required, default)
        self.shape = shape  # None (any), "string" or "object"

    def bind(self, value, env):
        if self.shape == "string" and not isinstance(value, str):
            raise BindError("expected a string template, got %s" % type(value).__name__)
        if self.shape == "object" and not isinstance(value, (dict, str)):
            raise BindError("expected an object (or a reference to one), got %s" % type(value).__name__)
        try:
            node = compile_value(value)
        except TemplateSyntaxError as exc:
            raise BindError(str(exc)) from None
        env.uses(node.refs)
        return node

    def describe(self):
        return "template" + ("(%s)" % self.shape if self.shape else "")


class Output(Arg):
    """The name of a variable the op binds for later steps ($name). ``schema``: the JSON Schema of the value it
    receives, or a function of the step's bound arguments giving it (None: not a JSON value, or any)."""
    kind = "output"

    def __init__(self, doc="", required=True, default=None, schema=None):
        super().__init__(doc, required, default)
        self.schema = schema

    def schema_for(self, bound_args):
        return self.schema(bound_args) if callable(self.schema) else self.schema

    def bind(self, value, env):
        if not isinstance(value, str) or not _IDENT.match(value):
            raise BindError("expected a variable name matching [A-Za-z_][A-Za-z0-9_]*")
        env.binds_var(value)
        return value

    def describe(self):
        return "output name"


class RefTo(Arg):
    """The name of something the schema defines: an entity, document, index, blob store, upstream..."""
    kind = "reference"

    def __init__(self, section, doc="", required=True, default=None):
        super().__init__(doc, required, default)
        self.section = section

    def bind(self, value, env):
        table = env.definitions[self.section]
        if not isinstance(value, str) or value not in table:
            raise BindError(unknown_ref_message(self.section, value, table))
        return table[value]

    def describe(self):
        return "name of a %s" % self.section.replace("_", " ")


class Const(Arg):
    """A literal fixed at load: an integer, boolean, string or list of strings, optionally from a set."""
    kind = "constant"
    _TYPES = {"integer": int, "boolean": bool, "string": str, "string list": list, "object": dict}

    def __init__(self, type_, doc="", required=True, default=None, choices=None, minimum=None, maximum=None):
        super().__init__(doc, required, default)
        self.type = type_
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum

    def bind(self, value, env):
        expected = self._TYPES[self.type]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if ok and self.type == "string list":
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise BindError("expected %s, got %r" % (self.type, value))
        if self.choices is not None and value not in self.choices:
            raise BindError("expected one of %s, got %r" % (", ".join(map(repr, self.choices)), value))
        if self.minimum is not None and value < self.minimum:
            raise BindError("expected at least %s, got %r" % (self.minimum, value))
        if self.maximum is not None and value > self.maximum:
            raise BindError("expected at most %s, got %r" % (self.maximum, value))
        return value

    def describe(self):
        text = self.type
        if self.choices:
            text += " (one of %s)" % ", ".join(map(str, self.choices))
        return text


class Scopes(Const):
    """A list of scope names declared in auth.scopes."""

    def __init__(self, doc="", required=True):
        super().__init__("string list", doc, required)

    def bind(self, value, env):
        super().bind(value, env)
        unknown = [s for s in value if s not in env.definitions["scope"]]
        if unknown:
            raise BindError("unknown scope(s) %s; auth.scopes declares: %s"
                            % (", ".join(unknown), ", ".join(sorted(env.definitions["scope"]))))
        return frozenset(value)

    def describe(self):
        return "list of scope names"


class JsonSchema(Arg):
    """An inline JSON Schema or the name of one in storage.schemas; compiled into a validator at load."""
    kind = "json schema"

    def bind(self, value, env):
        if isinstance(value, str):
            if value not in env.definitions["schema"]:
                raise BindError("unknown schema %r; storage.schemas declares: %s"
                                % (value, ", ".join(sorted(env.definitions["schema"]))))
            return env.definitions["schema"][value]
        if not isinstance(value, dict):
            raise BindError("expected an inline JSON Schema object or a storage.schemas name")
        return env.compile_json_schema(value)

    def describe(self):
        return "JSON Schema (inline) or storage.schemas name"


class Source(Template):
    """Where bytes come from: "request.body" (the streamed request body) or a template naming a blob/body."""
    kind = "source"
    REQUEST_BODY = "request.body"

    def bind(self, value, env):
        if value == self.REQUEST_BODY:
            return self.REQUEST_BODY
        return super().bind(value, env)

    def describe(self):
        return '"request.body" or a template'
