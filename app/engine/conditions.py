"""`when` conditions, compiled once into predicate closures.

One small function per keyword, looked up in a registry (the jsonschema model). Operands are templates
rendered leniently: a reference that cannot be resolved reads as null, so ``{"is_null": "$meta"}`` and
``{"not_in": ["$up_resp.status", [200]]}`` work whether or not the step that binds them ran.
An unknown keyword is a load error, never "true".
"""
from typing import Any, Callable, Optional, Sequence

from app.engine.expr import Ref, compile_value
from app.engine.versions import DEFAULT_SCHEME, SCHEMES, VersionScheme
from app.stores.interfaces import JsonValue

# A condition's ctx is whatever its caller evaluates it against: an ExecutionContext, a RowContext, or nothing
# (None, for an invariant over the schema), so it is Any here.
Predicate = Callable[[Any], bool]
Operand = Callable[[Any], JsonValue]  # ctx -> the operand's value
OperandMaker = Callable[[JsonValue], tuple[Operand, Sequence[Ref]]]  # operand spec -> (its fn, the refs it reads)
ExtraKeyword = Callable[[JsonValue, str], Predicate]  # (argument, place) -> predicate

# name -> (the keyword's builder, its arity); the builder's parameters depend on the arity (see ``keyword``)
KEYWORDS: dict[str, tuple[Callable[..., Predicate], str]] = {}


class ConditionError(ValueError):
    def __init__(self, message: str, place: str = "") -> None:
        super().__init__(message)
        self.place = place


def keyword(name: str, arity: str) -> Callable[[Callable[..., Predicate]], Callable[..., Predicate]]:
    """arity: "one" (a single operand), "two" (a pair), "conds" (a list of conditions), "cond_pair" (exactly
    two conditions), "cond" (one condition), "version" (a version operand and the versioning scheme it is read
    under: the one in force where the condition is, or {"version": operand, "scheme": name})."""
    def register(fn: Callable[..., Predicate]) -> Callable[..., Predicate]:
        KEYWORDS[name] = (fn, arity)
        return fn
    return register


def _empty(value: JsonValue) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


@keyword("equals", "two")
def _equals(a: Operand, b: Operand) -> Predicate:
    return lambda ctx: a(ctx) == b(ctx)


@keyword("not_equals", "two")
def _not_equals(a: Operand, b: Operand) -> Predicate:
    return lambda ctx: a(ctx) != b(ctx)


@keyword("in", "two")
def _in(a: Operand, b: Operand) -> Predicate:
    return lambda ctx: _member(a(ctx), b(ctx))


@keyword("not_in", "two")
def _not_in(a: Operand, b: Operand) -> Predicate:
    return lambda ctx: not _member(a(ctx), b(ctx))


def _member(item: JsonValue, collection: JsonValue) -> bool:
    try:
        return item in (collection or ())
    except TypeError:
        return False


@keyword("is_null", "one")
def _is_null(a: Operand) -> Predicate:
    return lambda ctx: a(ctx) is None


@keyword("is_not_null", "one")
def _is_not_null(a: Operand) -> Predicate:
    return lambda ctx: a(ctx) is not None


@keyword("is_empty", "one")
def _is_empty(a: Operand) -> Predicate:
    return lambda ctx: _empty(a(ctx))


@keyword("is_not_empty", "one")
def _is_not_empty(a: Operand) -> Predicate:
    return lambda ctx: not _empty(a(ctx))


@keyword("contains", "two")
def _contains(a: Operand, b: Operand) -> Predicate:
    """a (a string) contains b, ignoring case."""
    return lambda ctx: _text_test(a(ctx), b(ctx), lambda x, y: y in x)


@keyword("starts_with", "two")
def _starts_with(a: Operand, b: Operand) -> Predicate:
    """a (a string) starts with b, ignoring case."""
    return lambda ctx: _text_test(a(ctx), b(ctx), str.startswith)


def _text_test(a: JsonValue, b: JsonValue, test: Callable[[str, str], bool]) -> bool:
    return isinstance(a, str) and isinstance(b, str) and test(a.lower(), b.lower())


@keyword("is_prerelease", "version")
def _is_prerelease(a: Operand, scheme: VersionScheme) -> Predicate:
    """the operand is a version of the scheme with a pre-release part (semver 1.0.0-rc.1, pep440 2.0rc1)."""
    test = scheme.is_prerelease
    return lambda ctx: test(a(ctx))


@keyword("all", "conds")
def _all(preds: list[Predicate]) -> Predicate:
    return lambda ctx: all(p(ctx) for p in preds)


@keyword("any", "conds")
def _any(preds: list[Predicate]) -> Predicate:
    return lambda ctx: any(p(ctx) for p in preds)


@keyword("not", "cond")
def _not(pred: Predicate) -> Predicate:
    return lambda ctx: not pred(ctx)


@keyword("implies", "cond_pair")
def _implies(preds: list[Predicate]) -> Predicate:
    first, second = preds
    return lambda ctx: (not first(ctx)) or second(ctx)


def _template_operand(value: JsonValue) -> tuple[Operand, Sequence[Ref]]:
    """-> (fn(ctx), the references it reads)."""
    node = compile_value(value)
    single = getattr(node, "single", None)
    return (single.resolve_lenient if single is not None else node.render_lenient), node.refs


def compile_condition(spec: JsonValue, place: str, make_operand: Optional[OperandMaker] = None,
                      refs: Optional[list[Ref]] = None, extra: Optional[dict[str, ExtraKeyword]] = None,
                      scheme: Optional[VersionScheme] = DEFAULT_SCHEME,
                      no_scheme: str = "") -> Predicate:
    """Compile a condition object into ``predicate(ctx) -> bool``.

    ``make_operand`` turns an operand into ``(fn(ctx), refs)``; by default operands are templates. ``refs`` (a list),
    when given, collects every template reference the condition reads, for binding analysis. ``extra`` adds
    keywords for one caller (name -> fn(arg, place) -> predicate), as the invariant checker does. ``scheme`` is
    the versioning scheme in force (None: none is, and ``no_scheme`` says why): version keywords read their
    operand under it unless they name their own.
    """
    make_operand = make_operand or _template_operand
    known = sorted(set(KEYWORDS) | set(extra or ()))
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConditionError("a condition is an object with exactly one keyword (one of: %s)" % ", ".join(known),
                             place)
    (name, arg), = spec.items()
    here = "%s.%s" % (place, name)
    if extra and name in extra:
        return extra[name](arg, here)
    if name not in KEYWORDS:
        raise ConditionError("unknown condition %r; expected one of: %s" % (name, ", ".join(known)), here)
    fn, arity = KEYWORDS[name]

    def operand(value: JsonValue) -> Operand:
        fn, reads = make_operand(value)
        if refs is not None:
            refs.extend(reads)
        return fn

    if arity == "one":
        return fn(operand(arg))
    if arity == "version":
        version, named = _version_operand(name, arg, here, scheme, no_scheme)
        return fn(operand(version), named)
    if arity == "two":
        if not isinstance(arg, list) or len(arg) != 2:
            raise ConditionError("%r takes a list of two operands" % name, here)
        return fn(operand(arg[0]), operand(arg[1]))
    if arity == "cond":
        return fn(compile_condition(arg, here, make_operand, refs, extra, scheme, no_scheme))
    if arity == "cond_pair" and (not isinstance(arg, list) or len(arg) != 2):
        raise ConditionError("%r takes a list of exactly two conditions" % name, here)
    if not isinstance(arg, list) or not arg:
        raise ConditionError("%r takes a non-empty list of conditions" % name, here)
    return fn([compile_condition(c, "%s[%d]" % (here, i), make_operand, refs, extra, scheme, no_scheme)
               for i, c in enumerate(arg)])


def _version_operand(name: str, arg: JsonValue, here: str, scheme: Optional[VersionScheme],
                     no_scheme: str) -> tuple[JsonValue, VersionScheme]:
    """(the version operand, its scheme): ``arg`` itself under the scheme in force, or
    {"version": operand, "scheme": name}."""
    if not isinstance(arg, dict):
        if scheme is None:
            raise ConditionError("%s: no versioning scheme is in force here (%s); name one: {\"version\": ..., "
                                 "\"scheme\": ...}" % (name, no_scheme), here)
        return arg, scheme
    if set(arg) != {"version", "scheme"}:
        raise ConditionError("%r takes a version operand, or an object {\"version\": operand, \"scheme\": name}"
                             % name, here)
    named = SCHEMES.get(arg["scheme"]) if isinstance(arg["scheme"], str) else None
    if named is None:
        raise ConditionError("unknown versioning scheme %r; expected one of: %s"
                             % (arg["scheme"], ", ".join(sorted(SCHEMES))), here + ".scheme")
    return arg["version"], named
