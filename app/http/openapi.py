"""An OpenAPI 3.1 document of the whole API: the compiled routes and Depot's own views.

A compiled route is described (``route_operation``, when the document is asked for) from what the ops
of its pipeline declare (app/engine/opspec.py): the statuses each may produce (``errors``, ``answers``), the request
headers and query parameters it reads (``inputs``), what its outputs hold (``Output(schema=)``), and its
``openapi=`` hook (path, query and header parameters, request bodies, responses, security). The JSON a
respond.json step answers is described from its body template: each reference takes the schema of what an
earlier step bound to it. Depot's own views describe themselves with @documented (app/http/openapi_views.py).
"""
from app.engine import expr, media
from app.http.openapi_components import (ref, BINARY_BODY, JSON, SCHEMAS, SECURITY_SCHEMES, SERVER_ANSWERS, STAGED_MEMBER,
                                    STRING, Access, REQUEST_ID, add_errors, blob_answers, json_answer, nullable, parameter, portable)
from app.http.openapi_views import view_paths
from app.engine.opspec import Output

ENGINE_ERRORS = ["503 CPU_LIMIT_EXCEEDED", "503 IO_LIMIT_EXCEEDED"]  # any route, whatever its steps
PRINCIPAL = {"type": "object", "properties": {"sub": STRING, "scopes": {"type": "array", "items": STRING},
                                              "kind": STRING}}
_QUERY_TYPES = {"integer": "integer", "boolean": "boolean", "string": "string"}


class Operation:
    """The OpenAPI operation of one route, as its steps describe it (the hooks below are what they call)."""

    def __init__(self, route):
        self.route = route
        self.parameters = {}
        self.body = None
        self.json_vars = set()
        self.responses = {}
        self.bodies = {}  # status -> media type -> the schemas of the bodies answered with them
        self.scopes = set(route.policy.scopes)
        self.secured = bool(route.policy.scopes) or route.policy.denied
        self.vars = {}  # variable -> the schema of its value, as the step binding it declares
        self.fields = {}  # field -> the schema of its value (the first source binding it wins, as at run time)
        self.header_patterns = {}  # variable -> the x-header-pattern entry of the headers it collects

    # --- parameters and bodies ---

    def require(self, scopes):
        self.secured = True
        self.scopes |= set(scopes)

    def path_params(self, entity):
        for name in self.route.params:
            schema = {"type": "string"}
            for constraint in getattr(entity, "constraints", ()):
                if constraint.field == name and constraint.pattern:
                    schema["pattern"] = constraint.pattern
            spans = name in self.route.spans
            self.parameters[("path", name)] = parameter(
                "path", name, schema, "may span several segments: `/` is part of the value" if spans else None)
            self.fields[name] = schema

    def query_params(self, fields):
        for name, spec in (fields or {}).items():
            schema = {"type": _QUERY_TYPES.get(spec.get("type", "string"), "string")}
            for key in ("default", "minimum", "maximum"):
                if key in spec:
                    schema[key] = spec[key]
            self.parameters[("query", name)] = parameter("query", name, schema, required=bool(spec.get("required")))
            self.fields.setdefault(name, schema)

    def header_params(self, fields, prefixes):
        for field, header in (fields or {}).items():
            self.parameters[("header", header)] = parameter("header", header, {"type": "string"})
            self.fields.setdefault(field, {"type": "string"})
        for var, prefix in (prefixes or {}).items():
            self.header_patterns[var] = {
                "pattern": prefix + "*", "schema": {"type": "string"}, "collects": var,
                "description": "any number of headers named %s<key>; each becomes <key> (lower-cased) -> value in "
                               "the object $%s" % (prefix, var)}
            self.vars[var] = {"type": "object", "additionalProperties": {"type": "string"}}

    def inputs(self, declared):
        for item in declared:
            self.parameters[(item.where, item.name)] = parameter(item.where, item.name, item.schema, item.doc)

    def json_body(self, out):
        self.json_vars.add(out)
        self.body = self.body or {"required": True, "content": {JSON: {"schema": {}}}}

    def streamed_members(self, spec, store, out):
        """parse.json with `stream`: which string members stream into the store, and the handles $out lists."""
        self.body["description"] = (
            "A JSON document. The string members at %s are streamed (%s) into blob store %s as they arrive, not "
            "held: they may be as large as the store takes, while the rest of the document is bounded by "
            "max_json_bytes." % (", ".join(spec.members), "base64-decoded" if spec.decode == "base64" else
                                  "their text, as UTF-8", store))
        self.vars[out] = {"type": "array", "maxItems": spec.max_members, "items": STAGED_MEMBER}

    def body_schema(self, value, validator):
        """validate.json_schema over a whole variable: the request body's schema, or the object of collected
        headers' (what x-header-pattern's entry then says they must satisfy)."""
        single = getattr(value, "single", None)
        if single is None or single.namespace != "var" or single.path:
            return
        schema = portable(validator.schema)
        if single.root in self.json_vars:  # (a description parse.json gave the body stays)
            self.body = dict(self.body or {}, required=True, content={JSON: {"schema": schema}})
            self.vars[single.root] = schema
            for name, member in schema.get("properties", {}).items():
                self.fields.setdefault(name, member)
        elif single.root in self.header_patterns:
            self.header_patterns[single.root]["collected"] = schema

    def form_body(self, form):
        """parse.multipart: a multipart/form-data body of the declared fields (and the file part)."""
        properties, required = {}, []
        for spec in form.fields.values():
            schema = {"type": _QUERY_TYPES[spec.spec.get("type", "string")]}
            schema.update({key: spec.spec[key] for key in ("minimum", "maximum") if key in spec.spec})
            if spec.spec.get("type", "string") == "string":
                schema["maxLength"] = spec.max_bytes
            self.fields.setdefault(spec.field, schema)
            properties[spec.form] = {"type": "array", "items": schema, "maxItems": spec.max_items} \
                if spec.repeated else schema
            if spec.required:
                required.append(spec.form)
        if form.file is not None:
            properties[form.file] = {"type": "string", "contentMediaType": "application/octet-stream"}
            required.append(form.file)
        schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        self.body = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}

    def binary_body(self):
        self.body = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}

    # --- statuses and responses ---

    def errors(self, declared):
        """Error answers written "<status> <CODE>", as ops and the engine declare them."""
        add_errors(self.responses, [entry for entry in declared
                                    if not entry.startswith("5") or entry[:3] in SERVER_ANSWERS])

    def answers(self, declared):
        """Other statuses a step may answer with: each gets a plain entry unless its respond hook adds a fuller
        one (respond.bytes: the part a Range asked for, or nothing when the client's copy is current)."""
        for entry in declared:
            status, _, what = entry.partition(" ")
            self.responses.setdefault(status, {"description": what.replace("_", " ").lower()})

    def json_response(self, status, body, content_type=None):
        self._body(status, self.media_types(content_type), self.value_schema(body))

    def text_response(self, status, content_type):
        self._body(status, self.media_types(content_type), STRING)

    def _body(self, status, media_types, schema):
        for media_type in media_types:
            self.bodies.setdefault(str(status), {}).setdefault(media_type, []).append(schema)

    def media_types(self, content_type):
        """The media types a respond step's content type (media.ResponseType) may be: the one it names, or the
        values the variable it reads may take (http.negotiate's offers), those of a JSON type for a JSON answer and
        the others for a page (the usual split between respond.json and respond.render after a negotiation), all
        of them when that leaves none; any (*/*) when they are not known."""
        if content_type is None:
            return [JSON]
        if content_type.fixed is not None:
            return [content_type.fixed.essence]
        values = [value.lower() for value in self.value_schema(content_type.node).get("enum", ())
                  if isinstance(value, str)]
        split = [value for value in values if media.content_type(value).json == content_type.json]
        return split or values or ["*/*"]

    def bytes_response(self, status):
        self.responses.update(blob_answers(status))

    def redirect_response(self, status):
        self.responses[str(status)] = dict(json_answer({"type": "object", "required": ["location"], "properties": {
            "location": STRING}}, "redirect"), headers={"Location": {"schema": STRING}})

    def empty_response(self, status, headers):
        """An answer with no body: its headers (those a template names literally) are documented."""
        named = [name for name, _ in getattr(headers, "items", ())] if headers is not None else []
        self.responses[str(status)] = {"description": "no body",
                                       **({"headers": {name: {"schema": STRING} for name in named}} if named else {})}

    def error_response(self, status, code):
        self.errors(["%d %s" % (status, code)])

    # --- what templates render ---

    def value_schema(self, node):
        """The JSON Schema of what a compiled template renders, from what the pipeline bound before it."""
        if isinstance(node, expr.Const):
            return _const_schema(node.value)
        if isinstance(node, expr.DictNode):
            return {"type": "object", "required": [key for key, _ in node.items],
                    "properties": {key: self.value_schema(item) for key, item in node.items}}
        if isinstance(node, expr.ListNode):
            return {"type": "array"}
        if isinstance(node, expr.EachNode):
            return self.each_schema(node)
        if node.single is None:  # literal text and references, joined
            return {"type": "string"}
        return self.ref_schema(node.single)

    def each_schema(self, node):
        """A loop's list (or object, with a key) of what its emit renders, with $name read as an item."""
        items = _descend(self.value_schema(node.source), 0)
        outer = self.vars.get(node.name)
        self.vars[node.name] = items
        try:
            body = self.value_schema(node.body)
        finally:
            if outer is None:
                del self.vars[node.name]
            else:
                self.vars[node.name] = outer
        if node.key is None:
            return {"type": "array", "items": body}
        return {"type": "object", "additionalProperties": body}

    def ref_schema(self, ref):
        given = [d.gives for d in ref.filters if d.gives is not None]
        if given and ref.filters[-1].gives is not None:
            return given[-1]  # a data filter's value (keys, values, first, pick)
        if ref.slice is not None or ref.namespace == "request" or any(d.keeps_absent for d in ref.filters):
            return {"type": "string"}  # a substring, a URL, or what a text filter made
        known = {"var": self.vars, "field": self.fields, "principal": {"principal": PRINCIPAL}}.get(ref.namespace, {})
        schema = known.get(ref.root, {})
        for step in ref.path:
            schema = _descend(schema, step)
        if ref.filters:  # only defaults: the value, or their text when it is absent
            return schema if schema.get("type") == "string" else {}
        return nullable(schema) if ref.optional and schema else schema

    # --- the result ---

    def bind_outputs(self, step):
        for name, arg in step.decl.args.items():
            var = getattr(step.args, name, None) if isinstance(arg, Output) else None
            if var:
                self.vars[var] = arg.schema_for(step.args) or {}

    def to_dict(self):
        self.errors(ENGINE_ERRORS)
        access = Access(tuple(sorted(self.scopes)))
        if self.secured:
            self.errors(access.errors())
        if self.route.params:
            self.errors(["400 INVALID_PATH_PARAMETER"])
        if self.body:
            self.errors(BINARY_BODY)
        if any(step.decl.mutates for step in self.route.pipeline.steps):
            self.errors(["403 READ_ONLY"])
        for status, bodies in self.bodies.items():
            self.responses[status] = self._answer(self.responses.get(status), bodies)
        if self.route.error_body is not None:
            self._own_error_format(self.route.error_body.schema)
        operation = {"operationId": self.route.id, "summary": self.route.description or self.route.id,
                     "tags": list(self.route.tags) or ["default"],
                     "parameters": list(self.parameters.values()) + [REQUEST_ID],
                     "responses": {status: self.responses[status] for status in sorted(self.responses)}}
        description = []
        if self.body:
            operation["requestBody"] = self.body
        if self.header_patterns:
            operation["x-header-pattern"] = list(self.header_patterns.values())
            description += ["Headers %s: %s." % (p["pattern"], p["description"])
                            for p in self.header_patterns.values()]
        challenge = self.route.policy.challenge
        if challenge is not None and "401" in operation["responses"]:
            schema = {"const": challenge.text} if challenge.template is None else {"type": "string"}
            described = "the route's declared challenge" + ("" if challenge.template is None else
                                                             ", from the template " + challenge.text)
            operation["responses"]["401"] = dict(operation["responses"]["401"], headers={
                "WWW-Authenticate": {"description": described, "schema": schema}})
        if self.secured:
            operation["security"] = access.security()
            operation["x-required-scopes"] = sorted(self.scopes)
            description.insert(0, access.describe())
        if description:
            operation["description"] = " ".join(description)
        return operation


    def _own_error_format(self, schema):
        """Error answers in the route's error_body format; or Depot's envelope, for what is answered before the
        route is found (a URL no route matches after all, a body over the request limit)."""
        either = {"anyOf": [schema, ref("Error")]}
        for status, answer in self.responses.items():
            if "x-error-codes" in answer:
                self.responses[status] = dict(answer, content={JSON: {"schema": either}})

    @staticmethod
    def _answer(earlier, bodies):
        """The answer of the respond steps with one status (media type -> the schemas of their bodies); an error
        answered with it too stays one of its forms."""
        content = {media_type: list(schemas) for media_type, schemas in bodies.items()}
        if earlier is not None and JSON in earlier.get("content", {}):
            content[JSON] = [earlier["content"][JSON]["schema"]] + content.get(JSON, [])
        described = "the route's JSON answer" if list(content) == [JSON] else "the route's answer"
        answer = {"description": described, "content": {media_type: {"schema": _one_of(schemas)}
                                                        for media_type, schemas in content.items()}}
        if earlier is not None and earlier.get("x-error-codes"):
            answer.update({"x-error-codes": earlier["x-error-codes"],
                           "description": described + ", or an error: " + earlier["description"]})
        return answer


def _one_of(schemas):
    unique = [s for i, s in enumerate(schemas) if s not in schemas[:i]]
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


def _const_schema(value):
    if isinstance(value, dict):
        return {"type": "object", "required": list(value),
                "properties": {key: _const_schema(item) for key, item in value.items()}}
    types = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", type(None): "null"}
    return {"type": types[type(value)], "const": value}


def _descend(schema, step):
    """The schema of one part (a key, a list index) of a value with ``schema``; {} when it does not say."""
    branches = [b for b in schema.get("anyOf", ()) if b.get("type") != "null"]
    if len(branches) == 1:  # a value that may be null: a reference into it reads the value
        schema = branches[0]
    if isinstance(step, int):
        items = schema.get("items")
        return items if isinstance(items, dict) else {}
    if step in schema.get("properties", {}):
        return schema["properties"][step]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else {}


def route_operation(route):
    """A route's operation, worked out at schema load from the steps of its pipeline."""
    operation = Operation(route)
    for step in route.pipeline.steps:
        operation.errors(step.decl.errors)
        operation.errors(_filter_errors(step))
        operation.answers(step.decl.answers)
        operation.inputs(step.decl.inputs)
        if step.decl.openapi is not None:
            step.decl.openapi(operation, step.args)
        operation.bind_outputs(step)
    return operation.to_dict()


def _filter_errors(step):
    """What the filters in a step's templates may answer (a filter that cannot take its input: 400)."""
    nodes = [getattr(step.args, name, None) for name in step.decl.args]
    return [error for node in nodes if isinstance(node, expr.NODES) for ref in expr.every_ref(node)
            for decl in ref.filters for error in decl.errors]


def _disabled(route):
    """A route a feature switch turned off: it answers 404 with the switch's code, whatever is asked."""
    code, message = route.disabled
    return dict(route_operation(route), description="Disabled: %s." % message,
                responses=add_errors({}, ["404 " + code]))


_last_described = [None, {}]  # [the compiled schema, {(path, method): operation}]: worked out once per schema


def _route_operations(compiled):
    """Every route's operation, worked out the first time a schema is described, not on every request (a schema
    changes rarely; the last one described is kept)."""
    if _last_described[0] is not compiled:
        _last_described[:] = [compiled, {(route.template, route.method.lower()): route_operation(route)
                                         if route.disabled is None else _disabled(route)
                                         for route in compiled.routes}]
    return _last_described[1]


def document(compiled, app):
    """The document for ``app``'s own views and the routes of ``compiled``."""
    paths = view_paths(app)
    for (path, method), operation in _route_operations(compiled).items():
        paths.setdefault(path, {})[method] = operation  # shared with later documents: only ever serialized
    return {
        "openapi": "3.1.0",
        "info": {"title": compiled.doc.get("type_id", "Depot"), "version": compiled.sha256[:12],
                 "description": compiled.doc.get("description", ""), "x-schema-sha256": compiled.sha256},
        "paths": paths,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": SCHEMAS},
    }
