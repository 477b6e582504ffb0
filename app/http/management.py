"""Depot's own HTTP API, beside the schema's routes: /auth (login, tokens) and /admin (users, schema, audit).

These views manage the server rather than the repository, so they are written here rather than declared in
the schema. Every admin action, login, token change and denied attempt is audited.
"""
import copy
import functools
import json

from flask import Blueprint, current_app, g, request

from app.repository import replication
from app.identity.audit import api_token_id
from app.identity.auth import DEFAULT_TTL, account_state, credentials_required
from app.engine.body import RequestBody, parse_json, read_all
from app.engine.context import ResponseSpec
from app.engine.definitions import PAGE_QUERY, query_value
from app.errors import DepotError, bad_request, not_found
from app.http.responses import json_response, write_response
from app.http.openapi_components import (BLOB_ANSWER_ERRORS, BLOB_INPUTS, DIGEST, LOGIN_SESSION, SIGNED_IN, Access,
                                    blob_answers, ref)
from app.http.openapi_views import documented
from app.repository.schema_store import version_view

MAX_BODY = 10 * 1024 * 1024
MAX_GRACE_SECONDS = 100 * 365 * 86400
# what several views answer, for their @documented
TOKEN_REQUEST_ERRORS = ("400 INVALID_TOKEN_REQUEST", "400 UNKNOWN_SCOPE", "403 SCOPE_NOT_HELD",
                        "404 USER_NOT_FOUND")
USER_CHANGE_ERRORS = ("400 INVALID_REQUEST", "400 WEAK_PASSWORD", "400 UNKNOWN_SCOPE")
SCHEMA_CHANGE = {"responses": {201: ref("AppliedSchema"), 200: ref("AppliedSchema")}, "errors": ("422 SCHEMA_INVALID",),
                 "description": "The new schema is checked as `python -m app check` does, stored as a new version "
                                "and served at once; with errors, 422 and nothing changes."}


def client():
    """Where the request came from and, when an API token made it, which one: every audit record carries them."""
    return {"ip": request.remote_addr, "user_agent": request.headers.get("User-Agent"),
            "request_id": g.get("request_id"), "token_id": api_token_id(g.get("principal"))}


def request_body(limit):
    return RequestBody(request.stream, limit, request.content_length)


def json_body(limit=MAX_BODY, allowed=None, empty=None):
    """The request's JSON object, however the body is framed. ``allowed``: the only keys it may have (400
    naming the first other); ``empty``: what an empty body means (None: it is refused)."""
    raw = read_all(request_body(current_app.extensions["depot"].engine.limits.max_request_body_bytes), limit)
    if not raw.strip() and empty is not None:
        return empty
    body = parse_json(raw or b"null")
    if not isinstance(body, dict):
        raise bad_request("INVALID_JSON", "expected a JSON object")
    unknown = sorted(set(body) - set(allowed)) if allowed is not None else []
    if unknown:
        raise bad_request("INVALID_REQUEST", "unknown field %r; expected: %s" % (unknown[0], ", ".join(allowed)),
                          unknown[0])
    return body


def page_args():
    """?page= (from 1) and ?page_size= (1 to 200, default 50), read as the schema's list routes read them: 400
    INVALID_QUERY naming the parameter. Returns (page, page_size, offset)."""
    page, size = (query_value(request.args.get(name), name, spec) for name, spec in PAGE_QUERY.items())
    return page, size, (page - 1) * size


def int_arg(name, default, minimum):
    """?name= as an integer of at least ``minimum``; ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise bad_request("INVALID_QUERY", "%s is an integer of at least %d" % (name, minimum), name)
    return value


def paginated(items, total, page, size):
    return {"items": items, "total": total, "page": page, "page_size": size}


def page_of(lister, *args):
    """The list envelope of the page ?page= and ?page_size= ask for: ``lister(offset, limit, *args)`` gives
    (items, total)."""
    page, size, offset = page_args()
    items, total = lister(offset, size, *args)
    return json_response(paginated(items, total, page, size))


def token_page(identity, owner):
    """A page of ``owner``'s API tokens, in the envelope every list answers."""
    page, size, offset = page_args()
    tokens, total = identity.list_tokens(owner, offset, size)
    return paginated(tokens, total, page, size)


def issue_api_token(service, owner, principal):
    """A new API token for ``owner``, asked for by ``principal`` (one's own tokens hold at most one's scopes)."""
    body = json_body(65536)
    caller_scopes = principal["scopes"] if principal["sub"] == owner else None
    try:
        view, secret = service.identity.create_token(owner, body.get("name"), body.get("scopes"),
                                                     body.get("expires_in", DEFAULT_TTL), caller_scopes)
    except DepotError as error:
        service.audit.record(principal["sub"], "token.create", owner, "failure", client(), {"code": error.code})
        raise
    service.audit.record(principal["sub"], "token.create", "%s/%s" % (owner, view["id"]), "success", client(),
                         {"name": view["name"], "scopes": view["scopes"], "expires_at": view["expires_at"]})
    return json_response(dict(view, token=secret), 201)


def string_fields(body, *names, code="INVALID_REQUEST"):
    """The named fields of a JSON body, each of which must be a string when present (400 naming it if not)."""
    for name in names:
        if name in body and not isinstance(body[name], str):
            raise bad_request(code, "%s is a string" % name, name)
    return [body.get(name) for name in names]


class Guard:
    """Who may call Depot's own endpoints, and the audit trail of what admins did."""

    def __init__(self, service):
        self.service = service

    def principal_or_401(self):
        principal = self.service.principal(request)
        if principal is None or principal["kind"] == "anonymous":
            raise credentials_required()
        g.principal = principal  # what the audit records name (client())
        return principal

    def login_session(self, principal, action):
        """API tokens are managed only from a login session (the owner's, or an admin's): a token that could
        make or revoke tokens would let a leaked, short-lived or read-only token outlive and outrank itself."""
        if principal["kind"] != "jwt":
            self.service.audit.record(principal["sub"], action, request.path, "denied", client(),
                                      {"code": "LOGIN_SESSION_REQUIRED"})
            raise DepotError("LOGIN_SESSION_REQUIRED", 403, "API tokens are managed from a login session "
                             "(POST /auth/login), not with an API token")
        return principal

    def admin_action(self, action, login_session=False):
        """An admin view: needs the admin scope (a refusal is audited as denied) and, with ``login_session``, a
        login token; audited with its outcome. The view returns (response, target) or (response, target, detail):
        what changed, for the audit record."""
        audit = self.service.audit

        def wrap(view):  # run.openapi_access: who may call it, for @documented
            @functools.wraps(view)
            def run(*args, **kwargs):
                principal = self.principal_or_401()
                if "admin" not in principal["scopes"]:
                    audit.record(principal["sub"], action, request.path, "denied", client())
                    raise DepotError("FORBIDDEN", 403, "this needs the admin scope")
                if login_session:
                    self.login_session(principal, action)
                try:
                    response, target, *detail = view(*args, **kwargs)
                except DepotError as error:
                    audit.record(principal["sub"], action, request.path, "failure", client(),
                                 {"code": error.code, "status": error.status})
                    raise
                if request.method not in ("GET", "HEAD"):
                    audit.record(principal["sub"], action, target, "success", client(), *detail)
                return response
            run.openapi_access = Access(("admin",), login_session)
            return run
        return wrap


def create_blueprint(service):
    bp = Blueprint("depot_management", __name__)
    guard = Guard(service)
    for register in (_auth_views, _user_views, _access_views, _schema_views, _maintenance_views,
                     _replication_views):
        register(bp, service, guard)
    return bp


def _auth_views(bp, service, guard):
    """/auth: login, the caller's account, password, logout and API tokens."""
    identity, audit, principal_or_401 = service.identity, service.audit, guard.principal_or_401

    @bp.post("/auth/login")
    @documented("Exchange a username and password for a login token", body=ref("Credentials"),
                responses={200: ref("LoginToken")}, errors=("400 INVALID_CREDENTIALS_FORMAT",
                                                            "401 INVALID_CREDENTIALS", "429 RATE_LIMITED"))
    def login():
        username, password = string_fields(json_body(65536), "username", "password",
                                           code="INVALID_CREDENTIALS_FORMAT")
        if username is None or password is None:
            raise bad_request("INVALID_CREDENTIALS_FORMAT", "username and password are required strings",
                              "username" if username is None else "password")
        service.limit_login(username, client())
        try:
            token, expires = identity.login(username, password)
        except DepotError:
            audit.record(username, "auth.login", username, "failure", client())
            raise
        audit.record(username, "auth.login", username, "success", client())
        return json_response({"token": token, "token_type": "Bearer",
                              "expires_at": expires.isoformat().replace("+00:00", "Z")})

    @bp.get("/auth/me")
    @documented("The caller's account, with the scopes this request holds", access=SIGNED_IN,
                responses={200: ref("Me")}, errors=("404 USER_NOT_FOUND",))
    def me():
        principal = principal_or_401()
        view = identity.get_user(principal["sub"])
        view.update(scopes=sorted(principal["scopes"]), auth=principal["kind"])
        return json_response(view)

    @bp.post("/auth/change-password")
    @documented("Change the caller's password: earlier login tokens end and every API token is revoked",
                access=SIGNED_IN, body=ref("PasswordChange"), responses={200: ref("Ok")},
                errors=("400 INVALID_REQUEST", "400 WEAK_PASSWORD", "401 INVALID_CREDENTIALS"))
    def change_password():
        principal = principal_or_401()
        body = json_body(65536)
        try:
            current, new = string_fields(body, "current_password", "new_password")
            identity.change_password(principal["sub"], current, new)
        except DepotError:
            audit.record(principal["sub"], "auth.change_password", principal["sub"], "failure", client())
            raise
        audit.record(principal["sub"], "auth.change_password", principal["sub"], "success", client())
        return json_response({"ok": True, "message": "password changed; earlier login tokens no longer work and "
                              "every API token is revoked"})

    @bp.post("/auth/logout")
    @documented("End the credential this request carries (a login token, or an API token: revoked)",
                access=SIGNED_IN, responses={200: ref("Ok")})
    def logout():
        principal = principal_or_401()
        identity.logout(principal)
        audit.record(principal["sub"], "auth.logout", principal["token_id"], "success", client())
        return json_response({"ok": True})

    @bp.post("/auth/tokens")
    @documented("Make an API token for the caller (its secret is shown once)", access=LOGIN_SESSION,
                body=ref("TokenRequest"), responses={201: ref("IssuedToken")}, errors=TOKEN_REQUEST_ERRORS)
    def create_token():
        principal = guard.login_session(principal_or_401(), "token.create")
        return issue_api_token(service, principal["sub"], principal)

    @bp.get("/auth/tokens")
    @documented("The caller's API tokens", access=LOGIN_SESSION, responses={200: ref("TokenList")},
                errors=("404 USER_NOT_FOUND",))
    def list_tokens():
        principal = guard.login_session(principal_or_401(), "token.list")
        return json_response(token_page(identity, principal["sub"]))

    @bp.delete("/auth/tokens/<token_id>")
    @documented("Revoke one of the caller's API tokens", access=LOGIN_SESSION, responses={200: ref("Token")},
                errors=("404 USER_NOT_FOUND", "404 TOKEN_NOT_FOUND"))
    def revoke_token(token_id):
        principal = guard.login_session(principal_or_401(), "token.revoke")
        view = identity.revoke_token(principal["sub"], token_id)
        audit.record(principal["sub"], "token.revoke", "%s/%s" % (principal["sub"], token_id), "success", client())
        return json_response(view)


def _user_views(bp, service, guard):
    """/admin/users: accounts and their API tokens."""
    identity, admin_action = service.identity, guard.admin_action

    @bp.get("/admin/users")
    @documented("A page of accounts", paged=True, responses={200: ref("UserPage")})
    @admin_action("admin.users.list")
    def list_users():
        return page_of(identity.list_users), None

    @bp.post("/admin/users")
    @documented("Create an account", body=ref("NewUser"), responses={201: ref("User")},
                errors=USER_CHANGE_ERRORS + ("400 INVALID_USERNAME", "409 USER_EXISTS"))
    @admin_action("admin.users.create")
    def create_user():
        body = json_body(65536)
        username, password = string_fields(body, "username", "password")
        view = identity.create_user(username, password, body.get("scopes", ["read"]), body.get("status", "active"))
        return json_response(view, 201), view["username"], {"after": account_state(view)}

    @bp.get("/admin/users/<username>")
    @documented("One account", responses={200: ref("User")}, errors=("404 USER_NOT_FOUND",))
    @admin_action("admin.users.get")
    def get_user(username):
        return json_response(identity.get_user(username)), username

    @bp.patch("/admin/users/<username>")
    @documented("Change an account's scopes, status or password (never leaving no active admin)",
                body=ref("UserChange"), responses={200: ref("User")},
                errors=USER_CHANGE_ERRORS + ("404 USER_NOT_FOUND", "409 LAST_ADMIN"))
    @admin_action("admin.users.update")
    def update_user(username):
        body = json_body(65536)
        unknown = set(body) - {"scopes", "status", "password"}
        if unknown:
            raise bad_request("INVALID_REQUEST", "unknown field(s): %s" % ", ".join(sorted(unknown)))
        for name in body:
            if body[name] is None:
                raise bad_request("INVALID_REQUEST", "%s cannot be null; leave it out to keep it" % name, name)
        view, changes = identity.update_user(username, body.get("scopes"), body.get("status"), body.get("password"))
        return json_response(view), view["username"], changes

    @bp.delete("/admin/users/<username>")
    @documented("Delete an account and its API tokens (its audit records stay)", responses={200: ref("DeletedUser")},
                errors=("404 USER_NOT_FOUND", "409 LAST_ADMIN"))
    @admin_action("admin.users.delete")
    def delete_user(username):
        view = identity.delete_user(username, service.access.forget_user)
        return json_response(dict(view, deleted=True)), view["username"], {"before": account_state(view)}

    @bp.get("/admin/users/<username>/tokens")
    @documented("An account's API tokens", responses={200: ref("TokenList")}, errors=("404 USER_NOT_FOUND",))
    @admin_action("admin.tokens.list", login_session=True)
    def user_tokens(username):
        return json_response(token_page(identity, username)), username

    @bp.post("/admin/users/<username>/tokens")
    @documented("Make an API token for an account (its secret is shown once)", body=ref("TokenRequest"),
                responses={201: ref("IssuedToken")}, errors=TOKEN_REQUEST_ERRORS)
    @admin_action("admin.tokens.create", login_session=True)
    def create_user_token(username):
        return issue_api_token(service, username, g.principal), username

    @bp.delete("/admin/users/<username>/tokens/<token_id>")
    @documented("Revoke an account's API token", responses={200: ref("Token")},
                errors=("404 USER_NOT_FOUND", "404 TOKEN_NOT_FOUND"))
    @admin_action("admin.tokens.revoke", login_session=True)
    def revoke_user_token(username, token_id):
        return json_response(identity.revoke_token(username, token_id)), "%s/%s" % (username, token_id)


def _access_views(bp, service, guard):
    """/admin/grants and /admin/groups: namespace permissions (app/identity/access.py)."""
    access, admin_action = service.access, guard.admin_action

    @bp.get("/admin/grants")
    @documented("A page of namespace grants (?subject=user:NAME, group:NAME or anonymous narrows it)", paged=True,
                responses={200: ref("GrantPage")}, errors=("400 INVALID_REQUEST", "404 USER_NOT_FOUND",
                                                           "404 GROUP_NOT_FOUND"))
    @admin_action("admin.grants.list")
    def list_grants():
        return page_of(access.list_grants, request.args.get("subject")), None

    @bp.post("/admin/grants")
    @documented("Grant a permission on the namespaces a pattern matches (replacing the subject's grant on that "
                "pattern: 200)", body=ref("GrantRequest"), responses={201: ref("Grant"), 200: ref("Grant")},
                errors=("400 INVALID_REQUEST", "404 USER_NOT_FOUND", "404 GROUP_NOT_FOUND"))
    @admin_action("admin.grants.create")
    def create_grant():
        body = json_body(65536, allowed=("subject", "namespace", "permission"))
        subject, pattern, permission = string_fields(body, "subject", "namespace", "permission")
        for name, value in (("subject", subject), ("namespace", pattern), ("permission", permission)):
            if value is None:
                raise bad_request("INVALID_REQUEST", "%s is required" % name, name)
        view, created = access.grant(subject, pattern, permission, g.principal["sub"])
        return json_response(view, 201 if created else 200), _grant_target(view)

    @bp.delete("/admin/grants/<int(max=2147483647):grant_id>")  # larger: no such grant
    @documented("Remove a grant", responses={200: ref("DeletedGrant")}, errors=("404 GRANT_NOT_FOUND",))
    @admin_action("admin.grants.delete")
    def delete_grant(grant_id):
        view = access.revoke(grant_id)
        return json_response(dict(view, deleted=True)), _grant_target(view)

    @bp.get("/admin/groups")
    @documented("A page of groups with their members", paged=True, responses={200: ref("GroupPage")})
    @admin_action("admin.groups.list")
    def list_groups():
        return page_of(access.list_groups), None

    @bp.post("/admin/groups")
    @documented("Create a group", body=ref("NewGroup"), responses={201: ref("Group")},
                errors=("400 INVALID_REQUEST", "409 GROUP_EXISTS"))
    @admin_action("admin.groups.create")
    def create_group():
        name, = string_fields(json_body(65536, allowed=("name",)), "name")
        view = access.create_group(name)
        return json_response(view, 201), "group:%s" % view["name"]

    @bp.get("/admin/groups/<name>")
    @documented("One group with its members", responses={200: ref("Group")}, errors=("404 GROUP_NOT_FOUND",))
    @admin_action("admin.groups.get")
    def get_group(name):
        return json_response(access.get_group(name)), None

    @bp.delete("/admin/groups/<name>")
    @documented("Delete a group with its memberships and grants", responses={200: ref("DeletedGroup")},
                errors=("404 GROUP_NOT_FOUND",))
    @admin_action("admin.groups.delete")
    def delete_group(name):
        view = access.delete_group(name)
        return json_response(dict(view, deleted=True)), "group:%s" % name

    @bp.put("/admin/groups/<name>/members/<username>")
    @documented("Add a user to a group", responses={200: ref("Group")},
                errors=("404 GROUP_NOT_FOUND", "404 USER_NOT_FOUND"))
    @admin_action("admin.groups.add_member")
    def add_member(name, username):
        view, _ = access.set_member(name, username, True)
        return json_response(view), "group:%s member %s" % (name, username)

    @bp.delete("/admin/groups/<name>/members/<username>")
    @documented("Take a user out of a group", responses={200: ref("Group")},
                errors=("404 GROUP_NOT_FOUND", "404 USER_NOT_FOUND", "404 MEMBER_NOT_FOUND"))
    @admin_action("admin.groups.remove_member")
    def remove_member(name, username):
        view, changed = access.set_member(name, username, False)
        if not changed:
            raise DepotError("MEMBER_NOT_FOUND", 404, "%s is not a member of group %s" % (username, name),
                             "username")
        return json_response(view), "group:%s member %s" % (name, username)


def _grant_target(view):
    return "%s on %s (%s)" % (view["subject"], view["namespace"], view["permission"])


def _schema_views(bp, service, guard):
    """/admin/schema and /admin/routes: the active schema, its versions, changes to it."""
    admin_action = guard.admin_action

    @bp.get("/admin/schema")
    @documented("The active schema version and its document", responses={200: ref("SchemaVersionWithDocument")})
    @admin_action("admin.schema.get")
    def get_schema():
        return json_response(version_view(service.schemas.active(), with_document=True)), None

    @bp.get("/admin/schema/versions")
    @documented("A page of schema versions, newest first", paged=True, responses={200: ref("SchemaVersionPage")})
    @admin_action("admin.schema.versions")
    def schema_versions():
        page, size, offset = page_args()
        rows, total = service.schemas.list(offset, size)
        return json_response(paginated([version_view(r) for r in rows], total, page, size)), None

    @bp.get("/admin/schema/versions/<int(max=2147483647):version>")  # larger: no such version
    @documented("One schema version and its document", responses={200: ref("SchemaVersionWithDocument")},
                errors=("404 SCHEMA_VERSION_NOT_FOUND",))
    @admin_action("admin.schema.version")
    def schema_version(version):
        return json_response(version_view(service.schemas.get(version), with_document=True)), None

    def _apply(doc, comment):
        """201 and the new version; the schema already served is no new version: 200 and "unchanged": true."""
        row, report, created = service.apply_schema(doc, g.principal["sub"], comment)
        body = dict(version_view(row), unchanged=not created, warnings=report.to_dict()["warnings"])
        target = "schema version %d%s" % (row.version, "" if created else " (unchanged)")
        return json_response(body, 201 if created else 200), target

    @bp.post("/admin/schema")
    @documented("Replace the schema", body=ref("SchemaDocument"), query={"comment": {"type": "string"}},
                **SCHEMA_CHANGE)
    @admin_action("admin.schema.update")
    def update_schema():
        doc = json_body()
        return _apply(doc, request.args.get("comment", "uploaded"))

    @bp.post("/admin/schema/rollback")
    @documented("Serve an earlier schema version again (stored as a new version)", body=ref("Rollback"),
                **dict(SCHEMA_CHANGE, errors=("400 INVALID_REQUEST", "404 SCHEMA_VERSION_NOT_FOUND",
                                              "422 SCHEMA_INVALID")))
    @admin_action("admin.schema.rollback")
    def rollback_schema():
        version = json_body(65536).get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise bad_request("INVALID_REQUEST", "version is an integer", "version")
        doc = json.loads(service.schemas.get(version).document)
        return _apply(doc, "rollback to version %d" % version)

    @bp.post("/admin/routes")
    @documented("Add a route to the schema", body=ref("Route"), **SCHEMA_CHANGE)
    @admin_action("admin.routes.add")
    def add_route():
        route = json_body()
        doc = copy.deepcopy(service.active_document())
        doc["api"]["routes"].append(route)
        return _apply(doc, "added route %s" % route.get("id"))

    @bp.delete("/admin/routes/<route_id>")
    @documented("Remove a route from the schema", **dict(SCHEMA_CHANGE, errors=("404 ROUTE_NOT_FOUND",
                                                                              "422 SCHEMA_INVALID")))
    @admin_action("admin.routes.delete")
    def delete_route(route_id):
        doc = copy.deepcopy(service.active_document())
        routes = doc["api"]["routes"]
        kept = [r for r in routes if r.get("id") != route_id]
        if len(kept) == len(routes):
            raise not_found("no route %r" % route_id, "ROUTE_NOT_FOUND")
        doc["api"]["routes"] = kept
        return _apply(doc, "removed route %s" % route_id)


def _maintenance_views(bp, service, guard):
    """/admin/gc and /admin/audit."""
    audit, admin_action = service.audit, guard.admin_action

    @bp.post("/admin/gc")
    @documented("Collect unreferenced blobs (dry_run: report what would go)", body=ref("GcRequest"),
                body_optional=True, responses={200: ref("GcReport")},
                errors=("400 INVALID_REQUEST", "409 GC_RUNNING", "409 GC_DISABLED", "409 GC_NO_MARKS"))
    @admin_action("admin.gc")
    def collect_garbage():
        from app.repository import gc
        body = json_body(65536, allowed=("dry_run", "grace_seconds"), empty={})
        grace = body.get("grace_seconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or
                                  not 0 <= grace <= MAX_GRACE_SECONDS):
            raise bad_request("INVALID_REQUEST", "grace_seconds is an integer from 0 to %d" % MAX_GRACE_SECONDS,
                              "grace_seconds")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise bad_request("INVALID_REQUEST", "dry_run is true or false", "dry_run")
        result = gc.collect(service.engine, dry_run=dry_run, grace_seconds=grace)
        return json_response(result), gc.audit_target(result), gc.audit_detail(result)

    @bp.get("/admin/audit")
    @documented("A page of the audit log, newest first", paged=True, responses={200: ref("AuditPage")},
                query={"actor": {"type": "string"}, "action": {"type": "string"},
                       "since": {"type": "string", "format": "date-time"}})
    @admin_action("admin.audit")
    def audit_log():
        page, size, offset = page_args()
        rows, total = audit.query(request.args.get("actor"), request.args.get("action"), request.args.get("since"),
                                  offset, size)
        return json_response(paginated(rows, total, page, size)), None


def _replication_views(bp, service, guard):
    """/admin/replication: what app/repository/replication.py does, over HTTP."""
    admin_action = guard.admin_action

    @bp.get("/admin/replication/status")
    @documented("This server's replication cursor and apply pipelines", responses={200: ref("ReplicationStatus")})
    @admin_action("admin.replication.status")
    def replication_status():
        engine = service.engine
        return json_response({"cursor": replication.cursor(engine),
                              "dedupe_key": engine.event_log.settings.dedupe_key,
                              "apply_pipelines": sorted(engine.compiled.apply_pipelines),
                              "read_only": engine.read_only}), None

    @bp.get("/admin/replication/events")
    @documented("Events after a sequence number, for a replica", responses={200: ref("EventBatch")},
                query={"after": {"type": "integer", "minimum": 0}, "limit": {"type": "integer", "minimum": 1}},
                errors=("400 INVALID_QUERY",))
    @admin_action("admin.replication.events")
    def replication_events():
        after, limit = int_arg("after", 0, 0), int_arg("limit", None, 1)
        return json_response(replication.ship(service.engine, after, limit)), None

    @bp.get("/admin/replication/blobs/<digest>")
    @documented("A blob's bytes, from whichever store holds it", params={"digest": DIGEST}, answers=blob_answers(),
                inputs=BLOB_INPUTS, errors=("400 INVALID_DIGEST",) + BLOB_ANSWER_ERRORS)
    @admin_action("admin.replication.blob")
    def replication_send_blob(digest):
        replication.check_digest(digest, "digest")
        blob = replication.find_blob(service.engine, digest)
        headers = {"Content-Type": "application/octet-stream", "X-Depot-Blob-Store": blob.store}
        return write_response(ResponseSpec(200, headers, blob=blob)), None

    @bp.put("/admin/replication/blobs/<digest>")
    @documented("Receive a blob's bytes, which must hash to the digest", params={"digest": DIGEST}, binary_body=True,
                query={"store": {"type": "string"}}, responses={201: ref("ReceivedBlob")},
                errors=("400 INVALID_DIGEST", "400 UNKNOWN_BLOB_STORE", "400 DIGEST_MISMATCH", "400 BLOB_TOO_SMALL",
                        "413 BLOB_TOO_LARGE"))
    @admin_action("admin.replication.blob")
    def replication_receive_blob(digest):
        engine = service.engine
        body = request_body(engine.limits.max_request_body_bytes)
        blob = replication.receive_blob(engine, request.args.get("store", ""), digest, body)
        return json_response({"digest": blob.digest, "size": blob.size, "store": blob.store}, 201), digest

    @bp.post("/admin/replication/apply")
    @documented("Apply a batch of shipped events, in order", body=ref("ApplyRequest"),
                responses={200: ref("ApplyResult")},
                errors=("400 INVALID_BATCH", "400 INVALID_EVENT", "400 INVALID_DIGEST", "400 EVENT_INVALID",
                        "409 EVENT_GAP", "409 BLOB_MISSING"),
                description="An event its apply pipeline refuses stops the batch with that pipeline's error.")
    @admin_action("admin.replication.apply")
    def replication_apply():
        # a batch as the primary ships it, re-encoded by the client: allow for looser JSON spacing
        body = json_body(2 * service.engine.event_log.settings.batch_bytes + 65536)
        result = replication.apply_batch(service.engine, body.get("events"), body.get("gone"))
        return json_response(result), "cursor %d" % result["cursor"]
