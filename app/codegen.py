"""Python functions generated once, at schema load, from compiled templates and pipelines.

Jinja's model: the schema is parsed into a tree, the tree writes Python source, the source is compiled once and
the resulting function runs per request. What a generated function does is exactly what the interpreted tree
would do; it only leaves out the per-request dispatch (loops over steps and path parts, shape checks decided at
load).

Safety: the source holds only names this module makes up and literals of two kinds, `repr` of a str or an
int taken from the schema's structure (dict keys, path steps). Every other value (op functions, bound
arguments, constants) is passed in as a global by name, never written into the source. Request data never
reaches the source at all: it exists only when the function runs.
"""
import itertools
from functools import lru_cache


class FunctionBuilder:
    """Collects the lines and globals of one generated function."""

    def __init__(self, name, params="ctx"):
        self.name = name
        self.params = params
        self.lines = []
        self.depth = 1  # the indentation of the next line, in levels
        self.env = {}
        self._names = itertools.count()

    def bind(self, value, hint="g"):
        """The global name under which the generated code sees ``value``."""
        name = "%s%d" % (hint, next(self._names))
        self.env[name] = value
        return name

    def local(self, hint="v"):
        return "%s%d" % (hint, next(self._names))

    def line(self, text, deeper=0):
        self.lines.append("    " * (self.depth + deeper) + text)

    def guarded(self, emit, fallback):
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

    def build(self):
        source = "def %s(%s):\n%s\n" % (self.name, self.params, "\n".join(self.lines))
        namespace = dict(self.env)
        exec(_compiled(source, self.name), namespace)  # noqa: S102 - source built from names and literals only
        function = namespace[self.name]
        function.generated_source = source  # for debugging: what this function is
        return function


@lru_cache(maxsize=4096)
def _compiled(source, name):
    """Schemas repeat the same shapes (`{namespace}`, `$rows[0].version`): compile each source text once."""
    return compile(source, "<depot:%s>" % name, "exec")


def literal(value):
    """A str or int from the schema's structure as Python source; anything else is refused (it must be bound)."""
    if value.__class__ not in (str, int):
        raise TypeError("only str and int literals are written into generated code, not %r" % type(value))
    return repr(value)
