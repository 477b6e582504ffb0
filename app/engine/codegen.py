"""Python functions generated once, at schema load, from compiled templates and pipelines.

Jinja's model: the schema is parsed into a tree, the tree writes Python source, the source is compiled once and
the resulting function runs per request. What a generated function does is exactly what the interpreted tree
would do; it only leaves out the per-request dispatch (loops over steps and path parts, shape checks decided at
load).

Safety: the source holds only names this module makes up and literals of two kinds, `repr` of a str or an
int taken from the schema's structure (dict keys, path steps). Every other value (op functions, bound
arguments, constants) is passed in as a global by name, never written into the source. Request data never
reaches the source at all: it exists only when the function runs.

The switch: ``DEPOT_CODEGEN=off`` in the environment when a schema is compiled turns generation off; each
place that generates keeps the interpreted path it falls back to, and uses it alone then (the same semantics,
without the speed). The test suite runs both ways (scripts/test.sh), so each executor is checked against the
other. Generated source is registered with ``linecache``: a traceback through generated code shows its line.
"""
import hashlib
import itertools
import linecache
import os
from functools import lru_cache
from types import CodeType
from typing import Any, Callable

SWITCH = "DEPOT_CODEGEN"


def enabled() -> bool:
    """Whether code is generated: unless ``DEPOT_CODEGEN`` is ``off`` (read when a schema is compiled)."""
    return os.environ.get(SWITCH, "on").strip().lower() != "off"


class FunctionBuilder:
    """Collects the lines and globals of one generated function."""

    def __init__(self, name: str, params: str = "ctx") -> None:
        self.name = name
        self.params = params
        self.lines: list[str] = []
        self.depth = 1  # the indentation of the next line, in levels
        self.env: dict[str, Any] = {}
        self._names = itertools.count()
        # plain reads already written, (namespace, root, path prefix) -> the local holding that value: the
        # function's reads are straight-line inside one guarded block and change nothing, so a later reference
        # going through the same prefix ($rows[0].version, $rows[0].variant) starts from that local
        self.reads: dict[tuple[Any, ...], str] = {}
        self.shapes: dict[str, str] = {}  # local -> the type ("dict", "list") it was checked to have

    def bind(self, value: Any, hint: str = "g") -> str:
        """The global name under which the generated code sees ``value``."""
        name = "%s%d" % (hint, next(self._names))
        self.env[name] = value
        return name

    def local(self, hint: str = "v") -> str:
        return "%s%d" % (hint, next(self._names))

    def line(self, text: str, deeper: int = 0) -> None:
        self.lines.append("    " * (self.depth + deeper) + text)

    def guarded(self, emit: Callable[["FunctionBuilder", str], Any], fallback: str) -> Any:
        """Write ``emit(builder, bail)`` inside one ``try``: a plain read that finds nothing (KeyError,
        IndexError) or a shape check that fails (it runs the statement ``bail``) ends in ``fallback``, a call
        expression. -> what ``emit`` returned."""
        bail = "return " + fallback
        self.line("try:")
        self.depth += 1
        written = len(self.lines)
        try:
            result = emit(self, bail)
            if len(self.lines) == written:  # nothing to read (constants only)
                self.line("pass")
        finally:
            self.depth -= 1
        self.line("except (KeyError, IndexError):")
        self.line(bail, 1)
        return result

    def build(self) -> Any:
        source = "def %s(%s):\n%s\n" % (self.name, self.params, "\n".join(self.lines))
        namespace = dict(self.env)
        code = _compiled(source, self.name)
        _register(code.co_filename, source)
        exec(code, namespace)  # noqa: S102 - source built from names and literals only
        function = namespace[self.name]
        function.generated_source = source  # for debugging: what this function is
        return function


@lru_cache(maxsize=4096)
def _compiled(source: str, name: str) -> CodeType:
    """Schemas repeat the same shapes (`{namespace}`, `$rows[0].version`): compile each source text once. The
    file name is the source's own (its digest), so the line a traceback shows is the one that ran."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return compile(source, "<depot-generated %s %s>" % (name, digest), "exec")


def _register(filename: str, source: str) -> None:
    """Make ``source`` what linecache (and so traceback) reads for ``filename``: no file holds it. Registered
    at every build, so a linecache.clearcache() forgets only the functions built before it."""
    if filename not in linecache.cache:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def literal(value: Any) -> str:
    """A str or int from the schema's structure as Python source; anything else is refused (it must be bound)."""
    if value.__class__ not in (str, int):
        raise TypeError("only str and int literals are written into generated code, not %r" % type(value))
    return repr(value)
