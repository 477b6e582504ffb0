"""Generated code (app/codegen.py) must do exactly what the interpreted tree does.

References, dict/list templates, normalizer chains and pipelines are compiled to Python functions at load. Each
test here renders the same template both ways over the same namespaces and asserts the same value or the same
error, including the shapes the generated code leaves to the interpreted path (tuples, blob handles, dict
subclasses, strings under an index, nulls, optionals)."""
from collections import OrderedDict

import pytest

from app.budget import BudgetClock, CollectorPauses, budget_clock
from app.codegen import FunctionBuilder, literal
from app.runner import generate_runner
from app.definitions import chain, compile_normalizer
from app.errors import DepotError
from app.expr import DictNode, compile_value, parse_template
from app.stores.blobs import BlobRef
from app.testing import ManualClock
from tests.conftest import Namespaces

STILL = budget_clock(ManualClock())  # the runner's clock in tests that are not about the CPU budget
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
    """What the generated runner touches on a context: the exempt clocks and abort_txn."""

    def __init__(self):
        self.exempt_ns = self.exempt_wall_ns = 0
        self.trace = []
        self.aborted = 0

    def abort_txn(self):
        self.aborted += 1


def step(label, fail=False):
    def run(ctx, args):
        ctx.trace.append((label, args))
        if fail:
            raise DepotError("BOOM", 500, "step %s failed" % label)
    return run


def test_runner_calls_steps_in_order_skips_false_whens_and_stops_at_a_respond():
    plan = ((step("a"), {"n": 1}, None, False, False, False),
            (step("skipped"), None, lambda ctx: False, False, True, False),
            (step("b"), {"n": 2}, lambda ctx: True, True, False, False),
            (step("respond"), None, None, False, True, False),
            (step("never"), None, None, False, False, False))
    ctx = RunnerContext()
    generate_runner(plan)(ctx, 10 ** 12, STILL)
    assert ctx.trace == [("a", {"n": 1}), ("b", {"n": 2}), ("respond", None)] and ctx.aborted == 0


def test_runner_aborts_the_transaction_and_reraises_on_error():
    ctx = RunnerContext()
    with pytest.raises(DepotError) as info:
        generate_runner(((step("a"), None, None, False, False, False),
                         (step("b", fail=True), None, None, False, False, False),
                         (step("c"), None, None, False, True, False)))(ctx, 10 ** 12, STILL)
    assert info.value.code == "BOOM" and [t[0] for t in ctx.trace] == ["a", "b"] and ctx.aborted == 1


def test_runner_checks_the_cpu_budget_before_io_steps_only():
    clock = ManualClock()

    def burn(ctx, args):  # spends 2 ms by the budget's clock
        clock.advance(2_000_000)
        ctx.trace.append("burn")
    plan = ((burn, None, None, False, False, False), (step("cpu-only"), None, None, False, False, False),
            (step("io"), None, None, True, True, False))
    ctx = RunnerContext()
    with pytest.raises(DepotError) as info:
        generate_runner(plan)(ctx, 1_000_000, budget_clock(clock))  # 1 ms: exceeded by the time the io step comes
    assert info.value.code == "CPU_LIMIT_EXCEEDED" and ctx.trace == ["burn", ("cpu-only", None)]
    assert ctx.aborted == 1
    ctx = RunnerContext()
    generate_runner(plan)(ctx, 2_000_000, budget_clock(clock))  # exactly the budget is within it
    assert ctx.trace == ["burn", ("cpu-only", None), ("io", None)]


def test_a_garbage_collection_during_a_request_is_not_charged_to_its_cpu_budget():
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
    plan = ((collect, None, None, False, False, False), (step("io"), None, None, True, True, False))
    pauses = CollectorPauses(clock)
    gc.callbacks.append(advance_while_collecting)
    try:
        ctx = RunnerContext()
        generate_runner(plan)(ctx, 5_000_000, BudgetClock(clock, clock, pauses))
        assert ctx.trace == [("io", None)]
        ctx = RunnerContext()  # the same 10 ms, not spent collecting, are charged
        with pytest.raises(DepotError) as info:
            generate_runner(plan)(ctx, 5_000_000, budget_clock(clock))
        assert info.value.code == "CPU_LIMIT_EXCEEDED"
    finally:
        gc.callbacks.remove(advance_while_collecting)
        pauses.close()


def test_an_empty_plan_runs():
    ctx = RunnerContext()
    generate_runner(())(ctx, 1, STILL)
    assert ctx.trace == [] and ctx.aborted == 0


def test_runner_refuses_steps_that_change_the_repository_on_a_read_only_replica():
    from types import SimpleNamespace
    plan = ((step("read"), None, None, False, False, False), (step("write"), None, None, True, False, True),
            (step("respond"), None, None, False, True, False))
    run = generate_runner(plan)
    for read_only, event, trace in ((False, None, ["read", "write", "respond"]), (True, None, ["read"]),
                                    (True, {"type": "replayed"}, ["read", "write", "respond"])):
        ctx = RunnerContext()
        ctx.engine, ctx.event = SimpleNamespace(read_only=read_only), event
        if trace[-1] == "respond":
            run(ctx, 10 ** 12, STILL)
        else:
            with pytest.raises(DepotError) as info:
                run(ctx, 10 ** 12, STILL)
            assert info.value.code == "READ_ONLY" and info.value.status == 403 and ctx.aborted == 1
        assert [label for label, _ in ctx.trace] == trace
