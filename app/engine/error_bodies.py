"""A route's error answers in its protocol's own format (`error_body`): npm clients print an error body's `error`
member as text, OCI clients read `{"errors": [{"code", "message", "detail"}]}`. The body is a template over the
error alone, compiled when the schema is loaded:

    "error_body": {"error": "{error.message}", "code": "{error.code}"}

`{error.code}`, `{error.message}`, `{error.status}` (an integer) and `{error.field?}` (absent when the error names no
field) are all it can read. A pack's `api.error_body` applies to each of its routes that has none of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.engine.expr import (Const, DictNode, EachNode, ListNode, Node, Template, TemplateSyntaxError, compile_value,
                             every_ref)
from app.errors import DepotError

READABLE = ("code", "message", "status", "field")


class ErrorBodyError(ValueError):
    """An error_body that reads something other than the error: a load error."""


class _ErrorScope:
    """What an error body's template reads: the field ``error``, and nothing else."""
    __slots__ = ("fields", "vars", "principal", "event", "request")

    def __init__(self, error: DepotError) -> None:
        seen = {"code": error.code, "message": error.message, "status": error.status}
        if error.field is not None:
            seen["field"] = error.field
        self.fields = {"error": seen}
        self.vars: dict[str, Any] = {}
        self.principal = self.event = self.request = None


@dataclass(frozen=True)
class ErrorBody:
    template: Node

    def render(self, error: DepotError) -> Any:
        return self.template.render(_ErrorScope(error))

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of what it renders (what the OpenAPI document says its errors are)."""
        return _schema(self.template)


_READ_SCHEMAS = {"status": {"type": "integer"}, "field": {"type": ["string", "null"]}}


def _schema(node: Node) -> dict[str, Any]:
    if isinstance(node, DictNode):
        return {"type": "object", "properties": {key: _schema(item) for key, item in node.items},
                "required": [key for key, _ in node.items]}
    if isinstance(node, ListNode):
        return {"type": "array", "items": [_schema(item) for item in node.nodes][0] if node.nodes else {}}
    if isinstance(node, Template) and node.single is not None:
        return _READ_SCHEMAS.get(node.single.path[0], {"type": "string"})
    if isinstance(node, Const):
        return {"const": node.value}
    return {} if isinstance(node, EachNode) else {"type": "string"}


def compile_error_body(value: Any) -> ErrorBody:
    try:
        template = compile_value(value)
    except TemplateSyntaxError as exc:
        raise ErrorBodyError(str(exc)) from None
    for ref in every_ref(template):
        step = ref.path[0] if ref.path else None
        if ref.namespace != "field" or ref.root != "error" or step not in READABLE or len(ref.path) != 1:
            raise ErrorBodyError("an error body reads {error.code}, {error.message}, {error.status} and "
                                 "{error.field?} only, not %s" % ref.source)
        if step == "field" and not ref.absent_ok:
            raise ErrorBodyError("{error.field} is absent when the error names no field: write {error.field?}")
    return ErrorBody(template)
