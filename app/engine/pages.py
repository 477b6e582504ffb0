"""Page templates (respond.render): Jinja2 source in the schema, checked and compiled at load, streamed per request.

Templates run in Jinja's immutable sandbox (no attribute of Python's internals, no method that changes a value
they are given) with strict undefined values (reading what is not there is an error, never empty text). What a
page sees is the pipeline's namespaces under fixed names (NAMESPACES): ``fields``, ``vars`` and ``principal``,
the ones `{...}` and `$...` references read. At load the checker reads the template's tree: a syntax error, a
name the page cannot see, an include or import (a page stands alone: there is no loader), or a ``vars.x`` or
``fields.x`` no earlier step can bind is an error at the argument's place, as for any other template.

Rendering streams: Jinja's ``generate`` yields the page piece by piece, and for-loops pull the values they walk
one at a time, so a lazy iterator of rows is never held whole. The first PREFETCH characters are rendered while
the pipeline runs, so a page that fails early (most do: the failure is in the first row) or that is small is
answered with a clean JSON error or sent with its length; past that, the page is sent as it renders, and a
failure can only cut the connection short, which the client sees as an incomplete body.
"""
from __future__ import annotations

import functools
import json
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.environment import Template as JinjaTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.errors import DepotError

log = logging.getLogger("depot")
PREFETCH = 64 * 1024  # characters rendered before the response is committed
CHUNK = 64 * 1024  # characters per chunk handed to the server after that
KEEP_LIMIT = 16 * 1024 * 1024  # characters of a page a page cache may keep (its own max_entry_bytes may say less)
# what a page sees -> the interpolation namespace it is (app.engine.expr: "field" is {name}, "var" is $name)
NAMESPACES = {"fields": "field", "vars": "var", "principal": "principal"}
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def _json(value: Any) -> str:
    """A value as compact JSON text, its keys in their own order: for JSON written by a page (an npm packument).
    Unlike Jinja's `tojson` it does not HTML-escape `<>&'` as \\u escapes nor sort keys, and it is plain text,
    so an HTML page still escapes it like any value."""
    return _COMPACT(value)


# Depot's filters beyond Jinja's builtins: a closed registry, filled here and nowhere else
FILTERS: dict[str, Callable[..., Any]] = {"json": _json}
_NO_LOADER = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


class PageSyntaxError(ValueError):
    pass


def _environment(escape: bool) -> ImmutableSandboxedEnvironment:
    """``escape``: substituted values are HTML-escaped (for HTML and XML pages)."""
    environment = ImmutableSandboxedEnvironment(autoescape=escape, undefined=StrictUndefined,
                                                keep_trailing_newline=True)
    environment.filters.update(FILTERS)
    return environment


_ENVIRONMENTS = {escape: _environment(escape) for escape in (True, False)}


@dataclass(frozen=True)
class PageSource:
    """A template's text, parsed and checked, and compiled escaping substituted values (``escaped``). ``reads``:
    (namespace, name, as written) of each field and variable it reads by name, for the binding analysis;
    ``namespaces``: the names of NAMESPACES it uses."""
    text: str
    reads: tuple[tuple[str, str, str], ...]
    namespaces: frozenset[str]
    escaped: JinjaTemplate

    def compile(self, escape: bool | None) -> Page:
        """The page, escaping substituted values when ``escape`` (None: both ways, chosen per request)."""
        templates = {} if escape is False else {True: self.escaped}
        if escape is not True:
            templates[False] = _unescaped(self.text)
        return Page(self, templates)


def parse_page(source: str | list[str]) -> PageSource:
    """Parse and check a template (a string, or a list of lines joined with newlines); PageSyntaxError says what
    is wrong and on which line."""
    return _parsed("\n".join(source) if isinstance(source, list) else source)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> PageSource:
    """A page's text parsed, checked and compiled once per process: a schema loaded again (a restart of the
    engine, a new version differing elsewhere, every test's depot) reuses it. PageSource is immutable, and a
    compiled Jinja template renders in any number of threads at once."""
    environment = _ENVIRONMENTS[True]
    try:
        tree = environment.parse(text)
        _check(tree)
        escaped = environment.from_string(text)  # what the compiler alone finds (a block defined twice...)
    except TemplateSyntaxError as exc:
        raise PageSyntaxError("template line %d: %s" % (exc.lineno, exc.message)) from None
    reads = frozenset(meta.find_undeclared_variables(tree) & set(NAMESPACES))
    return PageSource(text, tuple(_reads(tree)), reads, escaped)


@functools.lru_cache(maxsize=256)
def _unescaped(text: str) -> JinjaTemplate:
    return _ENVIRONMENTS[False].from_string(text)


def _check(tree: nodes.Template) -> None:
    """What a page may not do, each a PageSyntaxError naming its line: use a filter or test no registry has (Jinja
    finds an unknown test only when it runs), load other templates, set a name it reads the pipeline by, or read a
    name it cannot see."""
    environment = _ENVIRONMENTS[True]
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        kind, known = ("filter", environment.filters) if isinstance(node, nodes.Filter) else \
            ("test", environment.tests)
        if node.name not in known:
            raise PageSyntaxError("template line %d: unknown %s %r; expected one of: %s"
                                  % (node.lineno, kind, node.name, ", ".join(sorted(known))))
    for loading in tree.find_all(_NO_LOADER):
        raise PageSyntaxError("template line %d: a page cannot extend, include or import other templates"
                              % loading.lineno)
    for name in tree.find_all(nodes.Name):
        if name.ctx != "load" and name.name in NAMESPACES:
            raise PageSyntaxError("template line %d: %r is what the page reads the pipeline's %s by; it cannot be "
                                  "set" % (name.lineno, name.name, name.name))
    unknown = meta.find_undeclared_variables(tree) - set(NAMESPACES) - set(environment.globals)
    if unknown:
        first = min((n for n in tree.find_all(nodes.Name) if n.name in unknown), key=lambda n: n.lineno)
        raise PageSyntaxError("template line %d: unknown name %r; a page reads %s (and the names it sets itself)"
                              % (first.lineno, first.name, ", ".join(NAMESPACES)))


def _reads(tree: nodes.Template) -> Iterator[tuple[str, str, str]]:
    """fields.x, fields["x"], vars.x, vars["x"]: the names read from the pipeline's namespaces."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            root, name = node.node, node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and \
                isinstance(node.arg.value, str):
            root, name = node.node, node.arg.value
        else:  # a name worked out per request: nothing to check at load
            continue
        if isinstance(root, nodes.Name) and root.name in ("fields", "vars"):
            yield NAMESPACES[root.name], name, "%s.%s" % (root.name, name)


class Page:
    """A compiled page: ``stream(ctx, escape)`` renders it for one request."""

    def __init__(self, source: PageSource, templates: dict[bool, JinjaTemplate]) -> None:
        self.source = source
        self.templates = templates
        self.principal = "principal" in source.namespaces  # resolved (a token check) only for pages that read it

    def stream(self, ctx: Any, escape: bool, keep: Callable[[str], Any] | None = None) -> RenderedText:
        """``keep``: called with the whole text once it has rendered to its end (a page cache), if it stays
        within KEEP_LIMIT characters."""
        seen = {"fields": ctx.fields, "vars": ctx.vars}
        if self.principal:
            seen["principal"] = ctx.principal
        return RenderedText(self.templates[escape].generate(seen), keep)


class CachedText:
    """A page a page cache kept, sent as it was rendered (the same interface as RenderedText)."""

    def __init__(self, text: str) -> None:
        self.head = _encode(text)
        self.length = len(self.head)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head

    def close(self) -> None:
        pass


class RenderedText:
    """A page being rendered, as UTF-8 chunks. The first PREFETCH characters are rendered on creation: a failure
    there raises a DepotError now; ``length`` is the page's size in bytes when it was rendered whole, else None.
    Iterating sends the rest as it renders; ``close`` stops the rendering (the response is done or abandoned)."""

    def __init__(self, pieces: Iterator[str], keep: Callable[[str], Any] | None = None) -> None:
        self.pieces = pieces
        try:
            text, self.finished = _take(pieces, PREFETCH)
        except Exception as exc:
            raise render_failed(exc) from None
        self.head = _encode(text)
        self.length = len(self.head) if self.finished else None
        self.keep, self.kept = keep, [text] if keep is not None else None
        if self.finished:
            self._keep()

    def __iter__(self) -> Iterator[bytes]:
        if self.head:
            yield self.head
        while not self.finished:
            try:
                text, self.finished = _take(self.pieces, CHUNK)
            except Exception as exc:  # the status line is sent: all that is left is to cut the body short
                error = render_failed(exc)
                log.error("page rendering failed after the response started; the body is cut short: %s",
                          error.message)
                raise error from exc
            if self.kept is not None:
                self.kept.append(text)
                if len(self.kept) * CHUNK > KEEP_LIMIT:
                    self.kept = None  # too large to keep: rendered again next time
            if self.finished:
                self._keep()
            yield _encode(text)

    def _keep(self) -> None:
        if self.keep is not None and self.kept is not None:
            self.keep("".join(self.kept))
        self.kept = None

    def close(self) -> None:
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()


def _take(pieces: Iterator[str], size: int) -> tuple[str, bool]:
    """At least ``size`` characters from ``pieces`` (fewer at the end), and whether the end was reached."""
    taken: list[str] = []
    count = 0
    for piece in pieces:
        taken.append(piece)
        count += len(piece)
        if count >= size:
            return "".join(taken), False
    return "".join(taken), True


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "replace")  # a lone surrogate (possible in JSON input) cannot be UTF-8: "?"


def render_failed(exc: Exception) -> DepotError:
    """The error a failed rendering answers: a DepotError raised below it (a store's, a budget's) as it is; any
    other 500 RENDER_FAILED naming the template line. A template's own faults (undefined, unsafe) say what they
    are; anything else is named by its type only, its details logged, never sent."""
    if isinstance(exc, DepotError):
        return exc
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == "<template>"]
    where = " at template line %d" % lines[-1] if lines and lines[-1] is not None else ""
    if isinstance(exc, TemplateError):
        what = "%s: %s" % (type(exc).__name__, exc.message)
    else:
        log.error("page rendering failed%s", where, exc_info=exc)
        what = type(exc).__name__
    return DepotError("RENDER_FAILED", 500, "the page could not be rendered%s (%s)" % (where, what))
