"""How Depot's own views (/auth, /admin, /health, /openapi.json, /docs) describe themselves in the OpenAPI
document: ``@documented(...)`` attaches a ViewDoc to a view; ``view_paths(app)`` walks the app's URL map and
turns each rule's ViewDoc into an operation. Paths and path parameters come from the rules themselves (an
``<int(max=N):version>`` is an integer up to N), so what is documented is what is routed.
"""
import re
from dataclasses import dataclass, field

from werkzeug.routing import IntegerConverter, PathConverter

from app.http.openapi_components import (BINARY_BODY, JSON, JSON_BODY, PAGE_QUERY, PAGING, REQUEST_ID, Access,
                                    add_errors, json_answer, parameter)

AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}  # answered for every GET / every rule: not operations of their own
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
_INHERIT = object()  # documented(access=...) left out: the access the view's guard declares


@dataclass(frozen=True)
class ViewDoc:
    """One operation of a view. ``responses``: status -> JSON Schema of the JSON answered; ``answers``: status ->
    a whole response object (HTML, bytes, no body); ``errors``: "<status> <CODE>" beyond those of ``access``,
    ``body``, ``paged`` and ``binary_body``, which add their own."""
    summary: str
    responses: dict = field(default_factory=dict)
    answers: dict = field(default_factory=dict)
    errors: tuple = ()
    access: Access = None
    body: dict = None
    body_optional: bool = False  # an empty body is taken for {}
    binary_body: bool = False
    paged: bool = False
    query: dict = field(default_factory=dict)  # name -> JSON Schema
    params: dict = field(default_factory=dict)  # path parameter -> JSON Schema, where the rule says less
    inputs: tuple = ()  # RequestInput: headers or query parameters read
    description: str = ""
    operation_id: str = None

    def operation(self, rule, endpoint):
        responses = {str(status): json_answer(schema) for status, schema in self.responses.items()}
        responses.update({str(status): answer for status, answer in self.answers.items()})
        add_errors(responses, self._errors())
        operation = {"operationId": self.operation_id or "depot." + endpoint.rpartition(".")[2],
                     "summary": self.summary, "tags": [_tag(rule.rule)], "parameters": self._parameters(rule),
                     "responses": {status: responses[status] for status in sorted(responses)}}
        if self.body is not None:
            operation["requestBody"] = {"required": not self.body_optional, "content": {JSON: {"schema": self.body}}}
        if self.binary_body:
            operation["requestBody"] = {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
        description = [self.description] if self.description else []
        if self.access is not None:
            operation["security"] = self.access.security()
            operation["x-required-scopes"] = list(self.access.scopes)
            description.insert(0, self.access.describe())
        if description:
            operation["description"] = " ".join(description)
        return operation

    def _errors(self):
        errors = list(self.access.errors()) if self.access is not None else []
        errors += JSON_BODY if self.body is not None else BINARY_BODY if self.binary_body else ()
        errors += PAGING if self.paged else ()
        return errors + list(self.errors)

    def _parameters(self, rule):
        params = [parameter("path", name, self.params.get(name) or _converter_schema(converter))
                  for name, converter in rule._converters.items()]  # werkzeug keeps a rule's converters here
        query = dict(PAGE_QUERY, **self.query) if self.paged else self.query
        params += [parameter("query", name, schema) for name, schema in query.items()]
        params += [parameter(item.where, item.name, item.schema, item.doc) for item in self.inputs]
        return params + [REQUEST_ID]


def documented(summary, access=_INHERIT, **details):
    """Attach a ViewDoc to a view. Without ``access``, the view's guard says who may call it (the
    ``openapi_access`` an admin guard sets on the view it wraps); a view without one is public."""
    def attach(view):
        view.openapi = ViewDoc(summary, access=getattr(view, "openapi_access", None) if access is _INHERIT
                               else access, **details)
        return view
    return attach


def document_rules(view, docs):
    """For a view serving several rules (a package's blueprint): rule -> ViewDoc."""
    view.openapi = dict(docs)
    return view


def openapi_path(rule):
    """The OpenAPI path of a URL rule: <converter:name> becomes {name}; a trailing slash is optional here
    (the URL map does not insist on it), so it is left out."""
    path = _RULE_ARGUMENT.sub(r"{\1}", rule)
    return path.rstrip("/") or "/"


def view_paths(app):
    """path -> method -> operation, for every rule of ``app``'s own URL map."""
    paths = {}
    for rule in app.url_map.iter_rules():
        doc = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if isinstance(doc, dict):
            doc = doc.get(rule.rule)
        if doc is None:
            raise LookupError("view %s (%s) is not @documented" % (rule.endpoint, rule.rule))
        for method in sorted(rule.methods - AUTOMATIC_METHODS):
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = doc.operation(rule, rule.endpoint)
    return paths


def _tag(rule):
    first = rule.strip("/").split("/")[0]
    return first if first in ("auth", "admin") else "depot"


def _converter_schema(converter):
    if isinstance(converter, IntegerConverter):
        schema = {"type": "integer"}
        minimum = converter.min if converter.min is not None else None if converter.signed else 0
        for key, value in (("minimum", minimum), ("maximum", converter.max)):
            if value is not None:
                schema[key] = value
        return schema
    if isinstance(converter, PathConverter):
        return {"type": "string"}
    return {"type": "string", "pattern": "^[^/]+$"}
