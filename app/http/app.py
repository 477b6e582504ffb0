"""Flask glue: the URL map of the compiled routes, a streaming request adapter, the error handlers.

This layer knows nothing of individual ops: it turns a request into RequestData, runs the matched route's
pipeline, and writes the ResponseSpec (app.http.responses: JSON, a blob streamed from disk with Range/ETag/HEAD,
or a redirect).
Every error, whatever raised it, leaves as the JSON envelope with an X-Request-Id.
"""
import functools
import logging
import re
import threading
import time

from flask import Flask, Response, g, request
from flask_swagger_ui import get_swaggerui_blueprint
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Rule

from app import metrics
from app.identity.audit import api_token_id
from app.identity.auth import require
from app.engine.body import RequestBody
from app.http.forwarding import base_url, trusted_proxies as proxies
from app.http.openapi_views import ViewDoc, document_rules, documented
from app.http.responses import error_response, json_response, write_response
from app.http.server import DROPPED_HEADERS_KEY, next_request_id
from app.engine.context import RequestData
from app.engine.shadowing import RULES_LOCK, url_map as build_url_map
from app.errors import DepotError, too_large
from app.http.openapi_components import ADMIN, json_answer, ref
from app.stores.digests import declared_digests

log = logging.getLogger("depot")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ROUTE_ENDPOINT = "depot_route"  # no ".": Flask would take "depot" for a blueprint
# and look up that blueprint's hooks on every request
READ_METHODS = ("GET", "HEAD")
REQUEST_ID_KEY = "depot.request_id"
_SYNC_MEMO = 1024
STARTED_KEY = "depot.started"  # when the request's handling began (perf_counter), for its latency metric
AUTHENTICATED_KEY = "authenticated"  # the RequestData attribute keeping its authentication's outcome
DOCS_PATH = "/docs"


class _lazy:
    """A per-instance computed attribute (functools.cached_property without its lock, which Python 3.11
    takes on every first access; a RequestData belongs to one request thread)."""

    def __init__(self, compute):
        self.compute = compute
        self.name = compute.__name__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


def _from_request(attribute):
    """A part read straight from the werkzeug request, which works it out once and caches it itself."""
    return property(lambda self: getattr(self._req, attribute))


class HttpRequestData(RequestData):
    """RequestData over the WSGI request: each part is worked out the first time an op reads it, so a route
    pays only for what its pipeline uses."""

    query = _from_request("args")
    content_length = _from_request("content_length")

    def __init__(self, req, params, limit, request_id, trusted_proxies):
        """``limit``: the most bytes a body may have; a request declaring a longer one is refused here, before its
        pipeline runs."""
        length = req.environ.get("CONTENT_LENGTH")
        if length and length.isdigit() and int(length) > limit:
            raise too_large("request body exceeds max_request_body_bytes (%d)" % limit)
        # not super().__init__: it would compute every part
        self._req = req
        self._limit = limit
        self._trusted_proxies = trusted_proxies
        self.method = req.method
        self.path_params = params
        self.request_id = request_id
        # what werkzeug holds as plain attributes is copied: reading it through a property costs two calls, and
        # every request with credentials reads the headers
        self.headers = req.headers
        self.remote_addr = req.remote_addr
        self.path = req.path

    @_lazy
    def stream(self):
        return RequestBody(self._req.stream, self._limit, self._req.content_length)

    @_lazy
    def dropped_headers(self):
        return self._req.environ.get(DROPPED_HEADERS_KEY, ())

    @_lazy
    def declared_digests(self):
        return declared_digests(self._req.headers, self._req.args)

    @_lazy
    def base_url(self):
        return base_url(self._req.environ, self._trusted_proxies)


class RouteRule(Rule):
    """A URL rule for one compiled route; it carries the engine that compiled it, so the request runs on the
    engine it was matched against even if the schema is swapped meanwhile."""

    def __init__(self, route, engine):
        super().__init__(route.rule, methods=[route.method], endpoint=ROUTE_ENDPOINT)
        self.route = route
        self.engine = engine


class DepotFlask(Flask):
    """Flask matching each request once, against one map holding Depot's own views and the active engine's
    compiled routes. The map is rebuilt when the service's engine changes."""

    def __init__(self, service, trusted_proxies):
        super().__init__("depot", static_folder=None)
        self.extensions["depot"] = service
        self.trusted_proxies = trusted_proxies  # whose X-Forwarded-* say what {request.base_url} is
        self._routing = (None, None)
        self._routing_lock = threading.Lock()
        self._sync = {}

    def ensure_sync(self, func):
        """Flask asks, for every hook and view of every request, whether it is a coroutine function: the answer
        for a given function never changes, so it is worked out once (for at most _SYNC_MEMO functions: a
        callback made per request would be a new one each time)."""
        known = self._sync.get(func)
        if known is None:
            if len(self._sync) >= _SYNC_MEMO:
                self._sync.clear()
            known = self._sync[func] = super().ensure_sync(func)
        return known

    def add_url_rule(self, *args, **kwargs):
        with RULES_LOCK:  # Flask binds the rule to its map at once (app.engine.shadowing.RULES_LOCK says why)
            super().add_url_rule(*args, **kwargs)

    def routing_map(self):
        engine = self.extensions["depot"].engine
        built_for, url_map = self._routing
        if built_for is not engine:
            with self._routing_lock:
                built_for, url_map = self._routing
                if built_for is not engine:  # not built by a thread that held the lock meanwhile
                    rules = [rule.empty() for rule in self.url_map.iter_rules()]
                    rules += [RouteRule(route, engine) for route in engine.compiled.routes]
                    url_map = build_url_map(rules, strict_slashes=False, redirect_defaults=False)
                    self._routing = (engine, url_map)
        return url_map

    def create_url_adapter(self, request):
        if request is None:
            return super().create_url_adapter(request)
        return self.routing_map().bind_to_environ(request.environ, server_name=self.config["SERVER_NAME"],
                                                  subdomain=self.url_map.default_subdomain or "")


def create_app(service, trusted_proxies=None):
    """The Flask app serving ``service``. ``trusted_proxies``: the addresses and networks (text, as
    DEPOT_TRUSTED_PROXIES takes them; None: that variable) whose X-Forwarded-* headers say what the request's
    external base URL is (app.http.forwarding); ValueError for an entry that is neither."""
    app = DepotFlask(service, proxies(trusted_proxies))
    app.config["MAX_CONTENT_LENGTH"] = None

    # the hooks keep what they share in the WSGI environ, each reading the request proxy once: every request
    # runs them, and each proxy or `g` access is a context-variable lookup
    @app.before_request
    def assign_request_id():
        environ = request.environ
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        g.request_id = environ[REQUEST_ID_KEY] = incoming if _REQUEST_ID.match(incoming) else next_request_id()
        environ[STARTED_KEY] = time.perf_counter()
        metrics.IN_FLIGHT.inc()

    @app.after_request
    def stamp_request_id(response):
        req = request._get_current_object()
        environ = req.environ
        response.headers["X-Request-Id"] = environ.get(REQUEST_ID_KEY) or next_request_id()
        started = environ.get(STARTED_KEY)
        if started is not None:
            route = _route_label(req)
            metrics.REQUESTS.labels(route, req.method, str(response.status_code)).inc()
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def leave(error=None):
        if request.environ.pop(STARTED_KEY, None) is not None:
            metrics.IN_FLIGHT.dec()

    @app.errorhandler(DepotError)
    def depot_error(error):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error):
        code = re.sub(r"[^A-Z]+", "_", (error.name or "error").upper()).strip("_")
        message = error.description or error.name
        headers = {}
        if isinstance(error, MethodNotAllowed):
            message = "%s is not allowed here" % request.method
            headers["Allow"] = ", ".join(error.valid_methods or [])
        elif isinstance(error, NotFound):
            message = "no route for %s %s" % (request.method, request.path)
        elif error.code == 413:
            code = "PAYLOAD_TOO_LARGE"
        return error_response(DepotError(code, error.code or 500, message, headers=headers))

    @app.errorhandler(Exception)
    def crash(error):
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return error_response(DepotError("INTERNAL_ERROR", 500, "internal error; quote request id %s"
                                         % g.get("request_id")))

    @app.get("/openapi.json")
    @documented("This document: the OpenAPI 3.1 description of every route served now",
                responses={200: {"type": "object", "required": ["openapi", "paths"]}})
    def openapi_document():
        from app.http import openapi
        return json_response(openapi.document(service.engine.compiled, app))

    add_docs_ui(app)

    @app.get("/metrics")
    @documented("The server's metrics in the Prometheus text format (admins; `serve --metrics-address` also serves "
                "them on an address of their own)", access=ADMIN, answers={200: {
                    "description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics_view():
        principal = service.principal(request)
        require(principal, {"admin"}, "the metrics")
        return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)

    @app.get("/health")
    @documented("The state of each store (an admin's token adds where each lives)",
                responses={200: ref("Health")}, answers={503: json_answer(ref("Health"), "a store is not healthy")})
    def health():
        stores = service.engine.health(detail=_is_admin(service, request))
        ok = all(s.get("ok") for s in stores.values())
        return json_response({"ok": ok, "stores": stores, "schema_sha256": service.engine.compiled.sha256,
                              "read_only": service.read_only}, 200 if ok else 503)

    # a write's audit may ask who called after its pipeline did: its outcome is kept on the request (a read is
    # not audited, and its pipeline's context asks once)
    authenticate_write = functools.partial(principal_once, service)
    authenticate_read = service.principal

    def run_route(**params):
        req = request._get_current_object()  # one context-local lookup instead of one per attribute
        rule = req.url_rule
        engine = rule.engine
        data = HttpRequestData(req, params, engine.limits.max_request_body_bytes, req.environ[REQUEST_ID_KEY],
                               app.trusted_proxies)
        reading = rule.route.method in READ_METHODS
        try:
            ctx = engine.run(rule.route, data, authenticate_read if reading else authenticate_write)
        except DepotError as error:
            if not reading:
                _audit_route(service, rule.route, data, None, error.status)
            raise
        try:
            response = write_response(ctx.response, ctx.close if ctx.cleanups else None)
        except BaseException:
            ctx.close()
            raise
        if not reading:
            _audit_route(service, rule.route, data, ctx, response.status_code)
        return response

    app.view_functions[ROUTE_ENDPOINT] = run_route
    from app.http.management import create_blueprint
    app.register_blueprint(create_blueprint(service))
    return app


def add_docs_ui(app):
    """/docs: Swagger UI over /openapi.json, every asset served from the flask-swagger-ui package (nothing
    fetched from elsewhere: no validator badge, which would ask a remote validator about the document)."""
    blueprint = get_swaggerui_blueprint(DOCS_PATH, "/openapi.json", blueprint_name="depot_docs", config={
        "app_name": "Depot API", "validatorUrl": None, "deepLinking": True, "displayRequestDuration": True,
        "oauth2RedirectUrl": DOCS_PATH + "/oauth2-redirect.html"})
    app.register_blueprint(blueprint)
    app.add_url_rule(DOCS_PATH, "depot_docs.show")  # the page at /docs itself, not a redirect to /docs/
    page = ViewDoc("The interactive API documentation (Swagger UI)", operation_id="depot.docs", answers={
        200: {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}})
    asset = ViewDoc("A static asset of the documentation page (script, style, icon)", operation_id="depot.docs_asset",
                    errors=("404 NOT_FOUND",), answers={
                        200: {"description": "the asset", "content": {"*/*": {"schema": {"type": "string"}}}}})
    document_rules(app.view_functions["depot_docs.show"], {DOCS_PATH: page, DOCS_PATH + "/": page,
                                                           DOCS_PATH + "/<path:path>": asset})


def _route_label(req):
    """What a request's metrics are labelled with: its schema route's id, Depot's own view, or `unmatched`."""
    rule = req.url_rule
    route = getattr(rule, "route", None)
    if route is not None:
        return route.id
    return req.endpoint or "unmatched"


def _is_admin(service, req):
    """Whether the request carries valid admin credentials (a bad or missing token is simply not an admin)."""
    try:
        principal = service.principal(req)
    except DepotError:
        return False
    return principal is not None and "admin" in principal["scopes"]


def principal_once(service, data):
    """The request's principal, worked out once however often it is asked for (by the pipeline, then by the audit
    of a failed write): a password sent as Basic credentials is a login attempt, to be counted and audited once."""
    outcome = getattr(data, AUTHENTICATED_KEY, None)
    if outcome is None:
        try:
            outcome = (service.principal(data), None)
        except DepotError as error:
            outcome = (None, error)
        setattr(data, AUTHENTICATED_KEY, outcome)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def _audit_route(service, route, data, ctx, status):
    """Writes through the schema's routes (publish, tag changes, deletes) are audited with their outcome."""
    try:  # a failed request may have failed before its pipeline asked who is calling: ask now
        principal = ctx.principal if ctx is not None else principal_once(service, data)
    except DepotError:
        principal = None
    actor = principal["sub"] if principal else "anonymous"
    outcome = "success" if status < 400 else "failure"
    service.audit.record_later(actor, "route." + route.id, data.path, outcome,
                         {"ip": data.remote_addr, "user_agent": data.headers.get("User-Agent"),
                          "request_id": data.request_id, "token_id": api_token_id(principal)}, {"status": status})
