"""The per-request runner of a pipeline: its route's policies, then its steps, built once at load.

Two executors with one meaning: ``generate_runner`` writes the plan as straight-line Python (app/engine/codegen.py),
``interpret_runner`` loops over it. ``DEPOT_CODEGEN=off`` chooses the interpreter (``build_runner``); the test
suite runs both ways, and tests/test_codegen.py runs the same pipelines through both.

What either does, in order: the route's policies (a principal holding the policy's scopes, or admin; only admin
when the route is denied; the namespace permission of the namespace guard); then each step of the plan: before
a step that does I/O, the CPU budget check (app.engine.budget), before a step under a `when`, the condition, before a
step that changes the repository, the read-only replica check (replayed events, which carry ctx.event, are how a
replica changes); the op function on its bound arguments; a return after a step that ends the pipeline. Any error
aborts the open transaction and propagates.
"""
from __future__ import annotations

import time

from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from app.metrics import OP_SECONDS
from app.engine.budget import over_budget
from app.engine.codegen import FunctionBuilder, enabled as generating
from app.engine.compiled import OPEN, Pipeline, PlanStep, RoutePolicy, Runner, Step
from app.errors import DepotError
from app.engine.policies import enforce_policies, redundant_scope_check, scope_check

if TYPE_CHECKING:
    from app.engine.budget import BudgetClock
    from app.engine.context import ExecutionContext

Guard = Optional[Callable[[Any], None]]  # a namespace guard: ctx -> None, raising the refusal


def compile_pipeline(name: str, steps: Iterable[Step], place: str, policy: RoutePolicy = OPEN,
                     generate: bool | None = None) -> Pipeline:
    """The pipeline of ``steps`` under the route's ``policy``. An unconditional auth.require_scopes asking nothing
    beyond the policy's scopes cannot fail after it: it is left out of the plan (it stays in ``steps``). Once
    namespace grants exist the namespace permission replaces the scope checks: a second runner, without them,
    is used while they do. ``generate``: generated code or the interpreter (None: as DEPOT_CODEGEN says)."""
    steps = tuple(steps)
    plan = plan_of([s for s in steps if not redundant_scope_check(s, policy)])
    granted = None
    if policy.namespace_guard is not None:
        granted = build_runner(plan_of([s for s in steps if not scope_check(s)]),
                               namespace_guard=policy.namespace_guard, generate=generate)
    run = build_runner(plan, policy.scopes, policy.denied, granted=granted, generate=generate)
    return Pipeline(name, steps, place, plan, run)


def plan_of(steps: Iterable[Step]) -> tuple[PlanStep, ...]:
    return tuple(PlanStep(s.fn, s.args, s.when, s.decl.io, s.decl.terminal, s.decl.mutates,
                          OP_SECONDS.labels(s.op).observe if s.decl.io else None) for s in steps)


def build_runner(plan: tuple[PlanStep, ...], policy_scopes: frozenset[str] = frozenset(), denied: bool = False,
                 granted: Runner | None = None, namespace_guard: Guard = None,
                 generate: bool | None = None) -> Runner:
    """``generate_runner`` or ``interpret_runner`` (``generate`` None: generated unless DEPOT_CODEGEN=off)."""
    if generate is None:
        generate = generating()
    make = generate_runner if generate else interpret_runner
    return make(plan, policy_scopes, denied, granted, namespace_guard)


def generate_runner(plan: tuple[PlanStep, ...], policy_scopes: frozenset[str] = frozenset(), denied: bool = False,
                    granted: Runner | None = None, namespace_guard: Guard = None) -> Runner:
    """The plan as straight-line code after the policies (see the module's docstring): each step a direct call
    of its op function with its bound arguments. ``granted``: the runner to use instead while namespace grants
    exist."""
    builder = FunctionBuilder("run_pipeline", "ctx, budget, clock")
    if granted is not None:
        builder.line("if ctx.engine.access.active:")
        builder.line("return %s(ctx, budget, clock)" % builder.bind(granted, "granted"), 1)
    over = builder.bind(over_budget, "over_budget")
    read_only = builder.bind(refuse_read_only, "read_only")
    builder.line("cpu, wall = clock.cpu, clock.wall")
    builder.line("started_cpu, started_wall = cpu(), wall()")
    builder.line("try:")
    builder.depth += 1
    if policy_scopes or denied:  # the common case inline; enforce_policies works out the refusal
        policy = builder.bind(frozenset(policy_scopes), "policy")
        builder.line("principal = ctx.principal")
        held = "" if denied else " or %s <= principal['scopes']" % policy
        builder.line("if principal is None or not ('admin' in principal['scopes']%s):" % held)
        builder.line("%s(principal, %s, %s)" % (builder.bind(enforce_policies, "enforce"), policy,
                                                builder.bind(bool(denied), "denied")), 1)
    if namespace_guard is not None:
        builder.line("%s(ctx)" % builder.bind(namespace_guard, "namespace_guard"))
    timed = builder.bind(time.perf_counter, "perf_counter")
    for fn, args, when, io, ends, mutates, timer in plan:
        if io:  # CPU time never exceeds wall time over the same interval, so the cheap wall clock decides
            # whether the CPU clock (for the thread's, a system call) needs reading at all
            builder.line("if wall() - started_wall - ctx.exempt_wall_ns > budget and cpu() - started_cpu - "
                         "ctx.exempt_ns > budget:")
            builder.line("%s(ctx, clock, started_cpu, budget)" % over, 1)
        deeper = 0
        if when is not None:
            builder.line("if %s(ctx):" % builder.bind(when, "when"))
            deeper = 1
        if mutates:
            builder.line("if ctx.engine.read_only and ctx.event is None:", deeper)
            builder.line("%s()" % read_only, deeper + 1)
        if timer is not None:  # an I/O step's latency, for the metrics
            builder.line("step_started = %s()" % timed, deeper)
        builder.line("%s(ctx, %s)" % (builder.bind(fn, "step"), builder.bind(args, "args")), deeper)
        if timer is not None:
            builder.line("%s(%s() - step_started)" % (builder.bind(timer, "timer"), timed), deeper)
        if ends:
            builder.line("return", deeper)
    if builder.lines[-1].endswith("try:"):  # nothing to run
        builder.line("pass")
    builder.depth -= 1
    builder.line("except BaseException:")
    builder.line("ctx.abort_txn()", 1)
    builder.line("raise", 1)
    runner: Runner = builder.build()
    return runner


def interpret_runner(plan: tuple[PlanStep, ...], policy_scopes: frozenset[str] = frozenset(), denied: bool = False,
                     granted: Runner | None = None, namespace_guard: Guard = None) -> Runner:
    """What ``generate_runner`` writes out, as a loop over the plan (DEPOT_CODEGEN=off)."""
    policy = frozenset(policy_scopes)
    checks_principal = bool(policy) or denied

    def run_pipeline(ctx: ExecutionContext, budget: int, clock: BudgetClock) -> None:
        if granted is not None and ctx.engine.access.active:
            return granted(ctx, budget, clock)
        cpu, wall = clock.cpu, clock.wall
        started_cpu, started_wall = cpu(), wall()
        try:
            if checks_principal:
                principal = ctx.principal
                if principal is None or not ("admin" in principal["scopes"] or (
                        not denied and policy <= principal["scopes"])):
                    enforce_policies(principal, policy, denied)
            if namespace_guard is not None:
                namespace_guard(ctx)
            for step in plan:
                if step.io and wall() - started_wall - ctx.exempt_wall_ns > budget and \
                        cpu() - started_cpu - ctx.exempt_ns > budget:
                    over_budget(ctx, clock, started_cpu, budget)
                if step.when is not None and not step.when(ctx):
                    continue
                if step.mutates and ctx.engine.read_only and ctx.event is None:
                    refuse_read_only()
                if step.timer is not None:
                    step_started = time.perf_counter()
                    step.fn(ctx, step.args)
                    step.timer(time.perf_counter() - step_started)
                else:
                    step.fn(ctx, step.args)
                if step.ends:
                    return None
        except BaseException:
            ctx.abort_txn()
            raise
        return None
    return run_pipeline


def refuse_read_only() -> None:
    raise DepotError("READ_ONLY", 403, "this server is a read-only replica: send changes to its primary")
