"""The shapes the compiler produces: a compiled schema, its routes, pipelines, steps and plan steps.

Each is built whole by the compiler (app/engine/compiler.py, app/engine/runner.py) and never changed afterwards:
what a running engine needs is decided at load and then only read.
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

if TYPE_CHECKING:
    from app.engine.budget import BudgetClock
    from app.engine.context import ExecutionContext
    from app.engine.definitions import EventLog, Limits, Versioning
    from app.engine.opspec import OpDecl, OpFunction
    from app.engine.report import Report

Condition = Callable[[Any], Any]  # a compiled `when`: ctx -> truthy when the step runs
Runner = Callable[["ExecutionContext", int, "BudgetClock"], None]  # (ctx, CPU budget in ns, clock) -> None
Definitions = dict[str, dict[str, Any]]  # section ("entity", "document", "index"...) -> name -> definition


@dataclass(frozen=True, eq=False)
class Step:
    """One pipeline step: its op's declaration, its arguments bound at load, its condition and its place."""
    decl: OpDecl
    args: Any  # a SimpleNamespace of the bound arguments, one attribute per declared argument
    when: Condition | None
    place: str

    @property
    def op(self) -> str:
        return self.decl.name

    @property
    def fn(self) -> OpFunction:
        return self.decl.fn


def path_entity(steps: Sequence[Step]) -> Any:
    """The entity a pipeline's parse.path binds the path parameters as (its first naming one), or None."""
    for step in steps:
        if step.op == "parse.path" and step.args.entity is not None:
            return step.args.entity
    return None


class PlanStep(NamedTuple):
    """What the runner needs of a step, flattened once: the op function and its bound arguments, the condition,
    and the op's flags the runner acts on (``io``: check the CPU budget first, and time it (``timer``: observes
    its seconds, app.metrics); ``ends``: return after it; ``mutates``: refused on a read-only replica)."""
    fn: Callable[[Any, Any], None]
    args: Any
    when: Condition | None
    io: bool
    ends: bool
    mutates: bool
    timer: Callable[[float], None] | None = None


@dataclass(frozen=True)
class RoutePolicy:
    """What the route's auth.policies ask of every request: ``scopes`` held (or admin), only admin when
    ``denied``, and, once namespace grants exist, the permission ``namespace_guard`` checks; ``challenge``: what
    its 401 answers send in WWW-Authenticate (None: ``Bearer``)."""
    scopes: frozenset[str] = frozenset()
    denied: bool = False
    namespace_guard: Callable[[Any], None] | None = None
    challenge: Any = None  # app.engine.policies.Challenge
    resource_guard: Callable[[Any], None] | None = None  # what a principal restricted to resources may reach

    @property
    def active(self) -> bool:
        return bool(self.scopes) or self.denied or self.namespace_guard is not None


OPEN = RoutePolicy()  # no policy applies


@dataclass(frozen=True, eq=False)
class Pipeline:
    """``steps`` as compiled; ``plan``: the steps the runner runs (a scope check the route's policies already
    make is left out); ``run(ctx, cpu_budget_ns, clock)``: the policies, then the plan."""
    name: str
    steps: tuple[Step, ...]
    place: str
    plan: tuple[PlanStep, ...]
    run: Runner


@dataclass(frozen=True, eq=False)
class Route:
    id: str
    method: str
    path: str
    rule: str  # the path in the router's syntax: {name} -> <name>, {name:path} -> <path:name>
    params: tuple[str, ...]
    tags: tuple[str, ...]
    description: str
    spec: dict[str, Any]
    place: str
    pipeline: Pipeline
    policy: RoutePolicy = OPEN
    disabled: tuple[str, str] | None = None  # (code, message) when a feature switch turns the route off: 404
    spans: tuple[str, ...] = ()  # the parameters that may span several segments ({name:path})
    error_body: Any = None  # app.engine.error_bodies.ErrorBody: its errors in its protocol's format (None: Depot's)

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it: every parameter as {name}."""
        return path_template(self.path)


PATH_PARAM = re.compile(r"\{([^{}]*)\}")


def split_param(text: str) -> tuple[str, str]:
    """'name' -> ('name', ''); 'name:path' -> ('name', 'path')."""
    name, _, kind = text.partition(":")
    return name, kind


def path_template(path: str) -> str:
    return PATH_PARAM.sub(lambda m: "{%s}" % split_param(m.group(1))[0], path)


@dataclass(frozen=True)
class RuntimeChecks:
    """validation.runtime_checks the engine enforces per request (their on_fail is abort_request)."""
    txn_for_writes: bool = False
    digest_verify: bool = False


@dataclass(frozen=True, eq=False)
class CompiledSchema:
    """Everything a running engine needs, decided at load."""
    doc: dict[str, Any]
    report: Report
    sha256: str
    limits: Limits
    features: dict[str, Any]
    versioning: Versioning
    definitions: Definitions
    event_log: EventLog
    caching: dict[str, dict[str, Any]]
    auth_settings: dict[str, Any]
    login_limits: dict[str, str]
    anonymous: dict[str, Any] | None
    allowed_ops: frozenset[str]
    routes: tuple[Route, ...]
    apply_pipelines: dict[str, Pipeline]  # event type -> the pipeline replaying it
    runtime: RuntimeChecks
