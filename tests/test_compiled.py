"""The compiler's output has declared shapes (app/engine/compiled.py), and its pieces stand alone: the checks run
on what they check (app/engine/checks.py Subject), a route's policies resolve without a compiler
(app/engine/policies.py), the type checker's configuration covers the engine modules.
"""
import configparser
import copy
import dataclasses

import pytest

from app.engine import checks
from app.engine.compiled import CompiledSchema, PlanStep, Pipeline, Route, RoutePolicy, RuntimeChecks, Step
from app.engine.compiler import compile_schema
from app.engine.report import Report
from tests.conftest import ROOT


@pytest.fixture
def compiled(project_schema):
    compiled, report = compile_schema(project_schema)
    assert compiled is not None, report.to_text()
    return compiled


def test_the_compiled_schema_its_routes_and_pipelines_are_frozen_dataclasses(compiled):
    for value, shape in ((compiled, CompiledSchema), (compiled.routes[0], Route),
                         (compiled.routes[0].pipeline, Pipeline), (compiled.routes[0].pipeline.steps[0], Step),
                         (compiled.routes[0].policy, RoutePolicy), (compiled.runtime, RuntimeChecks)):
        assert type(value) is shape and dataclasses.is_dataclass(value)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)
    assert all(isinstance(s, PlanStep) for r in compiled.routes for s in r.pipeline.plan)
    assert isinstance(compiled.routes, tuple) and isinstance(compiled.allowed_ops, frozenset)


def test_a_plan_step_carries_the_flags_of_its_op(compiled):
    publish = next(r for r in compiled.routes if r.id == "publish_artifact_blob")
    by_name = {s.fn.__name__: s for s in publish.pipeline.plan}
    assert by_name["respond_json"].ends and not by_name["respond_json"].io
    assert by_name["blob_put"].io and by_name["blob_put"].mutates and not by_name["blob_put"].ends
    assert by_name["txn_commit"].io and not by_name["txn_commit"].mutates


def test_the_route_policy_is_part_of_the_route(compiled):
    publish = next(r for r in compiled.routes if r.id == "publish_artifact_blob")
    assert publish.policy.scopes == {"write"} and not publish.policy.denied
    assert publish.policy.namespace_guard.param == "namespace"
    assert publish.policy.namespace_guard.permission == "write"


def test_the_checks_run_on_the_compiled_pieces_alone(reference_schema):
    """The checker takes the document, the definitions and the compiled pipelines, no compiler: run again on a
    compiled schema's pieces it finds what the compilation found."""
    compiled, _ = compile_schema(reference_schema)  # served, with warnings for its known inconsistencies
    report = Report("again")
    runtime = checks.run_all(checks.Subject(compiled.doc, compiled.definitions, compiled.routes,
                                            compiled.apply_pipelines), report)
    assert runtime == compiled.runtime and report.ok
    findings = compiled.report.to_dict()["warnings"]
    assert report.to_dict()["warnings"] and all(f in findings for f in report.to_dict()["warnings"])
    broken = Report("broken")
    route = compiled.routes[0]
    unfinished = dataclasses.replace(route.pipeline, steps=route.pipeline.steps[:-1])
    checks.run_all(checks.Subject({}, compiled.definitions, [dataclasses.replace(route, pipeline=unfinished)], {}),
                   broken)
    assert [f.place for f in broken.errors] == [route.pipeline.place]


def test_a_policy_asking_no_scope_leaves_a_routes_own_authentication_check_in_place(make_depot, project_schema):
    """A policy naming only a namespace admits callers without credentials, so the route's own check of no
    scopes (authentication) still runs after it, with or without namespace grants."""
    schema = copy.deepcopy(project_schema)
    schema["auth"]["policies"].append({"name": "ns_only", "effect": "allow", "when": {"route.tags": ["signed"]},
                                       "require": {"namespace": "namespace", "permission": "read"}})
    schema["api"]["routes"].append({"id": "whoami", "method": "GET", "path": "/v1/{namespace}/whoami",
                                    "tags": ["signed"], "pipeline": [
                                        {"op": "auth.require_scopes", "args": {"scopes": []}},
                                        {"op": "parse.path", "args": {"entity": "artifact"}},
                                        {"op": "respond.json", "args": {"body": {"sub": "{principal.sub}"}}}]})
    depot = make_depot(schema)
    assert depot.client.get("/v1/acme/whoami").status_code == 401
    signed = depot.client.get("/v1/acme/whoami", headers=depot.headers(["read"]))
    assert signed.status_code == 200 and signed.get_json() == {"sub": "tester"}


def test_type_checking_covers_the_engine_modules_strictly():
    config = configparser.ConfigParser()
    config.read(ROOT / "mypy.ini")
    files = {f.strip() for f in config["mypy"]["files"].split(",")}
    engine = ("compiled", "compiler", "binding", "runner", "policies", "shadowing", "codegen", "opspec", "run",
              "context")
    assert {"app/engine/%s.py" % name for name in engine} <= files
    for flag in ("disallow_untyped_defs", "disallow_incomplete_defs", "check_untyped_defs", "warn_return_any"):
        assert config["mypy"].getboolean(flag), flag
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert "\nmypy " in script and "DEPOT_CODEGEN=off run_pytest pytest" in script
