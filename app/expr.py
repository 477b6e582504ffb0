"""The interpolation grammar, parsed once at schema load and rendered per request.

Grammar (see OPERATIONS.md, "Interpolation"):

    template   := ( literal | field_ref | var_ref )*
    field_ref  := "{" name ( "." name )* [ "?" ] [ ":" start ":" length ] "}"
    var_ref    := "$" name ( "." name | "[" index "]" )* [ "?" ]
    escapes    := "{{" -> "{",  "}}" -> "}",  "$$" -> "$"

``{...}`` reads the *field* namespace: path parameters (normalized by normalize.entity), query parameters
bound by parse.query, then the top-level members of a JSON object body bound by parse.json (earlier sources
win). Two roots are reserved: ``{principal.*}`` reads the authenticated principal and ``{event.*}`` the event
being applied. ``$...`` reads the *variable* namespace: the outputs of earlier steps (``out``, ``out_size``...).

A template that is exactly one reference renders to the referenced value with its type intact. Rendered values
are never scanned again, so request data cannot inject references.
"""
import json
import re

from app.errors import DepotError

FIELD_ROOTS = ("principal", "event")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_FIELD_REF = re.compile(
    r"\{(?P<path>%s(?:\.%s)*)(?P<optional>\?)?(?::(?P<start>\d+):(?P<length>\d+))?\}" % (_NAME, _NAME))
_VAR_REF = re.compile(r"\$(?P<root>%s)(?P<rest>(?:\.%s|\[\d+\])*)(?P<optional>\?)?" % (_NAME, _NAME))
_VAR_STEP = re.compile(r"\.(%s)|\[(\d+)\]" % _NAME)
_MISSING = object()


class TemplateSyntaxError(ValueError):
    pass


class Ref:
    """One reference: where it reads from, the path below its root, and how it is shaped."""

    __slots__ = ("namespace", "root", "path", "optional", "slice", "source", "prefix", "lookup", "resolve",
                 "resolve_lenient")

    def __init__(self, namespace, root, path, optional=False, slice_=None, source=""):
        self.namespace = namespace  # "field", "principal", "event" or "var"
        self.root = root
        self.path = path  # tuple of str (mapping keys) / int (list indexes) below the root
        self.optional = optional
        self.slice = slice_
        self.source = source
        self.prefix = ""  # a "/" bound to an optional reference disappears with it
        # built once per reference, so rendering does no dispatch on its shape:
        self.lookup = _getter(namespace, root, path, slice_)  # ctx -> the value, or _MISSING
        self.resolve = _resolver(self)  # ctx -> the value; unbound is an error unless optional (then None)
        self.resolve_lenient = _lenient(self.lookup)  # ctx -> the value, or None when unbound


def _absent(optional, source):
    """What an unbound reference renders as: nothing when optional, else an error naming it."""
    if optional:
        return None
    raise DepotError("UNRESOLVED_REFERENCE", 500, "reference %s is not bound" % source)


def _resolver(ref):
    optional, source = ref.optional, ref.source
    root, null_is_unbound = ref.root, ref.namespace == "field"
    if ref.namespace in ("field", "var") and ref.slice is None:
        # the common cases, read directly: one call per reference, the path walked inline
        path = ref.path
        is_field = ref.namespace == "field"

        def resolve_direct(ctx):
            value = (ctx.fields if is_field else ctx.vars).get(root, _MISSING)
            for step in path:
                if value.__class__ is dict and step.__class__ is str:
                    value = value.get(step, _MISSING)
                elif value.__class__ is list and step.__class__ is int:
                    value = value[step] if -len(value) <= step < len(value) else _MISSING
                else:
                    value = _descend(value, step)
                if value is _MISSING:
                    break
            if value is _MISSING or (value is None and null_is_unbound):
                return _absent(optional, source)
            return value
        return resolve_direct
    lookup = ref.lookup

    def resolve(ctx):
        value = lookup(ctx)
        if value is _MISSING or (value is None and null_is_unbound):
            return _absent(optional, source)
        return value
    return resolve


def _lenient(lookup):
    def resolve_lenient(ctx):
        value = lookup(ctx)
        return None if value is _MISSING else value
    return resolve_lenient


def _getter(namespace, root, path, slice_):
    """Build the lookup for one reference once, so rendering does no dispatch on its shape."""
    if namespace == "field":
        def read_root(ctx):
            return ctx.fields.get(root, _MISSING)
    elif namespace == "var":
        def read_root(ctx):
            return ctx.vars.get(root, _MISSING)
    else:
        def read_root(ctx):
            value = getattr(ctx, namespace)
            return _MISSING if value is None else value
    if not path and slice_ is None:
        return read_root

    def lookup(ctx):
        value = read_root(ctx)
        for step in path:
            value = _descend(value, step)
            if value is _MISSING:
                return value
        if slice_ is not None and isinstance(value, str):
            value = value[slice_[0]:slice_[0] + slice_[1]]
        return value
    return lookup


def _descend(value, step):
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


def _stringify(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _check_key_segment(ref, text):
    if "/" in text or "\x00" in text or text in ("", ".", ".."):
        raise DepotError("INVALID_KEY_SEGMENT", 400, "value for %s is not a valid key segment" % ref.source, ref.root)


class Template:
    """A parsed string template."""

    __slots__ = ("source", "parts", "refs", "single")

    def __init__(self, source, parts):
        self.source = source
        self.parts = parts  # str literals and Ref objects
        self.refs = [p for p in parts if isinstance(p, Ref)]
        self.single = self.refs[0] if len(parts) == 1 and self.refs else None

    def render(self, ctx):
        if self.single is not None:
            return self.single.resolve(ctx)
        return self._join(ctx, None)

    def render_lenient(self, ctx):
        if self.single is not None:
            return self.single.resolve_lenient(ctx)
        return self.render(ctx)

    def render_key(self, ctx):
        """Render a storage key: substituted values may not add segments ('/', '..') or NUL."""
        return self._join(ctx, _check_key_segment)

    def _join(self, ctx, check):
        out = []
        for part in self.parts:
            if part.__class__ is str:
                out.append(part)
                continue
            value = part.resolve(ctx)
            if value is None:  # an absent optional reference: its segment disappears
                continue
            text = _stringify(value)
            if check is not None:
                check(part, text)
            out.append(part.prefix)
            out.append(text)
        return "".join(out)

    @property
    def is_constant(self):
        return not self.refs


def _parse_var(match):
    path = []
    for step in _VAR_STEP.finditer(match.group("rest")):
        path.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
    return Ref("var", match.group("root"), tuple(path), optional=bool(match.group("optional")),
               source=match.group(0))


def _parse_field(match):
    names = match.group("path").split(".")
    optional = bool(match.group("optional"))
    slice_ = None
    if match.group("start") is not None:
        slice_ = (int(match.group("start")), int(match.group("length")))
    if names[0] in FIELD_ROOTS:
        return Ref(names[0], names[0], tuple(names[1:]), optional, slice_, match.group(0))
    return Ref("field", names[0], tuple(names[1:]), optional, slice_, match.group(0))


def parse_template(source):
    """Parse one string into a Template; raises TemplateSyntaxError for a malformed reference."""
    parts, literal, i, n = [], [], 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "{}$" and source.startswith(ch * 2, i):
            literal.append(ch)
            i += 2
            continue
        match = None
        if ch == "{":
            match = _FIELD_REF.match(source, i)
            if match is None:
                raise TemplateSyntaxError("malformed reference at offset %d in %r (write '{{' for a literal '{')"
                                          % (i, source))
            ref = _parse_field(match)
        elif ch == "$":
            match = _VAR_REF.match(source, i)
            ref = _parse_var(match) if match else None
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
    refs = ()

    def __init__(self, value):
        self.value = value

    def render(self, ctx):
        return self.value

    render_lenient = render
    render_key = render


def fast_render(node):
    """The node's render function; for a lone reference, the reference's own resolve (one call less)."""
    single = getattr(node, "single", None)
    return single.resolve if single is not None else node.render


class DictNode:
    __slots__ = ("items", "refs", "_renders")

    def __init__(self, items):
        self.items = items
        self.refs = [r for _, node in items for r in node.refs]
        self._renders = [(key, fast_render(node)) for key, node in items]

    def render(self, ctx):
        return {key: render(ctx) for key, render in self._renders}

    def render_lenient(self, ctx):
        return {key: node.render_lenient(ctx) for key, node in self.items}


class ListNode:
    __slots__ = ("nodes", "refs")

    def __init__(self, nodes):
        self.nodes = nodes
        self.refs = [r for node in nodes for r in node.refs]

    def render(self, ctx):
        return [node.render(ctx) for node in self.nodes]

    def render_lenient(self, ctx):
        return [node.render_lenient(ctx) for node in self.nodes]


def compile_value(value):
    """Compile a JSON value whose strings may hold references; constant subtrees render as themselves."""
    if isinstance(value, str):
        template = parse_template(value)
        if template.is_constant:
            return Const("".join(template.parts))
        return template
    if isinstance(value, dict):
        items = [(key, compile_value(item)) for key, item in value.items()]
        if all(isinstance(node, Const) for _, node in items):
            return Const({key: node.value for key, node in items})
        return DictNode(items)
    if isinstance(value, list):
        nodes = [compile_value(item) for item in value]
        if all(isinstance(node, Const) for node in nodes):
            return Const([node.value for node in nodes])
        return ListNode(nodes)
    return Const(value)
