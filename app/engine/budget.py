"""The clocks the per-request CPU budget (ops.limits.max_cpu_ms_per_request) is read from.

A served request is charged the CPU time of its thread. The generated pipeline runner reads a cheap wall clock
first (CPU time never exceeds wall time over the same interval, so a wall interval under the budget settles it)
and the thread's CPU clock only when that does not. Garbage collection of older generations is not the request's
work: its pauses are subtracted.

The clock is injectable (``Engine(cpu_clock=...)``, ``Service``, ``LocalDepot``): a clock of one's own is both
the CPU and the wall clock, and only what it says is charged, so tests decide exactly how much a request spends
and none depends on how fast or busy the machine is.
"""
from __future__ import annotations

import gc
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from app.errors import DepotError

if TYPE_CHECKING:
    from app.engine.context import ExecutionContext

Clock = Callable[[], int]  # nanoseconds, from any origin


class CollectorPauses:
    """The CPU time the garbage collector's older-generation passes took in each thread, by ``cpu``'s reading: a
    collection that happens to run during a request (its cost grows with the whole process's heap) is not that
    request's work."""

    def __init__(self, cpu: Clock = time.thread_time_ns):
        self.cpu = cpu
        self.local = threading.local()
        gc.callbacks.append(self._observe)

    def close(self) -> None:
        gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 0:  # young passes take microseconds
            return
        local = self.local
        if phase == "start":
            local.began = self.cpu()
        elif getattr(local, "began", None) is not None:
            if not hasattr(local, "pauses"):
                local.pauses = deque(maxlen=64)
            local.pauses.append((local.began, self.cpu() - local.began))
            local.began = None

    def since(self, started_cpu: int) -> int:
        """Nanoseconds of collection in this thread since ``started_cpu`` (a reading of ``cpu``)."""
        return sum(ns for began, ns in getattr(self.local, "pauses", ()) if began >= started_cpu)


@dataclass(frozen=True)
class BudgetClock:
    """What a pipeline run reads: ``cpu`` (charged), ``wall`` (never advancing less than ``cpu`` over an interval,
    consulted first because it is cheaper) and the collector pauses measured by ``cpu``, if any are subtracted."""
    cpu: Clock
    wall: Clock
    pauses: Optional[CollectorPauses] = None

    def spent(self, started_cpu: int, exempt_ns: int) -> int:
        """The CPU time charged since ``started_cpu``: less what was exempt and what collections took."""
        spent = self.cpu() - started_cpu - exempt_ns
        return spent - self.pauses.since(started_cpu) if self.pauses is not None else spent


THREAD_CLOCK = BudgetClock(time.thread_time_ns, time.perf_counter_ns, CollectorPauses())


def stopped_clock() -> int:
    """A clock that never moves: no request is charged anything (DEPOT_CPU_BUDGET=off)."""
    return 0


def budget_clock(cpu_clock: Optional[Clock] = None) -> BudgetClock:
    """The thread's CPU clock, or ``cpu_clock`` (a callable returning nanoseconds) as both CPU and wall clock."""
    return THREAD_CLOCK if cpu_clock is None else BudgetClock(cpu_clock, cpu_clock)


def over_budget(ctx: ExecutionContext, clock: BudgetClock, started_cpu: int, budget: int) -> None:
    """The generated check found the budget spent; it is, unless garbage collection took the difference."""
    if clock.spent(started_cpu, ctx.exempt_ns) > budget:
        raise DepotError("CPU_LIMIT_EXCEEDED", 503, "request exceeded max_cpu_ms_per_request (%d ms)"
                         % (budget // 1_000_000))
