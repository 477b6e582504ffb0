"""Schema-level checks, run after the routes compile.

- Pipeline structure: transactions open and close in order, writes that need one have one, routes end by
  responding, documents written carry the fields their schema requires.
- ``validation.load_time_checks``: a closed registry of predicates (an unknown one is an error).
- ``validation.runtime_checks``: decided statically where possible and reported; the engine enforces them
  per request when their on_fail is abort_request.
- ``invariants``: conditions over the schema itself, each violation reported with its id.
- ``gc.sweep.mark.mark_blobs_by`` names declared documents; keys the server accepts but does not act on are
  reported (app.engine.schema_keys).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from app.engine import schema_keys
from app.engine.compiled import Definitions, Pipeline, Route, RuntimeChecks, Step
from app.engine.conditions import ConditionError, ExtraKeyword, Operand, OperandMaker, Predicate, compile_condition
from app.engine.expr import Ref
from app.engine.opspec import REGISTRY, OpDecl, unknown_ref_message
from app.engine.report import ERROR, WARNING, Report, place
from app.stores.interfaces import JsonValue

Pipelines = list[tuple[Pipeline, bool]]  # every pipeline once, and whether it is a route's
Problems = list[tuple[Optional[str], str]]  # (place, or None for the check's own, message)
CheckPredicate = Callable[["Subject", JsonValue, Pipelines], Problems]  # (subject, its argument, pipelines)

LOAD_PREDICATES: dict[str, CheckPredicate] = {}
RUNTIME_PREDICATES: dict[str, CheckPredicate] = {}
MAX_RETRY_ATTEMPTS = 10


def load_predicate(name: str) -> Callable[[CheckPredicate], CheckPredicate]:
    def register(fn: CheckPredicate) -> CheckPredicate:
        LOAD_PREDICATES[name] = fn
        return fn
    return register


def runtime_predicate(name: str, enforces: str) -> Callable[[CheckPredicate], CheckPredicate]:
    """A runtime check's static predicate; ``enforces`` names the engine flag that an on_fail of abort_request
    turns on, so the engine also refuses violating requests as they run."""
    def register(fn: CheckPredicate) -> CheckPredicate:
        setattr(fn, "enforces", enforces)  # an attribute of the function itself: _run_check reads it back
        RUNTIME_PREDICATES[name] = fn
        return fn
    return register


@dataclass(frozen=True)
class Subject:
    """What the checks look at: the schema document, its compiled definitions, routes and apply pipelines."""
    doc: dict[str, Any]
    definitions: Definitions
    routes: Sequence[Route]
    apply_pipelines: Mapping[str, Pipeline]  # event type -> the pipeline replaying it


def run_all(c: Subject, report: Report) -> RuntimeChecks:
    """Run every schema-level check on ``c``, reporting into ``report``; returns what the engine enforces."""
    pipelines = _pipelines(c)
    for pipeline, is_route in pipelines:
        _check_structure(report, pipeline, is_route)
        _check_document_writes(c, report, pipeline)
    validation = c.doc.get("validation", {})
    for i, check in enumerate(validation.get("load_time_checks", [])):
        _run_check(c, report, check, place("validation.load_time_checks", i), LOAD_PREDICATES,
                   {"reject_config": ERROR, "warn": WARNING}, pipelines)
    enforced: dict[str, bool] = {}
    for i, check in enumerate(validation.get("runtime_checks", [])):
        flag = _run_check(c, report, check, place("validation.runtime_checks", i), RUNTIME_PREDICATES,
                          {"abort_request": WARNING, "warn": WARNING}, pipelines)
        if check.get("on_fail") == "abort_request" and flag:
            enforced[flag] = True
    _check_invariants(c.doc, report)
    _check_gc_marks(c, report)
    schema_keys.check(c.doc, report)
    return RuntimeChecks(**enforced)


def _pipelines(c: Subject) -> Pipelines:
    seen: set[int] = set()
    out: Pipelines = []
    for route in c.routes:
        out.append((route.pipeline, True))
    for pipeline in c.apply_pipelines.values():
        if id(pipeline) not in seen:
            seen.add(id(pipeline))
            out.append((pipeline, False))
    return out


def _run_check(c: Subject, report: Report, check: dict[str, JsonValue], where: str,
               registry: dict[str, CheckPredicate], severities: dict[str, str],
               pipelines: Pipelines) -> Optional[str]:
    on_fail = check.get("on_fail", "reject_config" if registry is LOAD_PREDICATES else "abort_request")
    severity = severities.get(on_fail)
    if severity is None:
        report.error(where + ".on_fail", "unknown on_fail %r; expected one of: %s" % (on_fail,
                                                                                     ", ".join(severities)))
        return None
    require = check["require"]
    if not isinstance(require, dict) or not require:
        report.error(where + ".require", "require is an object of predicates")
        return None
    flag: Optional[str] = None
    for name, arg in require.items():
        predicate = registry.get(name)
        if predicate is None:
            report.error(place(where, "require", name), "unknown predicate %r; expected one of: %s"
                         % (name, ", ".join(sorted(registry))))
            continue
        flag = getattr(predicate, "enforces", flag)
        for problem_place, message in predicate(c, arg, pipelines):
            report.add(severity, problem_place or place(where, "require", name), message, check["id"])
    return flag


def resolve_path(doc: JsonValue, path: str) -> JsonValue:
    """'storage.blob_stores.primary.addressing.mode' -> the value there, or None."""
    value = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _glob(value: JsonValue, parts: list[str], where: str) -> list[tuple[str, JsonValue]]:
    """Values at a path with '[]' (each list item) and '*' (each mapping value): [(place, value)]."""
    if not parts:
        return [(where, value)]
    head, rest = parts[0], parts[1:]
    if head == "*":
        items = value.items() if isinstance(value, dict) else []
        return [hit for k, v in items for hit in _glob(v, rest, place(where, k))]
    name, each = (head[:-2], True) if head.endswith("[]") else (head, False)
    if not isinstance(value, dict) or name not in value:
        return []
    inner, inner_place = value[name], place(where, name)
    if not each:
        return _glob(inner, rest, inner_place)
    items = inner if isinstance(inner, list) else []
    return [hit for i, item in enumerate(items) for hit in _glob(item, rest, place(inner_place, i))]


# --- load-time predicates ---------------------------------------------------------------------------------

@load_predicate("equals")
def _equals(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """[schema path, value]: the schema holds that value at that path."""
    if not isinstance(arg, list) or len(arg) != 2 or not isinstance(arg[0], str):
        return [(None, "equals takes [schema path, expected value]")]
    found = resolve_path(c.doc, arg[0])
    if found != arg[1]:
        return [(arg[0], "expected %r, found %r" % (arg[1], found))]
    return []


@load_predicate("pipelines_only_use_ops_in")
def _ops_in(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """a schema path (e.g. "ops.allowed"): every pipeline step uses an op listed there."""
    allowed = resolve_path(c.doc, arg) if isinstance(arg, str) else arg
    if not isinstance(allowed, list):
        return [(None, "pipelines_only_use_ops_in names a list (such as 'ops.allowed')")]
    return [(step_place + ".op", "op %r is not in %s" % (op, arg if isinstance(arg, str) else "the allowed list"))
            for step_place, op, _ in _raw_steps(c.doc) if op not in allowed]


@load_predicate("all_entity_refs_exist")
def _entity_refs(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """true: every `entity` argument names an entity the schema defines."""
    entities = c.definitions["entity"]
    return [(step_place + ".args.entity", unknown_ref_message("entity", args["entity"], entities))
            for step_place, _, args in _raw_steps(c.doc)
            if "entity" in args and args["entity"] not in entities] if arg else []


@load_predicate("unique")
def _unique(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """[path, ...] with `[]` (each list item) and `*` (each mapping value): the values found are distinct."""
    problems: Problems = []
    for path in arg if isinstance(arg, list) else [arg]:
        hits = _glob(c.doc, path.split("."), "")
        counts = Counter(repr(v) for _, v in hits)
        problems += [(p, "%r is not unique across %s" % (v, path)) for p, v in hits if counts[repr(v)] > 1]
    return problems


def _proxy_upstreams(c: Subject) -> Iterator[tuple[str, str, JsonValue]]:
    for step_place, op, args in _raw_steps(c.doc):
        if op == "proxy.fetch" and args.get("upstream") in c.doc.get("upstreams", {}):
            yield step_place, args["upstream"], c.doc["upstreams"][args["upstream"]]


@load_predicate("proxy_fetch_requires_timeouts")
def _proxy_timeouts(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """true: every upstream a proxy.fetch uses sets timeouts_ms.connect and timeouts_ms.read."""
    return [(place("upstreams", name, "timeouts_ms"), "proxy.fetch at %s uses upstream %s, which needs "
             "timeouts_ms.connect and timeouts_ms.read" % (where, name))
            for where, name, spec in _proxy_upstreams(c)
            if arg and not {"connect", "read"} <= set(spec.get("timeouts_ms", {}))]


@load_predicate("proxy_fetch_requires_retry_bounds")
def _proxy_retries(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """true: every upstream a proxy.fetch uses bounds retry.max_attempts (1 to 10) and sets backoff_ms."""
    return [(place("upstreams", name, "retry"), "proxy.fetch at %s uses upstream %s, which needs "
             "retry.max_attempts (at most %d) and retry.backoff_ms" % (where, name, MAX_RETRY_ATTEMPTS))
            for where, name, spec in _proxy_upstreams(c)
            if arg and not (0 < spec.get("retry", {}).get("max_attempts", 0) <= MAX_RETRY_ATTEMPTS
                            and "backoff_ms" in spec.get("retry", {}))]


def _raw_steps(doc: dict[str, JsonValue]) -> Iterator[tuple[str, JsonValue, JsonValue]]:
    for i, route in enumerate(doc.get("api", {}).get("routes", [])):
        for j, step in enumerate(route.get("pipeline", [])):
            yield place("api.routes", i, "pipeline", j), step.get("op"), step.get("args", {})
    for name, steps in doc.get("replication", {}).get("apply_pipelines", {}).items():
        for j, step in enumerate(steps):
            yield place("replication.apply_pipelines", name, j), step.get("op"), step.get("args", {})


# --- runtime predicates, decided statically where they can be ---------------------------------------------

@runtime_predicate("all_blob_puts_followed_by", enforces="digest_verify")
def _blob_puts_verified(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """an op name: every blob.put is followed by that op (blob.verify_digest) on its digest; at run time a
    transaction holding an unverified blob is refused at commit (`500 RUNTIME_CHECK_FAILED`, nothing stored)."""
    problems: Problems = []
    for pipeline, _ in pipelines:
        for i, step in enumerate(pipeline.steps):
            if step.op != "blob.put":
                continue
            out = "$" + step.args.out
            followed = any(later.op == arg and out in _sources(later) for later in pipeline.steps[i + 1:])
            if not followed:
                problems.append((step.place, "blob.put is not followed by %s of %s; on_fail aborts every request "
                                 "that reaches this step" % (arg, out)))
    return problems


def _sources(step: Step) -> set[str]:
    return {ref.source for node in vars(step.args).values() for ref in getattr(node, "refs", ())}


@runtime_predicate("all_kv_or_index_writes_inside_txn", enforces="txn_for_writes")
def _writes_in_txn(c: Subject, arg: JsonValue, pipelines: Pipelines) -> Problems:
    """true: KV and index writes happen between txn.begin and txn.commit; at run time a write outside one
    is refused (`500 RUNTIME_CHECK_FAILED`)."""
    problems: Problems = []
    for pipeline, _ in pipelines:
        in_txn = False
        for step in pipeline.steps:
            if step.when is None or step.decl.opens_txn:  # a conditional commit ends its branch, not the rest
                in_txn = _txn_state(step.decl, in_txn)
            if step.decl.writes and not in_txn:
                problems.append((step.place, "%s writes outside a transaction" % step.op))
    return problems


def _txn_state(decl: OpDecl, in_txn: bool) -> bool:
    """Whether a transaction is open after a step of ``decl``'s op."""
    if decl.opens_txn:
        return True
    if decl.closes_txn:
        return False
    return in_txn


# --- structure ----------------------------------------------------------------------------------------------

def _check_structure(report: Report, pipeline: Pipeline, is_route: bool) -> None:
    """Transactions open and close in order (the ops' opens_txn, closes_txn and needs_txn flags); routes end
    with a terminal step. A conditional step closing the transaction may not run, so the transaction counts as
    open after it (a later unconditional commit is expected)."""
    in_txn = False
    opened_at: Optional[str] = None
    for step in pipeline.steps:
        decl = step.decl
        if decl.opens_txn and in_txn:
            report.error(step.place, "%s inside the transaction opened at %s"
                         % (step.op, report.display(opened_at or "")))
        if decl.needs_txn and not in_txn:
            report.error(step.place, "%s needs an open transaction" % step.op)
        if decl.opens_txn:
            opened_at = step.place
        if decl.terminal and step.when is None and in_txn:
            report.error(step.place, "responds while the transaction opened at %s is still open; commit or "
                         "abort it first" % report.display(opened_at or ""))
        if step.when is None or decl.opens_txn:
            in_txn = _txn_state(decl, in_txn)
    if in_txn:
        report.error(pipeline.place, "the transaction opened at %s is never committed"
                     % report.display(opened_at or ""))
    if is_route:
        last = pipeline.steps[-1] if pipeline.steps else None
        if last is None or not last.decl.terminal or last.when is not None:
            report.error(pipeline.place, "a route pipeline must end with an unconditional respond step: one whose "
                         "op ends the pipeline (%s)" % ", ".join(terminal_ops()))


def terminal_ops() -> list[str]:
    """The ops declared terminal (they end a pipeline), by name."""
    return sorted(name for name, decl in REGISTRY.items() if decl.terminal)


def _check_document_writes(c: Subject, report: Report, pipeline: Pipeline) -> None:
    """A document written from a literal object must carry every field its schema requires; one written from a
    replayed event must come from an event type whose schema guarantees them."""
    event_types = [name for name, p in c.apply_pipelines.items() if p is pipeline]
    for step in pipeline.steps:
        if step.op not in ("kv.put", "kv.cas_put") or step.args.doc.validator is None:
            continue
        required = set(step.args.doc.validator.schema.get("required", []))
        value = step.args.value
        items = getattr(value, "items", None)
        if isinstance(items, list) or isinstance(getattr(value, "value", None), dict):
            keys = {k for k, _ in items} if isinstance(items, list) else set(value.value)
            missing = sorted(required - keys)
            if missing:
                report.error(step.place + ".args.value", "document %s requires %s, which this value never has"
                             % (step.args.doc.name, ", ".join(missing)))
            continue
        single = getattr(value, "single", None)
        if single is not None and single.namespace == "event" and single.path == ("payload",):
            for name in event_types:
                guaranteed = set(c.definitions["event_type"][name].validator.schema.get("required", []))
                missing = sorted(required - guaranteed)
                if missing:
                    report.warning(step.place + ".args.value",
                                   "replaying %s writes its payload as document %s, which requires %s; the event "
                                   "schema does not guarantee them, so such events will be rejected on apply"
                                   % (name, step.args.doc.name, ", ".join(missing)), "document_schemas")


# --- garbage collection -------------------------------------------------------------------------------------

def _check_gc_marks(c: Subject, report: Report) -> None:
    """Each mark (document.field) names a declared document: a misspelt one would mark nothing, and a collection
    would then remove every blob that document names."""
    documents = c.definitions["document"]
    marks = c.doc.get("gc", {}).get("sweep", {}).get("mark", {}).get("mark_blobs_by", [])
    for i, mark in enumerate(marks):
        name = mark.partition(".")[0]
        if name not in documents:
            report.error(place("gc.sweep.mark.mark_blobs_by", i), unknown_ref_message("document", name, documents))


# --- invariants ---------------------------------------------------------------------------------------------

def _check_invariants(doc: dict[str, JsonValue], report: Report) -> None:
    for group, items in doc.get("invariants", {}).items():
        if not isinstance(items, list):
            report.error(place("invariants", group), "an invariant group is a list")
            continue
        for i, inv in enumerate(items):
            where = place("invariants", group, i)
            if not isinstance(inv, dict) or "id" not in inv or "assert" not in inv:
                report.error(where, "an invariant has an id and an assert")
                continue
            try:
                predicate = compile_condition(inv["assert"], where + ".assert", _schema_operand(doc),
                                              extra={"route_requires": _route_requires(doc)})
            except ConditionError as exc:
                report.error(exc.place or where, str(exc))
                continue
            on_fail = inv.get("on_fail", "warn")
            if on_fail not in ("warn", "reject_config"):
                report.error(where + ".on_fail", "unknown on_fail %r; expected one of: warn, reject_config"
                             % on_fail)
                continue
            if not predicate(None):
                severity = ERROR if on_fail == "reject_config" else WARNING
                report.add(severity, where, "invariant violated: %s" % inv.get("description", inv["id"]),
                           inv["id"])


def _schema_operand(doc: dict[str, JsonValue]) -> OperandMaker:
    """In invariants a string whose first segment names a top-level section is a path into the schema."""
    def make(value: JsonValue) -> tuple[Operand, Sequence[Ref]]:
        if isinstance(value, str) and "." in value and value.split(".", 1)[0] in doc:
            return (lambda ctx: resolve_path(doc, value)), ()
        return (lambda ctx: value), ()
    return make


def _route_requires(doc: dict[str, JsonValue]) -> ExtraKeyword:
    def compile_(arg: JsonValue, where: str) -> Predicate:
        if not isinstance(arg, dict):
            raise ConditionError("route_requires maps route ids to lists of {op, args_contains}", where)
        routes = {r["id"]: r for r in doc["api"]["routes"]}

        def holds(ctx: Any) -> bool:
            for route_id, needs in arg.items():
                steps = routes.get(route_id, {}).get("pipeline")
                if steps is None:
                    return False
                for need in needs:
                    if not any(s["op"] == need.get("op") and
                               all(s.get("args", {}).get(k) == v for k, v in need.get("args_contains", {}).items())
                               for s in steps):
                        return False
            return True
        return holds
    return compile_
