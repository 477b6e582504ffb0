"""Generated code (app/engine/codegen.py) must do exactly what the interpreted tree does.

References, dict/list templates, normalizer chains and pipelines are compiled to Python functions at load. Each
test here renders the same template both ways over the same namespaces and asserts the same value or the same
error, including the shapes the generated code leaves to the interpreted path (tuples, blob handles, dict
subclasses, strings under an index, nulls, optionals). Pipeline runners are checked the same way: each runner
test runs with both executors (app/engine/runner.py), and the same requests go through a depot compiled each way."""
import traceback
from collections import OrderedDict
from itertools import product
from types import SimpleNamespace

import pytest

from app.engine.budget import BudgetClock, CollectorPauses, budget_clock
from app.engine.codegen import FunctionBuilder, literal
from app.engine.compiled import PlanStep
from app.engine.compiler import compile_schema
from app.engine.runner import build_runner, generate_runner, interpret_runner
from app.engine.definitions import chain, compile_normalizer
from app.errors import DepotError
from app.engine.expr import DictNode, compile_value, parse_template
from app.stores.blobs import BlobRef
from app.tools.testing import ManualClock
from tests.conftest import Namespaces

STILL = budget_clock(ManualClock())  # the runner's clock in tests that are not about the CPU budget
EXECUTORS = pytest.mark.parametrize("make_runner", [generate_runner, interpret_runner], ids=["generated",
                                                                                            "interpreted"])


@pytest.fixture(autouse=True)
def _generating(monkeypatch):
    """These tests are about generated code: it is generated whatever DEPOT_CODEGEN the suite runs under (the
    tests comparing both ways choose each explicitly)."""
    monkeypatch.setenv("DEPOT_CODEGEN", "on")
BLOB = BlobRef("artifacts", "sha256:" + "ab" * 32, 12, "/nowhere")

# values a reference may meet on its way down: the generated code reads dicts and lists itself and hands
# anything else to the interpreted path
SHAPES = {
    "dict": {"version": "1.2.3", "n": 0},
    "nested": {"a": {"b": [10, {"c": "deep"}]}},
    "list": [{"version": "2.0.0"}, {"version": "1.0.0"}],
    "empty_list": [],
    "tuple": ({"version": "3.0.0"},),
    "string": "abc",
    "null": None,
    "zero": 0,
    "false": False,
    "blob": BLOB,
    "ordered": OrderedDict(version="4.0.0"),
}
REFERENCES = ["$x", "$x?", "$x.version", "$x.version?", "$x[0]", "$x[0].version", "$x[1].version?", "$x.a.b[1].c",
              "$x.digest", "$x.size", "$x.n", "$missing", "$missing?", "$x[5]?",
              "{x}", "{x?}", "{x.version}", "{x.version?}", "{x.a.b[1]}"]


def outcome(render, ctx):
    try:
        return "value", render(ctx)
    except DepotError as exc:
        return "error", exc.code, exc.status, exc.message


def both_ways(template, ctx):
    return outcome(template.render, ctx), outcome(template.single.resolve_interpreted, ctx)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("source", REFERENCES)
def test_generated_reference_matches_the_interpreted_one(source, shape):
    if source.startswith("{") and "[" in source:
        source = "$x.a.b[1]"  # the field grammar has no indexes; the same path through a variable
    template = parse_template(source)
    namespace = {"fields": {"x": SHAPES[shape]}} if source.startswith("{") else {"vars": {"x": SHAPES[shape]}}
    generated, interpreted = both_ways(template, Namespaces(**namespace))
    assert generated == interpreted


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_generated_lenient_reference_matches_the_interpreted_one(shape):
    for source in ("$x.version", "{x}", "$x[0]"):
        ref = parse_template(source).single
        ctx = Namespaces(fields={"x": SHAPES[shape]}, vars={"x": SHAPES[shape]})
        interpreted = ref.lookup(ctx)
        expected = None if interpreted.__class__ is object else interpreted
        assert ref.resolve_lenient(ctx) == expected


def test_a_string_under_an_index_is_not_read_character_by_character():
    with pytest.raises(DepotError) as info:
        parse_template("$x[0]").render(Namespaces(vars={"x": "abc"}))
    assert info.value.code == "UNRESOLVED_REFERENCE"


def test_a_blob_handle_attribute_is_read_through_the_interpreted_path():
    assert parse_template("$blob.digest").render(Namespaces(vars={"blob": BLOB})) == BLOB.digest


BODY = {"namespace": "{namespace}", "version": "$rows[0].version", "digest": "\"$rows[0].blob_digest\"",
        "fixed": {"kind": "artifact", "n": 1}, "labels": ["$rows[0].labels?", "{variant?}", "x-{namespace}"],
        "blob": "$blob.size"}


def namespaces_for(case):
    rows = [{"version": "1.0.0", "blob_digest": "sha256:00", "labels": {"a": "b"}}]
    fields = {"namespace": "acme", "variant": "linux"}
    vars_ = {"rows": rows, "blob": BLOB}
    if case == "all bound":
        pass
    elif case == "optional absent":
        fields.pop("variant")
        del rows[0]["labels"]
    elif case == "required absent":
        rows.clear()
    elif case == "null field":
        fields["namespace"] = None
    elif case == "rows not a list":
        vars_["rows"] = {"0": rows[0]}
    elif case == "blob missing":
        vars_.pop("blob")
    return Namespaces(fields=fields, vars=vars_)


@pytest.mark.parametrize("case", ["all bound", "optional absent", "required absent", "null field",
                                  "rows not a list", "blob missing"])
def test_generated_dict_render_matches_the_interpreted_one(case):
    node = compile_value(BODY)
    assert isinstance(node, DictNode)
    ctx = namespaces_for(case)
    assert outcome(node.render, ctx) == outcome(node.render_interpreted, ctx)


SHARED = {"a": "$x[0].version", "b": "$x[0].version|upper", "c": "$x[0]", "d": "{y}", "e": "{y}-{y}", "f": "{y}",
          "g": "$x[0].a.b[1].c?"}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_references_sharing_a_prefix_read_it_once_and_decide_as_the_interpreted_path(shape):
    """$x[0].version and $x[0] in one template: the generated function reads x and x[0] once, checks each shape
    once, and a filter on one reference does not change what another reads."""
    node = compile_value(SHARED)
    source = node.render.generated_source
    assert source.count("ctx.vars['x']") == 1 and source.count("[0]") == 1, source
    assert source.count("ctx.fields['y']") == 1, source
    for y in ("acme", None):
        ctx = Namespaces(fields={"y": y}, vars={"x": [SHAPES[shape]]})
        assert outcome(node.render, ctx) == outcome(node.render_interpreted, ctx)
        ctx = Namespaces(fields={"y": y}, vars={"x": SHAPES[shape]})
        assert outcome(node.render, ctx) == outcome(node.render_interpreted, ctx)


JOINED = ["a/{x}/b", "{x}-{x}", "k/{x?}/end", "{x.version}@$y", "$y/{x|upper}", "p/{x.a.b[1].c?}/q", "{x}{x?}"]
KEY_VALUES = {"plain": "acme", "slash": "a/b", "dots": "..", "dot": ".", "empty": "", "nul": "a\x00b", "int": 7,
              "bool": True, "null": None, "nested": SHAPES["nested"], "dict": SHAPES["dict"]}


@pytest.mark.parametrize("value", sorted(KEY_VALUES))
@pytest.mark.parametrize("source", JOINED)
def test_generated_joined_template_and_key_match_the_interpreted_ones(source, value):
    """A template joining text and references renders (and renders as a storage key, refusing a value that adds
    a segment) exactly as the interpreted join does, whatever the references hold."""
    template = parse_template(source.replace("{x.a.b[1].c?}", "$x.a.b[1].c?"))
    assert template.render.generated_source.startswith("def join")
    ctx = Namespaces(fields={"x": KEY_VALUES[value]}, vars={"y": KEY_VALUES[value], "x": KEY_VALUES[value]})
    assert outcome(template.render, ctx) == outcome(template._render_joined, ctx)
    assert outcome(template.render_key, ctx) == outcome(template._render_key_interpreted, ctx)


def test_dict_render_keeps_types_and_constants():
    value = compile_value(BODY).render(namespaces_for("all bound"))
    assert value == {"namespace": "acme", "version": "1.0.0", "digest": "\"sha256:00\"",
                     "fixed": {"kind": "artifact", "n": 1}, "labels": [{"a": "b"}, "linux", "x-acme"], "blob": 12}


def test_keys_with_quotes_and_newlines_stay_data():
    awkward = {"a'b": "{x}", 'c"d\n': "$y", "__import__('os')": "{x}"}
    node = compile_value(awkward)
    assert node.render(Namespaces(fields={"x": 1}, vars={"y": 2})) == {"a'b": 1, 'c"d\n': 2, "__import__('os')": 1}


def test_request_data_never_becomes_code():
    node = compile_value({"k": "{x}"})
    hostile = "'); import os; os._exit(1) #"
    assert node.render(Namespaces(fields={"x": hostile})) == {"k": hostile}
    assert hostile not in node.render.generated_source


def test_only_str_and_int_literals_are_written_into_source():
    assert literal("a'b") == repr("a'b") and literal(3) == "3"
    for value in (1.5, None, True, b"x", ["a"], {"a": 1}):
        with pytest.raises(TypeError):
            literal(value)


def test_builder_binds_values_by_name():
    builder = FunctionBuilder("pick", "value")
    table = builder.bind({"a": 1}, "table")
    builder.line("return %s.get(value)" % table)
    pick = builder.build()
    assert pick("a") == 1 and pick("b") is None
    assert "{'a': 1}" not in pick.generated_source


def test_normalizer_chain_applies_rules_in_order():
    rules = [compile_normalizer(spec) for spec in ("trim", "lower", "replace:_:-", "collapse_whitespace")]
    assert chain(rules)("  My_Pkg   Name ") == "my-pkg name"
    assert chain(rules[:1])("  x ") == "x"
    reordered = chain([compile_normalizer("replace:A:b"), compile_normalizer("lower")])
    assert reordered("AA") == "bb"


class RunnerContext:
    """What a runner touches on a context: the exempt clocks, abort_txn, the principal, and of the engine the
    read-only switch and whether namespace grants exist."""

    def __init__(self, principal=None, read_only=False, event=None, grants=False):
        self.exempt_ns = self.exempt_wall_ns = 0
        self.trace = []
        self.aborted = 0
        self.principal = principal
        self.event = event
        self.engine = SimpleNamespace(read_only=read_only, access=SimpleNamespace(active=grants))

    def abort_txn(self):
        self.aborted += 1


def step(label, fail=False):
    def run(ctx, args):
        ctx.trace.append((label, args))
        if fail:
            raise DepotError("BOOM", 500, "step %s failed" % label)
    return run


def plan_step(fn, args=None, when=None, io=False, ends=False, mutates=False):
    return PlanStep(fn, args, when, io, ends, mutates)


@EXECUTORS
def test_runner_calls_steps_in_order_skips_false_whens_and_stops_at_a_respond(make_runner):
    plan = (plan_step(step("a"), {"n": 1}),
            plan_step(step("skipped"), when=lambda ctx: False, ends=True),
            plan_step(step("b"), {"n": 2}, when=lambda ctx: True, io=True),
            plan_step(step("respond"), ends=True),
            plan_step(step("never")))
    ctx = RunnerContext()
    make_runner(plan)(ctx, 10 ** 12, STILL)
    assert ctx.trace == [("a", {"n": 1}), ("b", {"n": 2}), ("respond", None)] and ctx.aborted == 0


@EXECUTORS
def test_runner_aborts_the_transaction_and_reraises_on_error(make_runner):
    ctx = RunnerContext()
    with pytest.raises(DepotError) as info:
        make_runner((plan_step(step("a")), plan_step(step("b", fail=True)),
                     plan_step(step("c"), ends=True)))(ctx, 10 ** 12, STILL)
    assert info.value.code == "BOOM" and [t[0] for t in ctx.trace] == ["a", "b"] and ctx.aborted == 1


@EXECUTORS
def test_runner_checks_the_cpu_budget_before_io_steps_only(make_runner):
    clock = ManualClock()

    def burn(ctx, args):  # spends 2 ms by the budget's clock
        clock.advance(2_000_000)
        ctx.trace.append("burn")
    plan = (plan_step(burn), plan_step(step("cpu-only")), plan_step(step("io"), io=True, ends=True))
    ctx = RunnerContext()
    with pytest.raises(DepotError) as info:
        make_runner(plan)(ctx, 1_000_000, budget_clock(clock))  # 1 ms: exceeded by the time the io step comes
    assert info.value.code == "CPU_LIMIT_EXCEEDED" and ctx.trace == ["burn", ("cpu-only", None)]
    assert ctx.aborted == 1
    ctx = RunnerContext()
    make_runner(plan)(ctx, 2_000_000, budget_clock(clock))  # exactly the budget is within it
    assert ctx.trace == ["burn", ("cpu-only", None), ("io", None)]


@EXECUTORS
def test_a_garbage_collection_during_a_request_is_not_charged_to_its_cpu_budget(make_runner):
    import gc
    clock, collecting = ManualClock(), []

    def advance_while_collecting(phase, info):  # runs after the pauses' own "start" reading: the pass takes 10 ms
        if collecting and phase == "start" and info["generation"] > 0:
            clock.advance(10_000_000)

    def collect(ctx, args):
        collecting.append(True)
        try:
            gc.collect()
        finally:
            collecting.clear()
    plan = (plan_step(collect), plan_step(step("io"), io=True, ends=True))
    pauses = CollectorPauses(clock)
    gc.callbacks.append(advance_while_collecting)
    try:
        ctx = RunnerContext()
        make_runner(plan)(ctx, 5_000_000, BudgetClock(clock, clock, pauses))
        assert ctx.trace == [("io", None)]
        ctx = RunnerContext()  # the same 10 ms, not spent collecting, are charged
        with pytest.raises(DepotError) as info:
            make_runner(plan)(ctx, 5_000_000, budget_clock(clock))
        assert info.value.code == "CPU_LIMIT_EXCEEDED"
    finally:
        gc.callbacks.remove(advance_while_collecting)
        pauses.close()


@EXECUTORS
def test_an_empty_plan_runs(make_runner):
    ctx = RunnerContext()
    make_runner(())(ctx, 1, STILL)
    assert ctx.trace == [] and ctx.aborted == 0


@EXECUTORS
def test_runner_refuses_steps_that_change_the_repository_on_a_read_only_replica(make_runner):
    plan = (plan_step(step("read")), plan_step(step("write"), io=True, mutates=True),
            plan_step(step("respond"), ends=True))
    run = make_runner(plan)
    for read_only, event, trace in ((False, None, ["read", "write", "respond"]), (True, None, ["read"]),
                                    (True, {"type": "replayed"}, ["read", "write", "respond"])):
        ctx = RunnerContext(read_only=read_only, event=event)
        if trace[-1] == "respond":
            run(ctx, 10 ** 12, STILL)
        else:
            with pytest.raises(DepotError) as info:
                run(ctx, 10 ** 12, STILL)
            assert info.value.code == "READ_ONLY" and info.value.status == 403 and ctx.aborted == 1
        assert [label for label, _ in ctx.trace] == trace


# --- both executors over the same plans and contexts ---------------------------------------------------------

PRINCIPALS = {
    "nobody": None,
    "anonymous": {"sub": "anonymous", "scopes": frozenset({"read"}), "kind": "anonymous"},
    "reader": {"sub": "r", "scopes": frozenset({"read"}), "kind": "user"},
    "writer": {"sub": "w", "scopes": frozenset({"read", "write"}), "kind": "user"},
    "admin": {"sub": "a", "scopes": frozenset({"admin"}), "kind": "user"},
}


def namespace_guard(ctx):
    ctx.trace.append(("guard", None))
    if ctx.principal is None or "write" not in ctx.principal["scopes"]:
        raise DepotError("FORBIDDEN", 403, "no write permission on the namespace")


def plans():
    """Plans covering what a runner decides: conditions (true, false, raising), steps ending the pipeline (under
    a condition too), io and mutating steps, a failing step, and a plan that ends without responding."""
    return {
        "linear": (plan_step(step("a"), {"x": 1}), plan_step(step("b"), io=True), plan_step(step("r"), ends=True)),
        "conditions": (plan_step(step("skip"), when=lambda ctx: False),
                       plan_step(step("early"), when=lambda ctx: ctx.event is not None, ends=True),
                       plan_step(step("late"), ends=True)),
        "raising condition": (plan_step(step("a")), plan_step(step("b"), when=lambda ctx: 1 // 0)),
        "mutating": (plan_step(step("get"), io=True), plan_step(step("put"), io=True, mutates=True),
                     plan_step(step("respond"), ends=True)),
        "failing": (plan_step(step("a")), plan_step(step("boom", fail=True), io=True), plan_step(step("never"))),
        "no respond": (plan_step(step("a")), plan_step(step("b"), when=lambda ctx: True)),
    }


def observe(run, ctx, budget):
    try:
        run(ctx, budget, STILL)
        outcome = ("returned",)
    except DepotError as exc:
        outcome = ("error", exc.code, exc.status)
    except ZeroDivisionError:
        outcome = ("ZeroDivisionError",)
    return outcome, ctx.trace, ctx.aborted


POLICIES = {"none": (frozenset(), False), "read": (frozenset({"read"}), False),
            "write": (frozenset({"write"}), False), "denied": (frozenset(), True)}


@pytest.mark.parametrize("plan_name", sorted(plans()))
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_both_executors_decide_alike(plan_name, policy):
    """Every plan under every policy, for every kind of caller, on a primary and a replica, replaying or not,
    with and without namespace grants: the generated and the interpreted runner call the same steps, end
    the same way and abort the transaction alike."""
    scopes, denied = POLICIES[policy]
    plan = plans()[plan_name]
    runners = []
    for make in (generate_runner, interpret_runner):
        granted = make(plan, namespace_guard=namespace_guard)
        runners.append(make(plan, scopes, denied, granted=granted))
    for who, read_only, event, grants in product(PRINCIPALS, (False, True), (None, {"type": "t"}), (False, True)):
        generated, interpreted = (
            observe(run, RunnerContext(PRINCIPALS[who], read_only, event, grants), 10 ** 12) for run in runners)
        assert generated == interpreted, (who, read_only, event, grants)


def test_build_runner_follows_the_switch(monkeypatch):
    plan = (plan_step(step("r"), ends=True),)
    assert hasattr(build_runner(plan), "generated_source")
    monkeypatch.setenv("DEPOT_CODEGEN", "off")
    assert not hasattr(build_runner(plan), "generated_source")
    assert hasattr(build_runner(plan, generate=True), "generated_source")


def test_a_failing_generated_step_shows_its_generated_line_in_the_traceback():
    """Generated source is registered with linecache: the traceback names the line of the generated runner
    that called the failing step, not a blank."""
    ctx = RunnerContext()
    run = generate_runner((plan_step(step("a")), plan_step(step("boom", fail=True), io=True)))
    with pytest.raises(DepotError) as info:
        run(ctx, 10 ** 12, STILL)
    frames = [f for f in traceback.extract_tb(info.value.__traceback__) if f.name == "run_pipeline"]
    assert len(frames) == 1 and frames[0].filename.startswith("<depot-generated run_pipeline")
    calls = [line.strip() for line in run.generated_source.splitlines() if line.strip().startswith("step")]
    assert frames[0].line == calls[-1]  # the call of the second step, the failing one
    assert '%s", line %d, in run_pipeline\n    %s\n' % (frames[0].filename, frames[0].lineno, calls[-1]) in \
        "".join(traceback.format_exception(info.value))


def test_a_failing_generated_template_shows_its_generated_line():
    """The same for a generated render: an unbound reference is handed from the generated line to the
    interpreted path, which raises; the traceback shows that generated line."""
    node = compile_value({"k": "{x}", "v": "$missing"})
    with pytest.raises(DepotError) as info:
        node.render(Namespaces(fields={"x": 1}))
    frames = [f for f in traceback.extract_tb(info.value.__traceback__) if f.filename.startswith("<depot-generated")]
    assert [f.name for f in frames] == ["render", "resolve"]  # the dict's render, then the reference's
    assert all(f.line.startswith("return interpreted") for f in frames)


# --- the same requests through a depot compiled each way -----------------------------------------------------

def exchange(depot):
    """Publishes, reads, a tag and a download through it, errors, a search and a delete: (status, body) of each."""
    headers = depot.headers()
    answers = [depot.publish("acme", "hello", "1.0.0", "linux", b"one"),
               depot.publish("acme", "hello", "1.0.0", "linux", b"again"),
               depot.publish("acme", "hello", "1.1.0", "linux", b"two"),
               depot.client.get("/v1/acme/hello/latest", headers=headers),
               depot.client.get("/v1/acme/hello/versions", headers=headers),
               depot.client.put("/v1/acme/hello/tags/stable", headers=headers,
                                json={"version": "1.0.0", "variant": "linux"}),
               depot.client.get("/v1/acme/hello/tags/stable/blob", headers=headers),  # a redirect
               depot.client.get("/v1/acme/hello/1.0.0/linux/blob", headers=headers),
               depot.client.get("/v1/acme/missing/latest", headers=headers),
               depot.client.get("/v1/acme/hello/latest"),
               depot.client.get("/v1/Bad..Name/x/latest", headers=headers),
               depot.client.get("/v1/search?q=hel", headers=headers),
               depot.client.delete("/v1/acme/hello/1.1.0/linux", headers=depot.headers(["admin"])),
               depot.client.get("/v1/acme/hello/1.1.0/linux", headers=headers)]
    return [(a.status_code, _stable(a.get_json(silent=True)) if a.is_json else a.data) for a in answers]


def _stable(body):
    """The body without what differs between two runs of the same requests (times, request ids)."""
    if isinstance(body, dict):
        return {k: _stable(v) for k, v in body.items() if k not in ("created_at", "updated_at", "request_id")}
    if isinstance(body, list):
        return [_stable(v) for v in body]
    return body


def test_a_depot_answers_alike_with_generation_on_and_off(make_depot, project_schema, monkeypatch):
    generated = exchange(make_depot(project_schema, "generated"))
    monkeypatch.setenv("DEPOT_CODEGEN", "off")
    interpreted_depot = make_depot(project_schema, "interpreted")
    route = interpreted_depot.service.engine.routes["publish_artifact_blob"]
    assert not hasattr(route.pipeline.run, "generated_source")
    assert exchange(interpreted_depot) == generated
    assert [status for status, _ in generated] == [201, 409, 201, 200, 200, 200, 307, 200, 404, 401, 400, 200, 200, 410]


def test_generation_off_leaves_templates_and_normalizers_interpreted(project_schema, monkeypatch):
    monkeypatch.setenv("DEPOT_CODEGEN", "off")
    node = compile_value({"k": "{x}", "v": "$y.version"})
    assert node.render == node.render_interpreted
    assert node.render(Namespaces(fields={"x": 1}, vars={"y": {"version": "2"}})) == {"k": 1, "v": "2"}
    assert not hasattr(chain([compile_normalizer("trim"), compile_normalizer("lower")]), "generated_source")
    compiled, report = compile_schema(project_schema)
    assert report.ok
    assert not any(hasattr(r.pipeline.run, "generated_source") for r in compiled.routes)
