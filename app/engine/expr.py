"""The interpolation grammar, parsed once at schema load and rendered per request.

Grammar (see OPERATIONS.md, "Interpolation"):

    template   := ( literal | braced_ref | var_ref )*
    braced_ref := "{" ( name ( "." name )* | "$" name ( "." name | "[" index "]" )* ) [ "?" ]
                      [ ":" start ":" length ] ( "|" filter [ ":" argument ] )* "}"
    var_ref    := "$" name ( "." name | "[" index "]" )* [ "?" ]
    escapes    := "{{" -> "{",  "}}" -> "}",  "$$" -> "$"

``{...}`` reads the *field* namespace: path parameters (normalized by normalize.entity), query parameters
bound by parse.query, then the top-level members of a JSON object body bound by parse.json (earlier sources
win). Three roots are reserved: ``{principal.*}`` reads the authenticated principal, ``{event.*}`` the event
being applied and ``{request.base_url}`` the request's external base URL. ``$...`` (or ``{$...}``) reads the
*variable* namespace: the outputs of earlier steps (``out``, ``out_size``...). Filters (app/engine/filters.py,
a closed registry) are resolved at load and run on the value a braced reference resolved to.

A template that is exactly one reference renders to the referenced value with its type intact. Rendered values
are never scanned again, so request data cannot inject references.

An object ``{"$each": <template>, "as": name, "emit": <template>}`` is a loop: it renders ``emit`` once per item
of the list ``$each`` renders, with ``$name`` bound to the item, into a list; with ``"key": <string template>``
into an object keyed by what ``key`` renders for each item.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable, Optional, Sequence, Union, cast

from app.engine.codegen import FunctionBuilder, enabled as generating, literal
from app.engine.context import RequestData
from app.engine.filters import FilterDecl, FilterError, Filter, compile_filter, text
from app.errors import DepotError

# What a template reads from and renders to are both open: ctx is an ExecutionContext, a RowContext or any
# object with the namespaces a reference reads, and a value is JSON or a handle a template exposes (a blob's).
Render = Callable[[Any], Any]  # ctx -> value
Path = tuple[Union[str, int], ...]  # mapping keys (str) and list indexes (int) below a reference's root
Slice = Optional[tuple[int, int]]  # {field:start:length}: (start, length)

FIELD_ROOTS = ("principal", "event", "request")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR_PATH = r"(?P<root>%s)(?P<rest>(?:\.%s|\[\d+\])*)" % (_NAME, _NAME)
_ARGUMENT = r"[^|{}]*"  # a filter's argument: literal text up to the next filter or the closing brace
_BRACED_REF = re.compile(
    r"\{(?:\$%s|(?P<path>%s(?:\.%s)*))(?P<optional>\?)?(?::(?P<start>\d+):(?P<length>\d+))?"
    r"(?P<filters>(?:\|%s(?::%s)?)*)\}" % (_VAR_PATH, _NAME, _NAME, _NAME, _ARGUMENT))
_VAR_REF = re.compile(r"\$%s(?P<optional>\?)?" % _VAR_PATH)
_VAR_STEP = re.compile(r"\.(%s)|\[(\d+)\]" % _NAME)
_FILTER_STEP = re.compile(r"\|(%s)(?::(%s))?" % (_NAME, _ARGUMENT))
_MISSING = object()


class TemplateSyntaxError(ValueError):
    pass


class Ref:
    """One reference: where it reads from, the path below its root, how it is shaped and the filters its value
    goes through."""

    __slots__ = ("namespace", "root", "path", "optional", "slice", "source", "prefix", "filters", "transform",
                 "lookup", "resolve", "resolve_lenient", "resolve_interpreted")

    def __init__(self, namespace: str, root: str, path: Path, optional: bool = False, slice_: Slice = None,
                 source: str = "", filters: Sequence[tuple[FilterDecl, Filter]] = ()) -> None:
        self.namespace = namespace  # "field", "principal", "event", "request" or "var"
        self.root = root
        self.path = path  # tuple of str (mapping keys) / int (list indexes) below the root
        self.optional = optional
        self.slice = slice_
        self.source = source
        self.prefix = ""  # a "/" bound to an optional reference disappears with it
        self.filters = tuple(decl for decl, _ in filters)
        self.transform = _transformer([fn for _, fn in filters], source, root)  # value -> value, or None
        # built once per reference, so rendering does no dispatch on its shape:
        self.lookup = _getter(namespace, root, path, slice_)  # ctx -> the value, or _MISSING
        self.resolve_interpreted = _resolver(self)  # ctx -> the value; unbound: an error, or None when optional
        lenient = _filtered(_lenient(self.lookup), self.transform)  # ctx -> the value, or None when unbound
        # the same two, as straight-line code when the reference is a plain read (and generation is on):
        generate = self.generated and generating()
        self.resolve = self._generate_resolve(self.resolve_interpreted) if generate else self.resolve_interpreted
        self.resolve_lenient = self._generate_resolve(lenient) if generate else lenient

    @property
    def absent_ok(self) -> bool:
        """Whether the reference may find nothing: it is optional (``?``), or a filter gives a value then."""
        return self.optional or any(not decl.keeps_absent for decl in self.filters)

    @property
    def generated(self) -> bool:
        """Plain reads (a field or variable, then dict keys and list indexes) become straight-line code."""
        return self.namespace in _NAMESPACE_SOURCE and self.slice is None and all(
            step.__class__ is str or (step.__class__ is int and step >= 0) for step in self.path)

    def emit(self, builder: FunctionBuilder, bail: str) -> str:
        """Write statements putting this reference's value into a new local of ``builder``; -> the local's name.

        A plain read is written out: the namespace, then each dict key or list index, each step checking the
        shape it steps into, then one call running the filters. When a step finds nothing (KeyError,
        IndexError: see FunctionBuilder.guarded), meets another shape, or a field is null, the statement
        ``bail`` hands the call to the interpreted path, which decides exactly as it always would (optional,
        error, a tuple, a blob handle's attribute)."""
        if not self.generated:
            target = builder.local()
            builder.line("%s = %s(ctx)" % (target, builder.bind(self.resolve_interpreted, "resolve")))
            return target
        target = self._emit_path(builder, bail)
        if self.transform is not None:
            filtered = builder.local()
            builder.line("%s = %s(%s)" % (filtered, builder.bind(self.transform, "filters"), target))
            return filtered
        return target

    def _emit_path(self, builder: FunctionBuilder, bail: str) -> str:
        """The plain read into a local, from the longest prefix of it the builder has read already (each step
        into a local of its own, so every prefix can serve a later reference)."""
        base = (self.namespace, self.root)
        depth = len(self.path)
        while depth >= 0 and base + self.path[:depth] not in builder.reads:
            depth -= 1
        created = depth < len(self.path)  # a local read now (a read already written passed its checks)
        if depth >= 0:
            target = builder.reads[base + self.path[:depth]]
        else:
            target = builder.reads[base] = builder.local()
            builder.line("%s = %s[%s]" % (target, _NAMESPACE_SOURCE[self.namespace], literal(self.root)))
            depth = 0
        for index in range(depth, len(self.path)):
            step = self.path[index]
            shape = "dict" if step.__class__ is str else "list"
            if builder.shapes.get(target) != shape:
                builder.line("if %s.__class__ is not %s:" % (target, shape))
                builder.line(bail, 1)
                builder.shapes[target] = shape
            value = builder.reads[base + self.path[:index + 1]] = builder.local()
            builder.line("%s = %s[%s]" % (value, target, literal(step)))
            target = value
        if self.namespace == "field" and created:  # a null field counts as unbound
            builder.line("if %s is None:" % target)
            builder.line(bail, 1)
        return target

    def _generate_resolve(self, interpreted: Render) -> Render:
        """``interpreted`` with its plain reads done inline: it runs only when they find nothing."""
        builder = FunctionBuilder("resolve")
        value = builder.guarded(self.emit, "%s(ctx)" % builder.bind(interpreted, "interpreted"))
        builder.line("return " + value)
        resolve: Render = builder.build()
        return resolve


_NAMESPACE_SOURCE = {"field": "ctx.fields", "var": "ctx.vars"}


def _absent(optional: bool, source: str) -> None:
    """What an unbound reference renders as: nothing when optional, else an error naming it."""
    if optional:
        return None
    raise DepotError("UNRESOLVED_REFERENCE", 500, "reference %s is not bound" % source)


def _resolver(ref: Ref) -> Render:
    absent_ok, source = ref.absent_ok, ref.source
    null_is_unbound = ref.namespace in ("field", "request")  # a request without a base URL has none
    lookup = ref.lookup

    def resolve(ctx: Any) -> Any:
        value = lookup(ctx)
        if value is _MISSING or (value is None and null_is_unbound):
            return _absent(absent_ok, source)
        return value
    return _filtered(resolve, ref.transform)


def _transformer(filters: Sequence[Filter], source: str, field: str) -> Optional[Callable[[Any], Any]]:
    """One function running a reference's filters in order (None without filters). A filter refusing its input
    is a 400 naming the reference: what it reads comes from the request or from what a request stored."""
    if not filters:
        return None

    def transform(value: Any) -> Any:
        try:
            for run in filters:
                value = run(value)
        except ValueError as exc:
            raise DepotError("INVALID_FILTER_INPUT", 400, "value for %s: %s" % (source, exc), field) from None
        return value
    return transform


def _filtered(resolve: Render, transform: Optional[Callable[[Any], Any]]) -> Render:
    if transform is None:
        return resolve
    return lambda ctx: transform(resolve(ctx))


def _lenient(lookup: Render) -> Render:
    def resolve_lenient(ctx: Any) -> Any:
        value = lookup(ctx)
        return None if value is _MISSING else value
    return resolve_lenient


def _getter(namespace: str, root: str, path: Path, slice_: Slice) -> Render:
    """Build the lookup for one reference once, so rendering does no dispatch on its shape."""
    if namespace == "field":
        def read_root(ctx: Any) -> Any:
            return ctx.fields.get(root, _MISSING)
    elif namespace == "var":
        def read_root(ctx: Any) -> Any:
            return ctx.vars.get(root, _MISSING)
    else:
        def read_root(ctx: Any) -> Any:
            value = getattr(ctx, namespace)
            return _MISSING if value is None else value
    if not path and slice_ is None:
        return read_root

    def lookup(ctx: Any) -> Any:
        value = read_root(ctx)
        for step in path:
            value = _descend(value, step)
            if value is _MISSING:
                return value
        if slice_ is not None and isinstance(value, str):
            value = value[slice_[0]:slice_[0] + slice_[1]]
        return value
    return lookup


def _descend(value: Any, step: str | int) -> Any:
    """One path step: a list index, a mapping key, or an attribute a handle exposes to templates (blob handles:
    .digest, .size, .store); _MISSING when the value has no such part."""
    if isinstance(step, int):
        if isinstance(value, (list, tuple)) and -len(value) <= step < len(value):
            return value[step]
        return _MISSING
    if isinstance(value, dict):
        return value.get(step, _MISSING)
    if step in getattr(value, "template_attrs", ()):
        return getattr(value, step)
    return _MISSING


def _check_key_segment(ref: Ref, text: str) -> None:
    if "/" in text or "\x00" in text or text in ("", ".", ".."):
        raise DepotError("INVALID_KEY_SEGMENT", 400, "value for %s is not a valid key segment" % ref.source, ref.root)


class Template:
    """A parsed string template. ``render`` is the lone reference's resolve when the template is exactly one
    reference (its value keeps its type), else the joined string."""

    __slots__ = ("source", "parts", "refs", "single", "render", "render_key")

    def __init__(self, source: str, parts: list[str | Ref]) -> None:
        self.source = source
        self.parts = parts  # str literals and Ref objects
        self.refs = [p for p in parts if isinstance(p, Ref)]
        self.single: Optional[Ref] = self.refs[0] if len(parts) == 1 and self.refs else None
        self.render: Render = self.single.resolve if self.single is not None else self._render_joined
        # a storage key: substituted values may not add segments ('/', '..') or NUL
        self.render_key: Callable[[Any], str] = self._render_key_interpreted
        if self.single is None and self.refs and generating():
            self.render = self._generate_join(None)
            self.render_key = self._generate_join(_check_key_segment)

    def _render_joined(self, ctx: Any) -> str:
        return self._join(ctx, None)

    def _render_key_interpreted(self, ctx: Any) -> str:
        return self._join(ctx, _check_key_segment)

    def _generate_join(self, check: Optional[Callable[[Ref, str], None]]) -> Callable[[Any], str]:
        """``_join`` as straight-line code for the common case: every reference a string (and, for a key, a
        valid segment). Anything else (an absent optional, null, a number, an invalid segment) hands the whole
        render to ``_join``, which decides exactly as it always does (text, errors, a vanishing segment)."""
        builder = FunctionBuilder("join")
        fallback = "%s(ctx)" % builder.bind(partial(self._join, check=check), "interpreted")

        def emit(builder: FunctionBuilder, bail: str) -> list[str]:
            pieces = []
            for part in self.parts:
                if isinstance(part, str):
                    if part:
                        pieces.append(literal(part))
                    continue
                value = part.emit(builder, bail)
                builder.line("if %s.__class__ is not str:" % value)
                builder.line(bail, 1)
                if check is not None:
                    builder.line("if '/' in %s or '\\x00' in %s or %s in ('', '.', '..'):" % (value, value, value))
                    builder.line(bail, 1)
                if part.prefix:
                    pieces.append(literal(part.prefix))
                pieces.append(value)
            return pieces

        pieces = builder.guarded(emit, fallback)
        builder.line("return ''.join((%s,))" % ", ".join(pieces))
        join: Callable[[Any], str] = builder.build()
        return join

    def emit(self, builder: FunctionBuilder, bail: str) -> str:
        if self.single is not None:
            return self.single.emit(builder, bail)
        target = builder.local()
        builder.line("%s = %s(ctx)" % (target, builder.bind(self.render, "render")))
        return target

    def render_lenient(self, ctx: Any) -> Any:
        if self.single is not None:
            return self.single.resolve_lenient(ctx)
        return self.render(ctx)

    def _join(self, ctx: Any, check: Optional[Callable[[Ref, str], None]]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part.resolve(ctx)
            if value is None:  # an absent optional reference: its segment disappears
                continue
            text_value = text(value)
            if check is not None:
                check(part, text_value)
            out.append(part.prefix)
            out.append(text_value)
        return "".join(out)

    @property
    def is_constant(self) -> bool:
        return not self.refs


def _var_path(match: re.Match[str]) -> Path:
    path: list[str | int] = []
    for step in _VAR_STEP.finditer(match.group("rest")):
        path.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
    return tuple(path)


def _parse_var(match: re.Match[str]) -> Ref:
    return Ref("var", match.group("root"), _var_path(match), optional=bool(match.group("optional")),
               source=match.group(0))


def _parse_braced(match: re.Match[str]) -> Ref:
    """``{field...}``, ``{principal...}``, ``{event...}``, ``{request.base_url}`` or ``{$var...}``, with its
    slice and filters; the filters are looked up in the registry now (TemplateSyntaxError for a bad one)."""
    source = match.group(0)
    optional = bool(match.group("optional"))
    slice_: Slice = None
    if match.group("start") is not None:
        slice_ = (int(match.group("start")), int(match.group("length")))
    filters = []
    for step in _FILTER_STEP.finditer(match.group("filters")):
        try:
            filters.append(compile_filter(step.group(1), step.group(2)))
        except FilterError as exc:
            raise TemplateSyntaxError("%s: %s" % (source, exc)) from None
    if match.group("root") is not None:
        return Ref("var", match.group("root"), _var_path(match), optional, slice_, source, filters)
    names = match.group("path").split(".")
    namespace = names[0] if names[0] in FIELD_ROOTS else "field"
    if namespace == "request" and (len(names) != 2 or names[1] not in RequestData.template_attrs):
        raise TemplateSyntaxError("%s: a request exposes %s" % (source, ", ".join(
            "{request.%s}" % name for name in RequestData.template_attrs)))
    return Ref(namespace, names[0], tuple(names[1:]), optional, slice_, source, filters)


def parse_template(source: str) -> Template:
    """Parse one string into a Template; raises TemplateSyntaxError for a malformed reference."""
    parts: list[str | Ref] = []
    literal: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "{}$" and source.startswith(ch * 2, i):
            literal.append(ch)
            i += 2
            continue
        match: Optional[re.Match[str]] = None
        if ch == "{":
            match = _BRACED_REF.match(source, i)
            if match is None:
                raise TemplateSyntaxError("malformed reference at offset %d in %r (write '{{' for a literal '{')"
                                          % (i, source))
            ref = _parse_braced(match)
        elif ch == "$":
            match = _VAR_REF.match(source, i)
            if match is not None:
                ref = _parse_var(match)
        elif ch == "}":
            raise TemplateSyntaxError("unmatched '}' at offset %d in %r (write '}}' for a literal '}')" % (i, source))
        if match is None:
            literal.append(ch)
            i += 1
            continue
        if ref.optional and literal and literal[-1].endswith("/"):
            literal[-1] = literal[-1][:-1]
            ref.prefix = "/"
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(ref)
        i = match.end()
    if literal:
        parts.append("".join(literal))
    return Template(source, parts)


class Const:
    __slots__ = ("value",)
    refs: Sequence[Ref] = ()

    def __init__(self, value: Any) -> None:
        self.value = value

    def render(self, ctx: Any) -> Any:
        return self.value

    render_lenient = render
    render_key = render

    def emit(self, builder: FunctionBuilder, bail: str) -> str:
        return builder.bind(self.value, "const")  # the same object every time, as render gives


def _generate_render(node: DictNode | ListNode) -> Render:
    """ctx -> the node's value, as one generated function: each reference read inline, in the order the
    interpreted render reads them; anything but a plain read hands the whole render to the interpreted path."""
    builder = FunctionBuilder("render")
    value = builder.guarded(node.emit, "%s(ctx)" % builder.bind(node.render_interpreted, "interpreted"))
    builder.line("return " + value)
    render: Render = builder.build()
    return render


class DictNode:
    __slots__ = ("items", "refs", "render")

    def __init__(self, items: list[tuple[str, Node]]) -> None:
        self.items = items
        self.refs: list[Ref] = [r for _, node in items for r in node.refs]
        self.render: Render = _generate_render(self) if generating() else self.render_interpreted

    def render_interpreted(self, ctx: Any) -> dict[str, Any]:
        return {key: node.render(ctx) for key, node in self.items}

    def emit(self, builder: FunctionBuilder, bail: str) -> str:
        values = [(key, node.emit(builder, bail)) for key, node in self.items]
        return "{%s}" % ", ".join("%s: %s" % (literal(key), value) for key, value in values)

    def render_lenient(self, ctx: Any) -> dict[str, Any]:
        return {key: node.render_lenient(ctx) for key, node in self.items}


class ListNode:
    __slots__ = ("nodes", "refs", "render")

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.refs: list[Ref] = [r for node in nodes for r in node.refs]
        self.render: Render = _generate_render(self) if generating() else self.render_interpreted

    def render_interpreted(self, ctx: Any) -> list[Any]:
        return [node.render(ctx) for node in self.nodes]

    def emit(self, builder: FunctionBuilder, bail: str) -> str:
        return "[%s]" % ", ".join([node.emit(builder, bail) for node in self.nodes])

    def render_lenient(self, ctx: Any) -> list[Any]:
        return [node.render_lenient(ctx) for node in self.nodes]


class LoopScope:
    """What the templates inside an ``$each`` read: the enclosing context's namespaces, with the loop's variable
    bound over a copy of its variables (one copy per loop), so the request's own variables never change."""

    __slots__ = ("outer", "fields", "vars")

    def __init__(self, outer: Any) -> None:
        self.outer = outer
        self.fields = outer.fields
        self.vars = dict(outer.vars)

    @property
    def principal(self) -> Any:
        return self.outer.principal

    @property
    def event(self) -> Any:
        return self.outer.event

    @property
    def request(self) -> Any:
        return self.outer.request


EACH_MEMBERS = ("$each", "as", "emit", "key")


class EachNode:
    """``{"$each": <list template>, "as": name, "emit": <template>[, "key": <string template>]}``: ``emit``
    rendered once per item with ``$name`` bound to it, into a list (or, with ``key``, an object keyed by what
    ``key`` renders for each item; a later item wins a key an earlier one rendered too). The list may be absent
    or null: it renders as an empty list (object). ``emit`` and ``key`` are compiled like any template (their
    references generated as code when generation is on); the loop itself is one small function."""

    __slots__ = ("source", "name", "body", "key", "refs", "place")

    def __init__(self, source: Node, name: str, body: Node, key: Optional[Node], place: str) -> None:
        self.source = source
        self.name = name
        self.body = body
        self.key = key
        self.place = place  # how errors name it: the loop's $each template
        inner = list(body.refs) + (list(key.refs) if key is not None else [])
        # $name inside the loop is bound by the loop: what it reads of the pipeline is the rest
        self.refs: list[Ref] = list(source.refs) + [r for r in inner if r.namespace != "var" or r.root != name]

    def render(self, ctx: Any) -> Any:
        return self._loop(ctx, self.source.render(ctx), self.body.render, self.key.render if self.key else None)

    def render_lenient(self, ctx: Any) -> Any:
        return self._loop(ctx, self.source.render_lenient(ctx), self.body.render_lenient,
                          self.key.render_lenient if self.key else None)

    def emit(self, builder: FunctionBuilder, bail: str) -> str:
        target = builder.local()
        builder.line("%s = %s(ctx)" % (target, builder.bind(self.render, "each")))
        return target

    def _loop(self, ctx: Any, items: Any, body: Render, key: Optional[Render]) -> Any:
        if items is None:
            items = ()
        elif not isinstance(items, (list, tuple)):
            raise DepotError("INVALID_TEMPLATE_VALUE", 500, "$each %s rendered %s, not a list"
                             % (self.place, type(items).__name__))
        scope = LoopScope(ctx)
        bound, name = scope.vars, self.name
        if key is None:
            out = []
            for item in items:
                bound[name] = item
                out.append(body(scope))
            return out
        keyed = {}
        for item in items:
            bound[name] = item
            label = key(scope)
            if label is None:
                raise DepotError("INVALID_TEMPLATE_VALUE", 500, "the key of $each %s rendered nothing for an item"
                                 % self.place)
            keyed[text(label)] = body(scope)
        return keyed


Node = Union[Template, Const, DictNode, ListNode, EachNode]  # a compiled JSON value
NODES = (Template, Const, DictNode, ListNode, EachNode)


def every_ref(node: Node) -> list[Ref]:
    """Every reference in a compiled value, those a loop binds ($row inside its emit) too: what the value may run
    into (``node.refs`` are only those it reads from the pipeline)."""
    if isinstance(node, EachNode):
        inner = [node.source, node.body] + ([node.key] if node.key is not None else [])
        return [ref for part in inner for ref in every_ref(part)]
    if isinstance(node, DictNode):
        return [ref for _, item in node.items for ref in every_ref(item)]
    if isinstance(node, ListNode):
        return [ref for item in node.nodes for ref in every_ref(item)]
    return list(node.refs)


def _compile_each(spec: dict[str, Any]) -> EachNode:
    unknown = sorted(set(spec) - set(EACH_MEMBERS))
    if unknown:
        raise TemplateSyntaxError("a $each object has only the members %s, not %s"
                                  % (", ".join(EACH_MEMBERS), ", ".join(map(repr, unknown))))
    name = spec.get("as")
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise TemplateSyntaxError("$each needs \"as\": the name (matching %s) its items are bound to as $name"
                                  % _NAME)
    if "emit" not in spec:
        raise TemplateSyntaxError("$each needs \"emit\": what each item renders to")
    source, key = spec["$each"], spec.get("key")
    if not isinstance(source, str):
        raise TemplateSyntaxError("$each takes a template rendering a list (such as \"$rows\"), not %s"
                                  % type(source).__name__)
    if "key" in spec and not isinstance(key, str):
        raise TemplateSyntaxError("the key of $each is a string template (such as \"{$%s.version}\")" % name)
    return EachNode(compile_value(source), name, compile_value(spec["emit"]),
                    compile_value(key) if key is not None else None, repr(source))


def compile_value(value: Any) -> Node:
    """Compile a JSON value whose strings may hold references; constant subtrees render as themselves, and an
    object with a "$each" member is a loop (EachNode)."""
    if isinstance(value, dict) and "$each" in value:
        return _compile_each(value)
    if isinstance(value, str):
        template = parse_template(value)
        if template.is_constant:
            return Const("".join(cast(list[str], template.parts)))  # a constant template's parts are all text
        return template
    if isinstance(value, dict):
        items = [(key, compile_value(item)) for key, item in value.items()]
        if all(isinstance(node, Const) for _, node in items):
            return Const({key: node.value for key, node in items if isinstance(node, Const)})
        return DictNode(items)
    if isinstance(value, list):
        nodes = [compile_value(item) for item in value]
        if all(isinstance(node, Const) for node in nodes):
            return Const([node.value for node in nodes if isinstance(node, Const)])
        return ListNode(nodes)
    return Const(value)


def whole_refs(node: Node) -> list[Ref]:
    """The references ``node`` renders as a whole value, unchanged: a string that is exactly one reference, with
    no path below its root ("$rows", not "$rows[0]" nor "rows: $rows"), wherever it sits in the value."""
    if isinstance(node, Template):
        ref = node.single
        return [ref] if ref is not None and not ref.path and ref.slice is None else []
    if isinstance(node, DictNode):
        return [ref for _, item in node.items for ref in whole_refs(item)]
    if isinstance(node, ListNode):
        return [ref for item in node.nodes for ref in whole_refs(item)]
    return []
