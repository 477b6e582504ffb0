"""The load-time binding analysis: what a pipeline has bound so far, step by step.

The compiler walks a pipeline's steps in order with one Scope; each argument kind (app/engine/opspec.py) and each op's
``binds`` hook tells it what the step reads and binds. A reference that no earlier step can bind is an error at
its place; one bound only if a request carries it is a warning.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from app.engine.compiled import Definitions
from app.engine.definitions import EventType, Validator
from app.engine.expr import Ref
from app.engine.opspec import BindError
from app.engine.report import Report


class Scope:
    """What a pipeline has bound so far, for the load-time binding analysis (and the env ops bind against)."""

    def __init__(self, report: Report, definitions: Definitions, params: Iterable[str] = (),
                 event_types: Sequence[EventType] | None = None) -> None:
        """``params``: the route's path parameters; ``event_types``: the events an apply pipeline replays (None:
        a route's pipeline)."""
        self.report = report
        self.definitions = definitions
        self.params = list(params)
        self.replay = event_types is not None
        self.fields: set[str] = set()
        self.body_fields: set[str] = set()
        self.unknown_sources: list[str] = []
        self.vars: set[str] = set()
        self.json_vars: set[str] = set()
        self.stream_vars: set[str] = set()  # listings read as the response is written (index.query `all`)
        self.place = ""  # where the argument being bound is: findings are reported there
        self.body_reader: str | None = None  # the first step reading the request body, and where
        if event_types is not None:
            props = [set(e.validator.schema.get("properties", {})) for e in event_types]
            self.fields = set.intersection(*props) if props else set()
            if any(not e.validator.schema.get("properties") for e in event_types):
                self.unknown_sources.append("the event payload")

    # --- used by op declarations and argument kinds ---

    def compile_json_schema(self, schema: dict[str, Any]) -> Validator:
        problem = Validator.schema_errors(schema)
        if problem:
            raise BindError("not a valid JSON Schema: %s" % problem)
        return Validator(schema)

    def binds_var(self, name: str) -> None:
        self.vars.add(name)
        self.stream_vars.discard(name)

    def binds_stream(self, name: str) -> None:
        """``name`` holds a Stream (app.stores.codec): only an argument that streams may take it, whole."""
        self.vars.add(name)
        self.stream_vars.add(name)

    def bind_fields(self, names: Iterable[str]) -> None:
        self.fields.update(names)

    def may_bind(self, field: str) -> bool:
        """Whether the field can hold a value at this point of the pipeline."""
        return field in self.fields or field in self.body_fields or bool(self.unknown_sources)

    def bind_unknown(self, source: str) -> None:
        self.unknown_sources.append(source)

    def bind_path_params(self, entity_name: str | None) -> None:
        entity = self.definitions["entity"].get(entity_name) if entity_name else None
        if entity is not None:
            for param in self.params:
                if param not in entity.fields:
                    self.report.error(self.place + ".args.entity", "path parameter {%s} is not a field of entity %s"
                                      % (param, entity.name))
        self.fields.update(self.params)

    def bind_json_body(self, out: str | None) -> None:
        if out:
            self.json_vars.add(out)
        self.bind_unknown("the JSON body")
        self.reads_body("parse.json")

    def reads_body(self, op: str) -> None:
        """A step reads the request body, which a request sends once: a later reader finds nothing left."""
        if self.body_reader is not None:
            self.report.warning(self.place, "%s reads the request body, which %s reads first: unless only one "
                                "of them runs, the second finds it empty" % (op, self.body_reader), "bindings")
        else:
            self.body_reader = "%s at %s" % (op, self.place)

    def bind_body_schema(self, value: Any, schema: Any) -> None:
        if isinstance(value, str) and value.startswith("$") and value[1:] in self.json_vars:
            if isinstance(schema, str):
                validator = self.definitions["schema"].get(schema)
                schema = validator.schema if validator else {}
            if isinstance(schema, dict):
                self.body_fields.update(schema.get("properties", {}))

    def uses(self, refs: Iterable[Ref], streamed: Iterable[Ref] = ()) -> None:
        """Check what ``refs`` read; those in ``streamed`` are taken whole by an argument that streams."""
        whole = {id(ref) for ref in streamed}
        for ref in refs:
            self.reads(ref.namespace, ref.root, ref.source, ref.absent_ok)
            if ref.namespace == "var" and ref.root in self.stream_vars and id(ref) not in whole:
                self.report.error(self.place, "%s: $%s holds every row of an index key, read as the response is "
                                  "written (index.query with all): it can only be passed whole, as \"$%s\", to an "
                                  "argument that streams it (respond.json's body); to index or test rows, query a "
                                  "page (limit, page_size)" % (ref.source, ref.root, ref.root))

    def reads(self, namespace: str, root: str, source: str, optional: bool = False) -> None:
        """Check one read of ``root`` in ``namespace`` ("field", "var", "principal" or "event"), written
        ``source``: a `{...}` or `$...` reference, or a page template's ``fields.x`` / ``vars.x``."""
        if namespace == "var":
            if root not in self.vars:
                self.report.error(self.place, "%s can never be bound here: no earlier step outputs $%s (bound: %s)"
                                  % (source, root, ", ".join(sorted(self.vars)) or "none"))
        elif namespace == "event":
            if not self.replay:
                self.report.error(self.place, "%s: {event.*} is bound only in replication apply pipelines"
                                  % source)
        elif namespace == "principal":
            if self.replay:
                self.report.error(self.place, "%s: replayed events have no principal" % source)
        elif namespace == "request":
            if self.replay:
                self.report.error(self.place, "%s: replayed events have no request" % source)
        elif root in self.fields:
            return
        elif root in self.body_fields:
            self.report.warning(self.place, "%s is not a path or query field; it resolves from the parsed JSON "
                                "body (write $%s.%s to say so)" % (source, next(iter(self.json_vars), "body"),
                                                                    root), "bindings")
        elif self.unknown_sources:
            self.report.warning(self.place, "%s is bound only if %s carries it" % (source,
                                                                                 " or ".join(self.unknown_sources)),
                                "bindings")
        elif not optional:
            self.report.error(self.place, "%s can never be bound: fields bound here are %s"
                              % (source, ", ".join(sorted(self.fields)) or "none"))
