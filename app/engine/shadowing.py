"""Routes one URL can reach twice: the router takes the literal over the parameter, the other route loses.

Two routes of one method whose paths can match the same URL: the router takes, at the first segment where one
has a literal and the other a parameter, the literal (Werkzeug's rule). The other route then never sees that
parameter taking that literal (a namespace called 'search' beside GET /v1/search). That is an error unless the
parameter's entity field refuses the literal anyway (a constraint, `reserved` for instance, or the versioning
scheme): then no valid request is lost.
"""
from __future__ import annotations

import json
import re
import threading
from typing import Any, Sequence

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from app.engine.compiled import PATH_PARAM, Route, path_entity
from app.engine.report import Report

_PARAM_SEGMENT = re.compile(r"\{([^{}]*)\}")

# Werkzeug compiles each rule it binds to a map through ast.parse, and CPython 3.11 counts the depth of the AST
# objects it builds per interpreter, not per thread: two threads binding rules at once can fail with "SystemError:
# AST constructor recursion depth mismatch" (a schema compiled while request threads rebuild the URL map after a
# swap did). Every rule Depot binds is bound under this lock: url_map() here, and DepotFlask's add_url_rule.
RULES_LOCK = threading.RLock()


def url_map(rules: Sequence[Rule], **options: Any) -> Map:
    """A Werkzeug map of ``rules`` (``options``: Map's), its rules bound under RULES_LOCK."""
    with RULES_LOCK:
        return Map(rules, **options)
Segment = str | tuple[str]
Lost = list[tuple[int, str, str]]  # (position, the loser's parameter, the winner's literal)


def check_shadowing(routes: Sequence[Route], report: Report) -> None:
    """Report every route another one hides from some URL its parameters would accept."""
    alone = _SingleRules()
    for i, first in enumerate(routes):
        for second in routes[i + 1:]:
            spans = first.spans or second.spans
            shadowing = _span_shadowing(first, second, alone) if spans else _shadowing(first, second)
            if shadowing is not None:
                _report(*shadowing, report)


def _segments(path: str) -> list[Segment]:
    """A path's segments: a parameter segment ('{name}') as (name,), a literal as itself."""
    return [(m.group(1),) if m else part for part, m in
            ((part, _PARAM_SEGMENT.fullmatch(part)) for part in path.strip("/").split("/"))]


def _shadowing(first: Route, second: Route) -> tuple[Route, Route, Lost] | None:
    """(winner, loser, what the loser loses) when one URL can match both routes, else None."""
    if first.method != second.method:
        return None
    a, b = _segments(first.path), _segments(second.path)
    if len(a) != len(b):
        return None
    differing = []
    for position, (x, y) in enumerate(zip(a, b)):
        literal_x, literal_y = isinstance(x, str), isinstance(y, str)
        if isinstance(x, str) and isinstance(y, str):
            if x != y and not _may_match(x, y):
                return None  # two different literals (or a parameter's literal part the other lacks)
            continue
        if literal_x != literal_y:
            differing.append((position, literal_x))
    if not differing:
        return None  # the same shape: reported as a duplicate
    first_wins = differing[0][1]
    winner, loser = (first, second) if first_wins else (second, first)
    winner_segments, loser_segments = (a, b) if first_wins else (b, a)
    lost = [(p, loser_segments[p][0], str(winner_segments[p])) for p, literal_first in differing
            if literal_first == first_wins]
    return winner, loser, lost


def _span_shadowing(first: Route, second: Route, alone: _SingleRules) -> tuple[Route, Route, Lost] | None:
    """The same question when a parameter spans segments ({name:path}): segments no longer line up, so the
    router itself is asked. Each route's path, its parameters filled with a sample segment, is matched against
    both rules; when both match, the router's choice wins and the other route loses the values its parameters
    took from that URL."""
    if first.method != second.method:
        return None
    pair = (first, second)
    for route in pair:
        url = PATH_PARAM.sub("x", route.path)
        if all(alone.match(other, url) is not None for other in pair):
            rules = url_map([Rule(first.rule, endpoint=0, methods=[first.method]),
                             Rule(second.rule, endpoint=1, methods=[second.method])]).bind("depot.invalid")
            winner = pair[rules.match(url, method=route.method)[0]]
            loser = second if winner is first else first
            values = alone.match(loser, url) or {}
            return winner, loser, [(0, name, value) for name, value in values.items() if value != "x"]
    return None


class _SingleRules:
    """Each route's rule alone, bound once (building a Werkzeug map costs a millisecond; a schema has hundreds
    of pairs to ask about)."""

    def __init__(self) -> None:
        self.adapters: dict[int, Any] = {}

    def match(self, route: Route, url: str) -> dict[str, str] | None:
        """The parameters ``route`` binds from ``url`` (None: it does not match)."""
        adapter = self.adapters.get(id(route))
        if adapter is None:
            adapter = self.adapters[id(route)] = url_map([Rule(route.rule, endpoint=0,
                                                               methods=[route.method])]).bind("depot.invalid")
        try:
            return dict(adapter.match(url, method=route.method)[1])
        except HTTPException:
            return None


def _may_match(x: str, y: str) -> bool:
    """Whether two segments, literal or holding a parameter beside literal text (`@{scope}`), can be one segment
    of the same URL."""
    if "{" in x and "{" in y:
        return True
    pattern, text = (x, y) if "{" in x else (y, x)
    if "{" not in pattern:
        return False
    return re.fullmatch("".join(re.escape(part) if i % 2 == 0 else "[^/]+"
                                for i, part in enumerate(PATH_PARAM.split(pattern))), text) is not None


def _report(winner: Route, loser: Route, lost: Lost, report: Report) -> None:
    entity = path_entity(loser.pipeline.steps)
    if entity is not None and any(param in entity.fields and not entity.accepts(param, literal)
                                  for _, param, literal in lost):
        return
    values = " and ".join("%s is %r" % (param, literal) for _, param, literal in lost)
    _, param, literal = lost[0]
    report.error(loser.place + ".path", "%s %s is hidden by %s %s (%s) when %s: reserve %r for %s in the entity's "
                 "constraints (%s) or change one of the paths"
                 % (loser.method, loser.path, winner.method, winner.path, report.display(winner.place), values,
                    literal, "%s.%s" % (entity.name, param) if entity else param,
                    json.dumps({"field": param, "reserved": [literal]})))
