"""The check report: every finding names its place in the schema as a path (api.routes[2].pipeline[5].args.doc).

A place inside a route pack (app/engine/packs.py) is checked in the merged document but named where it was
written: the pack and its own place (``packs[0] (packs/pypi.json): api.routes[3].pipeline[2].args.doc``).
"""
from typing import Any, Optional

ERROR, WARNING = "error", "warning"


class Finding:
    __slots__ = ("severity", "place", "message", "check")

    def __init__(self, severity: str, place: str, message: str, check: Optional[str] = None) -> None:
        self.severity, self.place, self.message, self.check = severity, place, message, check

    def to_dict(self) -> dict[str, str]:
        out = {"severity": self.severity, "place": self.place, "message": self.message}
        if self.check:
            out["check"] = self.check
        return out

    def __str__(self) -> str:
        tag = "[%s] " % self.check if self.check else ""
        return "%-7s %s: %s%s" % (self.severity.upper(), self.place or "(schema)", tag, self.message)


class Report:
    def __init__(self, source: str = "") -> None:
        self.source = source
        self.findings: list[Finding] = []
        self._origins: dict[str, str] = {}  # a place in the merged document -> where it was written

    def origin(self, merged: str, written: str) -> None:
        """Places at or below ``merged`` (a place in the merged document) are named from ``written``."""
        self._origins[merged] = written

    def display(self, where: str) -> str:
        """How ``where``, a place in the merged document, is named: where it was written."""
        if not self._origins:
            return where
        for cut in range(len(where), 0, -1):  # the longest place above ``where`` that was mounted from a pack
            if cut == len(where) or where[cut] in ".[":
                written = self._origins.get(where[:cut])
                if written is not None:
                    return written + where[cut:]
        return where

    def error(self, place: str, message: str, check: Optional[str] = None) -> None:
        self.add(ERROR, place, message, check)

    def warning(self, place: str, message: str, check: Optional[str] = None) -> None:
        self.add(WARNING, place, message, check)

    def add(self, severity: str, place: str, message: str, check: Optional[str] = None) -> None:
        """Record a finding; the same problem found by two checks is reported once."""
        place = self.display(place)
        for existing in self.findings:
            if existing.place == place and existing.message == message:
                if severity == ERROR:
                    existing.severity = ERROR
                existing.check = existing.check or check
                return
        self.findings.append(Finding(severity, place, message, check))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        verdict = "can be served" if self.ok else "cannot be served"
        return "%s: %d error(s), %d warning(s); %s" % (self.source or "schema", len(self.errors),
                                                        len(self.warnings), verdict)

    def to_text(self) -> str:
        return "\n".join([str(f) for f in self.findings] + [self.summary()])

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": [f.to_dict() for f in self.errors],
                "warnings": [f.to_dict() for f in self.warnings]}


def place(*parts: str | int) -> str:
    """place("api.routes", 2, "pipeline", 5) -> 'api.routes[2].pipeline[5]'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += "[%d]" % part
        elif out:
            out += "." + part
        else:
            out = part
    return out
