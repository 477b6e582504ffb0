"""An OpenAPI 3.1 document generated from the compiled routes.

Each step contributes what its op declares (`openapi=` in operations.py): path parameters with the entity's
patterns, query and header parameters, request bodies from validate.json_schema, responses from respond.*,
security from scopes. Depot's own endpoints (/health, /auth/login) are added from a small static table.
"""
import html

ERROR_REF = {"$ref": "#/components/schemas/Error"}
_QUERY_TYPES = {"integer": "integer", "boolean": "boolean", "string": "string"}
SERVER_ANSWERS = ("502", "503")  # the 5xx a route may give on purpose: an upstream failed, a request limit hit
ENGINE_ERRORS = ["503 CPU_LIMIT_EXCEEDED", "503 IO_LIMIT_EXCEEDED"]  # any route, whatever its steps


class Operation:
    """The OpenAPI operation of one route, as its steps describe it."""

    def __init__(self, route):
        self.route = route
        self.parameters = {}
        self.body = None
        self.json_vars = set()
        self.responses = {}
        self.scopes = set(route.policy_scopes)
        self.secured = bool(route.policy_scopes) or route.denied

    # --- hooks the op declarations call ---

    def require(self, scopes):
        self.secured = True
        self.scopes |= set(scopes)

    def path_params(self, entity):
        for name in self.route.params:
            schema = {"type": "string"}
            for constraint in getattr(entity, "constraints", ()):
                if constraint.field == name and constraint.pattern:
                    schema["pattern"] = constraint.pattern
            self.parameters[("path", name)] = {"name": name, "in": "path", "required": True, "schema": schema}

    def query_params(self, fields):
        for name, spec in (fields or {}).items():
            schema = {"type": _QUERY_TYPES.get(spec.get("type", "string"), "string")}
            for key in ("default", "minimum", "maximum"):
                if key in spec:
                    schema[key] = spec[key]
            self.parameters[("query", name)] = {"name": name, "in": "query", "required": bool(spec.get("required")),
                                                "schema": schema}

    def header_params(self, fields, prefixes):
        for header in (fields or {}).values():
            self.parameters[("header", header)] = {"name": header, "in": "header", "required": False,
                                                   "schema": {"type": "string"}}
        for var, prefix in (prefixes or {}).items():
            self.parameters[("header", prefix + "*")] = {
                "name": prefix + "{key}", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "any number of headers named %s<key>, collected into %s" % (prefix, var)}

    def json_body(self, out):
        self.json_vars.add(out)
        self.body = self.body or {"required": True, "content": {"application/json": {"schema": {}}}}

    def body_schema(self, value, validator):
        single = getattr(value, "single", None)
        if single is not None and single.namespace == "var" and single.root in self.json_vars and not single.path:
            self.body = {"required": True, "content": {"application/json": {"schema": validator.schema}}}

    def binary_body(self):
        self.body = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}

    def errors(self, declared):
        """Error answers written "<status> <CODE>", as ops and the engine declare them."""
        for entry in declared:
            status, _, code = entry.partition(" ")
            if not status.startswith("5") or status in SERVER_ANSWERS:  # other 5xx are bugs, not answers
                self.response(int(status), "error", code)

    def response(self, status, kind, code=None):
        key = str(status)
        if kind == "error":
            entry = self.responses.setdefault(key, {"description": "", "content": {
                "application/json": {"schema": ERROR_REF}}})
            if code not in entry["description"].split(", "):
                entry["description"] = ", ".join(filter(None, [entry["description"], code]))
        elif kind == "json":
            self.responses[key] = {"description": "JSON", "content": {"application/json": {"schema": {}}}}
        elif kind == "bytes":
            self.responses[key] = {"description": "the bytes, streamed (Range, ETag, If-None-Match honoured)",
                                   "content": {"application/octet-stream": {
                                       "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
        else:
            self.responses[key] = {"description": "redirect", "headers": {"Location": {"schema": {"type": "string"}}}}

    # --- the result ---

    def to_dict(self):
        self.errors(ENGINE_ERRORS)
        if self.secured:
            self.errors(["401 UNAUTHENTICATED", "401 INVALID_TOKEN", "401 TOKEN_EXPIRED", "401 TOKEN_REVOKED",
                         "403 FORBIDDEN"])
        if self.route.params:
            self.errors(["400 INVALID_PATH_PARAMETER"])
        if self.body:
            self.errors(["400 BODY_INCOMPLETE", "413 PAYLOAD_TOO_LARGE"])
        if any(step.decl.mutates for step in self.route.pipeline.steps):
            self.errors(["403 READ_ONLY"])
        responses = {status: self.responses[status] for status in sorted(self.responses)}
        operation = {"operationId": self.route.id, "summary": self.route.description or self.route.id,
                     "tags": list(self.route.tags) or ["default"], "parameters": list(self.parameters.values()),
                     "responses": responses}
        if self.body:
            operation["requestBody"] = self.body
        if self.secured:
            operation["security"] = [{"bearer": []}]
            operation["x-required-scopes"] = sorted(self.scopes)
            operation["description"] = "Requires scope(s): %s (admin implies all)." % (
                ", ".join(sorted(self.scopes)) or "none beyond a valid token")
        return operation


def route_operation(route):
    operation = Operation(route)
    for step in route.pipeline.steps:
        operation.errors(step.decl.errors)
        if step.decl.openapi is not None:
            step.decl.openapi(operation, step.args)
    return operation.to_dict()


def _error_responses(*declared):
    responses = {}
    for entry in declared:
        status, _, code = entry.partition(" ")
        described = responses.setdefault(status, {"description": "", "content": {
            "application/json": {"schema": ERROR_REF}}})
        described["description"] = ", ".join(filter(None, [described["description"], code]))
    return responses


_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_OWN = {
    "/health": {"get": {"operationId": "health", "summary": "The state of each store", "tags": ["depot"],
                        "responses": {"200": {"description": "every store is healthy", "content": _JSON_OBJECT},
                                      "503": {"description": "a store is not healthy", "content": _JSON_OBJECT}}}},
    "/auth/login": {"post": {
        "operationId": "login", "summary": "Exchange a username and password for a token", "tags": ["depot"],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}}}},
        "responses": dict({"200": {"description": "the token", "content": {"application/json": {"schema": {
            "type": "object", "required": ["token", "token_type", "expires_at"]}}}}},
            **_error_responses("400 INVALID_JSON", "400 INVALID_CREDENTIALS_FORMAT", "400 BODY_INCOMPLETE",
                               "401 INVALID_CREDENTIALS", "413 JSON_TOO_LARGE", "413 PAYLOAD_TOO_LARGE",
                               "429 RATE_LIMITED"))}},
}


def document(compiled):
    paths = {path: dict(ops) for path, ops in _OWN.items()}
    for route in compiled.routes:
        if route.disabled is None:
            paths.setdefault(route.path, {})[route.method.lower()] = route_operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": compiled.doc.get("type_id", "Depot"), "version": compiled.sha256[:12],
                 "description": compiled.doc.get("description", ""), "x-schema-sha256": compiled.sha256},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a login JWT or an API token (dpt_...)"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "field": {"type": "string"}, "details": {"type": "array"}}}}}}},
    }


def html_page(spec):
    """A self-contained page listing the operations: no script, nothing fetched from elsewhere."""
    rows = []
    for path, operations in sorted(spec["paths"].items()):
        for method, op in operations.items():
            params = ", ".join("%s (%s)" % (p["name"], p["in"]) for p in op.get("parameters", []))
            rows.append("<tr><td><code>%s</code></td><td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td>"
                        "</tr>" % (method.upper(), html.escape(path), html.escape(op.get("summary", "")),
                                   html.escape(params), html.escape(", ".join(sorted(op["responses"])))))
    title = html.escape(spec["info"]["title"])
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>%s API</title><style>body{font-family:sans-"
            "serif;margin:2em}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}</style></head>"
            "<body><h1>%s API</h1><p>OpenAPI 3.1 document: <a href=\"/openapi.json\">/openapi.json</a></p>"
            "<table><tr><th>method</th><th>path</th><th>summary</th><th>parameters</th><th>responses</th></tr>%s"
            "</table></body></html>" % (title, title, "".join(rows)))

