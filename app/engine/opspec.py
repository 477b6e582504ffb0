"""How an op is declared: its name, its arguments and their kinds, what it outputs, what it may raise.

One declaration feeds the compiler (which arguments are templates, which are names of schema objects), the
checker (missing, unknown or ill-typed arguments, dangling references), OPERATIONS.md and the OpenAPI generator.
Each argument kind binds a raw schema value into what the op function receives at request time.
"""
import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from app.engine.expr import Const as ConstNode, TemplateSyntaxError, compile_value, whole_refs
from app.engine.media import MediaTypeError, ResponseType, content_type
from app.engine.pages import PageSource, PageSyntaxError, parse_page

if TYPE_CHECKING:
    from app.engine.binding import Scope

REGISTRY: dict[str, "OpDecl"] = {}  # the vocabulary the engine compiles and documents with (load_vocabulary)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BindError(ValueError):
    """An argument that cannot be bound; ``arg`` names the argument when the error is about one."""

    def __init__(self, message: str, arg: str | None = None) -> None:
        super().__init__(message)
        self.arg = arg


OpFunction = Callable[[Any, Any], None]  # (ExecutionContext, the step's bound arguments) -> None


@dataclass(frozen=True)
class OpDecl:
    """One op as declared: what the compiler binds, the checker verifies, the docs and OpenAPI describe. The flags
    say what the op does, so nothing else infers it from the op's name:

    ``terminal``: the step ends the pipeline (it sets the response or raises): nothing after it runs.
    ``opens_txn`` / ``closes_txn``: the step opens the pipeline's transaction / commits or discards it.
    ``needs_txn``: must run while a transaction is open. ``writes``: a KV or index write (buffered in the open
    transaction, or committed alone). ``mutates``: changes what the repository holds (a read-only replica refuses
    it; every write mutates). ``io``: touches a store or the network (the CPU budget is checked before it)."""
    name: str
    fn: OpFunction
    args: dict[str, "Arg"]
    summary: str
    needs_txn: bool = False
    errors: tuple[str, ...] = ()
    writes: bool = False
    mutates: bool = False
    io: bool = False
    terminal: bool = False
    opens_txn: bool = False
    closes_txn: bool = False
    example: dict[str, Any] | None = None
    binds: Callable[[Any, dict[str, Any]], None] | None = None
    prepare: Callable[[Any, Any], None] | None = None
    openapi: Callable[[Any, Any], None] | None = None
    answers: tuple[str, ...] = ()
    inputs: tuple["RequestInput", ...] = ()

    def __post_init__(self) -> None:
        if self.opens_txn and (self.closes_txn or self.needs_txn):
            raise ValueError("op %s opens a transaction: it can neither close one nor need one" % self.name)
        if self.closes_txn and not self.needs_txn:
            raise ValueError("op %s closes the transaction, so it needs one open (needs_txn=True)" % self.name)
        if self.writes and not self.mutates:
            raise ValueError("op %s writes, so it mutates the repository" % self.name)

    @property
    def outputs(self) -> list[str]:
        return [name for name, arg in self.args.items() if isinstance(arg, Output)]

    @property
    def flags(self) -> list[str]:
        """The flags set, in declaration order (for the docs and error messages)."""
        return [name for name in FLAGS if getattr(self, name)]


FLAGS = ("terminal", "opens_txn", "closes_txn", "needs_txn", "writes", "mutates", "io")


class Vocabulary:
    """The ops a module declares (operations.py), collected as it is imported and handed to a registry only when
    asked (``register``): importing the module changes nothing, and the engine's vocabulary is filled in one
    explicit place (load_vocabulary)."""

    def __init__(self) -> None:
        self.decls: dict[str, OpDecl] = {}

    def register(self, registry: dict[str, "OpDecl"]) -> None:
        registry.update(self.decls)

    def op(self, name: str, summary: str, args: dict[str, "Arg"] | None = None, needs_txn: bool = False,
           errors: Iterable[str] = (), writes: bool = False, mutates: bool | None = None,
           example: dict[str, Any] | None = None, binds: Callable[[Any, dict[str, Any]], None] | None = None,
           io: bool = False, prepare: Callable[[Any, Any], None] | None = None,
           openapi: Callable[[Any, Any], None] | None = None, answers: Iterable[str] = (),
           inputs: Iterable["RequestInput"] = (), terminal: bool = False, opens_txn: bool = False,
           closes_txn: bool = False) -> Callable[[OpFunction], OpFunction]:
        """Declare an op (the flags: see OpDecl; ``mutates`` defaults to ``writes``).
    
        ``binds(scope, raw_args)``: which fields the op binds, for the load-time binding analysis.
        ``prepare(bound_args, scope)``: work done once at load on the bound arguments, knowing what the pipeline has
        bound so far (raise BindError to reject them). ``openapi(operation, bound_args)``: what the step adds to its
        route's OpenAPI operation (parameters, request body, responses, security).
    
        ``errors`` and ``answers``: the statuses the op can produce, written "<status> <CODE>": errors leave as the
        JSON error envelope; answers are the other outcomes it may turn a response into (206 for a Range, 304 for a
        matching If-None-Match). ``inputs``: request headers and query parameters the op reads (RequestInput), so
        the route documents them.
        """
        def declare(fn: OpFunction) -> OpFunction:
            self.decls[name] = OpDecl(name, fn, args or {}, summary, needs_txn=needs_txn, errors=tuple(errors),
                                      writes=writes, mutates=writes if mutates is None else mutates, io=io,
                                      terminal=terminal, opens_txn=opens_txn, closes_txn=closes_txn,
                                      example=example, binds=binds, prepare=prepare, openapi=openapi,
                                      answers=tuple(answers), inputs=tuple(inputs))
            return fn
        return declare


@functools.cache
def load_vocabulary() -> dict[str, OpDecl]:
    """The engine's op vocabulary, registered on first use. The one place app/ reaches operations.py: the ops
    import the engine, so the engine names them only here, when it is asked to compile or document a schema
    (tests/test_layout.py holds that)."""
    import operations
    operations.register(REGISTRY)
    return REGISTRY


@dataclass(frozen=True)
class RequestInput:
    """A request header or query parameter an op reads whatever the schema says (``where``: header or query)."""
    where: str
    name: str
    doc: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


def unknown_ref_message(section: str, value: object, table: Iterable[str]) -> str:
    return "unknown %s %r; expected one of: %s" % (section.replace("_", " "), value,
                                                   ", ".join(sorted(table)) or "(none defined)")


class Arg:
    """An argument kind: ``bind`` turns the schema's raw value into what the op function receives, once, at load
    (``env``: the pipeline's binding Scope); it raises BindError for a value it cannot take."""
    kind: ClassVar[str] = "value"

    def __init__(self, doc: str = "", required: bool = True, default: Any = None) -> None:
        self.doc = doc
        self.required = required
        self.default = default

    def bind(self, value: Any, env: "Scope") -> Any:
        return value

    def describe(self) -> str:
        return self.kind


class Template(Arg):
    """A JSON value whose strings may hold {field} and $var references, rendered per request. ``streams``: the op
    writes the value out as the response (respond.json): a listing read whole (a Stream) may sit in it."""
    kind: ClassVar[str] = "template"

    def __init__(self, doc: str = "", required: bool = True, default: Any = None, shape: str | None = None,
                 streams: bool = False) -> None:
        super().__init__(doc, required, default)
        self.shape = shape  # None (any), "string" or "object"
        self.streams = streams

    def bind(self, value: Any, env: "Scope") -> Any:
        if self.shape == "string" and not isinstance(value, str):
            raise BindError("expected a string template, got %s" % type(value).__name__)
        if self.shape == "object" and not isinstance(value, (dict, str)):
            raise BindError("expected an object (or a reference to one), got %s" % type(value).__name__)
        try:
            node = compile_value(value)
        except TemplateSyntaxError as exc:
            raise BindError(str(exc)) from None
        env.uses(node.refs, whole_refs(node) if self.streams else ())
        return node

    def describe(self) -> str:
        return "template" + ("(%s)" % self.shape if self.shape else "") + (", streams" if self.streams else "")


class Output(Arg):
    """The name of a variable the op binds for later steps ($name). ``schema``: the JSON Schema of the value it
    receives, or a function of the step's bound arguments giving it (None: not a JSON value, or any)."""
    kind: ClassVar[str] = "output"

    def __init__(self, doc: str = "", required: bool = True, default: Any = None,
                 schema: dict[str, Any] | Callable[[Any], dict[str, Any]] | None = None,
                 per_item: bool = False) -> None:
        super().__init__(doc, required, default)
        self.schema = schema
        self.per_item = per_item  # bound to each item of a list the step walks: its other arguments read it

    def schema_for(self, bound_args: Any) -> dict[str, Any] | None:
        return self.schema(bound_args) if callable(self.schema) else self.schema

    def bind(self, value: Any, env: "Scope") -> str:
        if not isinstance(value, str) or not _IDENT.match(value):
            raise BindError("expected a variable name matching [A-Za-z_][A-Za-z0-9_]*")
        env.binds_var(value)
        return value

    def describe(self) -> str:
        return "output name"


class RefTo(Arg):
    """The name of something the schema defines: an entity, document, index, blob store, upstream..."""
    kind: ClassVar[str] = "reference"

    def __init__(self, section: str, doc: str = "", required: bool = True, default: Any = None) -> None:
        super().__init__(doc, required, default)
        self.section = section

    def bind(self, value: Any, env: "Scope") -> Any:
        table = env.definitions[self.section]
        if not isinstance(value, str) or value not in table:
            raise BindError(unknown_ref_message(self.section, value, table))
        return table[value]

    def describe(self) -> str:
        return "name of a %s" % self.section.replace("_", " ")


class Const(Arg):
    """A literal fixed at load: an integer, boolean, string or list of strings, optionally from a set."""
    kind: ClassVar[str] = "constant"
    _TYPES: ClassVar[dict[str, type]] = {"integer": int, "boolean": bool, "string": str, "string list": list,
                                         "object": dict}

    def __init__(self, type_: str, doc: str = "", required: bool = True, default: Any = None,
                 choices: list[Any] | None = None, minimum: int | None = None, maximum: int | None = None) -> None:
        super().__init__(doc, required, default)
        self.type = type_
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum

    def bind(self, value: Any, env: "Scope") -> Any:
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

    def describe(self) -> str:
        text = self.type
        if self.choices:
            text += " (one of %s)" % ", ".join(map(str, self.choices))
        return text


class Scopes(Const):
    """A list of scope names declared in auth.scopes."""

    def __init__(self, doc: str = "", required: bool = True) -> None:
        super().__init__("string list", doc, required)

    def bind(self, value: Any, env: "Scope") -> frozenset[str]:
        super().bind(value, env)
        unknown = [s for s in value if s not in env.definitions["scope"]]
        if unknown:
            raise BindError("unknown scope(s) %s; auth.scopes declares: %s"
                            % (", ".join(unknown), ", ".join(sorted(env.definitions["scope"]))))
        return frozenset(value)

    def describe(self) -> str:
        return "list of scope names"


class JsonSchema(Arg):
    """An inline JSON Schema or the name of one in storage.schemas; compiled into a validator at load."""
    kind: ClassVar[str] = "json schema"

    def bind(self, value: Any, env: "Scope") -> Any:
        if isinstance(value, str):
            if value not in env.definitions["schema"]:
                raise BindError("unknown schema %r; storage.schemas declares: %s"
                                % (value, ", ".join(sorted(env.definitions["schema"]))))
            return env.definitions["schema"][value]
        if not isinstance(value, dict):
            raise BindError("expected an inline JSON Schema object or a storage.schemas name")
        return env.compile_json_schema(value)

    def describe(self) -> str:
        return "JSON Schema (inline) or storage.schemas name"


class Source(Template):
    """Where bytes come from: "request.body" (the streamed request body) or a template naming a blob/body."""
    kind: ClassVar[str] = "source"
    REQUEST_BODY = "request.body"

    def bind(self, value: Any, env: "Scope") -> Any:
        if value == self.REQUEST_BODY:
            return self.REQUEST_BODY
        return super().bind(value, env)

    def describe(self) -> str:
        return '"request.body" or a template'


class MediaType(Template):
    """A response's media type (Content-Type), as a string template: parsed at load when it is constant, per
    request when it holds references (a variable http.negotiate bound). ``json``: it must be a JSON type."""

    def __init__(self, doc: str = "", required: bool = True, default: Any = None, json: bool = False) -> None:
        super().__init__(doc, required, default, shape="string")
        self.json = json

    def bind(self, value: Any, env: "Scope") -> ResponseType:
        node = super().bind(value, env)
        fixed = None
        if isinstance(node, ConstNode):
            try:
                fixed = ResponseType.check(content_type(node.value), self.json)
            except MediaTypeError as exc:
                raise BindError(str(exc)) from None
        return ResponseType(node, fixed, self.json)

    def describe(self) -> str:
        return "media type (template)"


class MediaTypes(Const):
    """A non-empty list of distinct media types, each type/subtype without parameters (what a request's Accept is
    matched against: werkzeug matches an offer with parameters only to an Accept entry naming them too)."""

    def __init__(self, doc: str = "", required: bool = True) -> None:
        super().__init__("string list", doc, required)

    def bind(self, value: Any, env: "Scope") -> tuple[str, ...]:
        super().bind(value, env)
        if not value:
            raise BindError("expected at least one media type")
        essences: list[str] = []
        for item in value:
            try:
                parsed = content_type(item)
            except MediaTypeError as exc:
                raise BindError(str(exc)) from None
            if parsed.essence != item.lower():
                raise BindError("%r: an offer is type/subtype, without parameters" % item)
            if parsed.essence in essences:
                raise BindError("%r is offered twice" % item)
            essences.append(parsed.essence)
        return tuple(value)

    def describe(self) -> str:
        return "list of media types"


class PageTemplate(Arg):
    """A Jinja2 template (a string, or a list of lines joined with newlines), parsed and checked at load: its
    syntax, the names it reads (app/engine/pages.py), and that each field and variable it reads by name can be
    bound at this step, as for a `{field}` or `$var` reference."""
    kind: ClassVar[str] = "page template"

    def bind(self, value: Any, env: "Scope") -> PageSource:
        if not isinstance(value, (str, list)) or (isinstance(value, list) and
                                                  not all(isinstance(line, str) for line in value)):
            raise BindError("expected a Jinja2 template: a string, or a list of lines")
        try:
            source = parse_page(value)
        except PageSyntaxError as exc:
            raise BindError(str(exc)) from None
        for namespace, name, written in source.reads:
            env.reads(namespace, name, written)
        if "principal" in source.namespaces:
            env.reads("principal", "principal", "principal")
        return source

    def describe(self) -> str:
        return "Jinja2 template (a string or a list of lines)"
