"""What an op does is declared on it (app/engine/opspec.py: terminal, opens_txn, closes_txn, needs_txn, writes, mutates,
io), and the compiler, the checker and the docs read those flags, never the op's name.

The tests register ops of their own, named against their flags (a `respond.*` op that does not end the pipeline,
a terminal op with another prefix), and check that the flags decide: which step ends a route, where a transaction
opens and closes, what OPERATIONS.md says.
"""
import copy

import pytest

from app.tools import docs
from app.engine.compiler import compile_schema
from app.engine.context import ResponseSpec
from app.engine.opspec import REGISTRY, Const, OpDecl, Vocabulary


def route(route_id, path, *steps):
    return {"id": route_id, "method": "GET", "path": path, "tags": ["public"], "pipeline": list(steps)}


def step(name, when=None, **args):
    raw = {"op": name, "args": args}
    if when is not None:
        raw["when"] = when
    return raw


@pytest.fixture
def own_ops():
    """Ops named against their flags, registered for one test only (the engine's registry is global)."""
    added = []
    vocabulary = Vocabulary()

    def register(name, **flags):
        def answer(ctx, a):
            ctx.vars.setdefault("ran", []).append(name)
            if flags.get("terminal"):
                ctx.response = ResponseSpec(203, json={"answered_by": name, "ran": ctx.vars["ran"]})
        vocabulary.op(name, "a test op", args={"note": Const("string", "unused", required=False)}, **flags)(answer)
        vocabulary.register(REGISTRY)
        added.append(name)
    yield register
    for name in added:
        del REGISTRY[name]


def with_ops(schema, names, *routes):
    schema = copy.deepcopy(schema)
    schema["ops"]["allowed"] = list(schema["ops"]["allowed"]) + list(names)
    schema["api"]["routes"] = list(routes)
    for section in ("validation", "invariants"):  # the project's own checks name the routes it declares
        schema.pop(section, None)
    return schema


def errors_about(report, text):
    return [f for f in report.errors if text in f.message]


def test_a_terminal_op_ends_a_route_whatever_its_name(own_ops, make_depot, project_schema):
    own_ops("finish.now", terminal=True)
    schema = with_ops(project_schema, ["finish.now"], route(
        "early", "/v1/{namespace}/early", step("parse.path"),
        step("finish.now", when={"equals": ["{namespace}", "stop"]}),
        step("respond.json", body={"answered_by": "respond.json"})),
        route("only", "/v1/{namespace}/only", step("finish.now")))
    compiled, report = compile_schema(schema)
    assert compiled is not None, report.to_text()
    depot = make_depot(schema)
    stopped = depot.client.get("/v1/stop/early", headers=depot.headers(["read"]))
    assert stopped.status_code == 203 and stopped.get_json() == {"answered_by": "finish.now", "ran": ["finish.now"]}
    went_on = depot.client.get("/v1/other/early", headers=depot.headers(["read"]))
    assert went_on.status_code == 200 and went_on.get_json() == {"answered_by": "respond.json"}
    assert depot.client.get("/v1/x/only", headers=depot.headers(["read"])).status_code == 203


def test_an_op_named_respond_that_is_not_terminal_does_not_end_a_route(own_ops, project_schema):
    own_ops("respond.later")
    schema = with_ops(project_schema, ["respond.later"], route("r", "/v1/{namespace}/r", step("respond.later")))
    compiled, report = compile_schema(schema)
    assert compiled is None
    [finding] = errors_about(report, "must end with an unconditional respond step")
    assert finding.place == "api.routes[0].pipeline" and "respond.json" in finding.message
    assert "respond.later" not in finding.message  # the ops listed are the terminal ones


def test_transactions_open_and_close_where_the_flags_say(own_ops, project_schema):
    own_ops("begin.batch", opens_txn=True)
    own_ops("end.batch", needs_txn=True, closes_txn=True)
    body = {"answered": True}
    schema = with_ops(project_schema, ["begin.batch", "end.batch"],
                      route("good", "/v1/{namespace}/good", step("begin.batch"), step("txn.commit"),
                            step("begin.batch"), step("end.batch"), step("respond.json", body=body)),
                      route("nested", "/v1/{namespace}/nested", step("txn.begin"), step("begin.batch"),
                            step("end.batch"), step("respond.json", body=body)),
                      route("open", "/v1/{namespace}/open", step("begin.batch"),
                            step("respond.json", when={"equals": [1, 1]}, body=body),
                            step("respond.json", body=body)),
                      route("closed", "/v1/{namespace}/closed", step("end.batch"), step("respond.json", body=body)))
    _, report = compile_schema(schema)
    places = {(f.place, f.message) for f in report.errors}
    assert not [p for p, _ in places if p.startswith("api.routes[0]")]
    assert ("api.routes[1].pipeline[1]", "begin.batch inside the transaction opened at api.routes[1].pipeline[0]") \
        in places
    assert ("api.routes[2].pipeline[2]", "responds while the transaction opened at api.routes[2].pipeline[0] is "
            "still open; commit or abort it first") in places
    assert ("api.routes[3].pipeline[0]", "end.batch needs an open transaction") in places


def test_flags_that_contradict_each_other_are_refused_at_declaration():
    def run(ctx, a):
        pass
    for flags in ({"closes_txn": True}, {"opens_txn": True, "needs_txn": True},
                  {"opens_txn": True, "closes_txn": True, "needs_txn": True}, {"writes": True, "mutates": False}):
        with pytest.raises(ValueError):
            OpDecl("bad.op", run, {}, "contradictory", **flags)


def test_the_reference_shows_each_ops_flags():
    text = docs.render()
    assert "| `respond.json` | yes |" in text and "| `txn.begin` |  | yes |" in text
    assert "| `txn.commit` |  |  | yes | yes |  |  | yes |" in text
    section = text.split("### `txn.abort`", 1)[1].split("###", 1)[0]
    assert "*closes the open transaction; needs an open transaction.*" in section


def test_the_vocabulary_declares_what_its_names_suggest():
    """The flags of Depot's own ops, as its schemas rely on them."""
    assert sorted(n for n, d in REGISTRY.items() if d.terminal) == ["respond.bytes", "respond.empty",
                                                                    "respond.error", "respond.json",
                                                                    "respond.redirect", "respond.render"]
    assert [n for n, d in REGISTRY.items() if d.opens_txn] == ["txn.begin"]
    assert sorted(n for n, d in REGISTRY.items() if d.closes_txn) == ["txn.abort", "txn.commit"]
