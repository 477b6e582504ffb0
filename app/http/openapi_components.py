"""What the OpenAPI document's operations share: component schemas (the error envelope, the list envelope, users,
tokens, schema versions...), the error sets of the guards every view passes, and response-object builders.

Depot's own views (app/http/management.py, app/http/app.py) and the compiled routes (app/http/openapi.py) are
described with the same pieces, so an error, a page of results or a blob download reads the same wherever it is
answered. Nothing here knows Flask or any op.
"""
import json
from dataclasses import dataclass

from app.engine.definitions import MAX_PAGE, MAX_PAGE_SIZE
from app.engine.opspec import RequestInput

SCHEMAS_PATH = "#/components/schemas/"
JSON = "application/json"
BYTES = "application/octet-stream"


def ref(name):
    return {"$ref": SCHEMAS_PATH + name}


def nullable(schema):
    return {"anyOf": [schema, {"type": "null"}]}


def portable(schema):
    """A JSON Schema taken from the Depot schema, as this document can hold it: one with a "$ref" would resolve
    against the OpenAPI document instead of its own root, so it is described in words instead."""
    if '"$ref"' in json.dumps(schema):
        return {"description": "as the Depot schema declares it (it refers to its own definitions)"}
    return schema


def obj(required=(), optional=None, **properties):
    """An object schema: ``properties`` are required unless named in ``optional`` (name -> schema)."""
    schema = {"type": "object", "properties": dict(properties, **(optional or {}))}
    if properties or required:
        schema["required"] = sorted(set(properties) | set(required))
    return schema


STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
TIME = {"type": "string", "format": "date-time"}
DIGEST = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
STAGED_MEMBER = {"type": "object", "description": "a streamed JSON member, staged in a blob store",
                 "properties": {"digest": DIGEST, "size": COUNT, "store": STRING,
                                "digests": {"type": "object", "additionalProperties": STRING},
                                "digests_base64": {"type": "object", "additionalProperties": STRING},
                                "path": {"type": "array", "items": {"type": ["string", "integer"]}}}}
SCOPES = {"type": "array", "items": STRING}
STATUS = {"type": "string", "enum": ["active", "disabled"]}
PERMISSION = {"type": "string", "enum": ["read", "write", "delete", "admin"]}


def page_of(item):
    """The API's one list envelope: a page of ``item`` with the total and the page asked for."""
    return obj(items={"type": "array", "items": item}, total=COUNT,
               page={"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
               page_size={"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE})


PAGE_QUERY = {"page": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
              "page_size": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 50}}

_TOKEN = dict(id=STRING, name=STRING, owner=STRING, scopes=SCOPES, created_at=TIME, expires_at=TIME,
              last_used_at=nullable(TIME), revoked=BOOLEAN)
_USER = dict(username=STRING, scopes=SCOPES, status=STATUS, created_at=TIME, last_login_at=nullable(TIME))
_VERSION = dict(version={"type": "integer", "minimum": 1}, sha256={"type": "string", "pattern": "^[0-9a-f]{64}$"},
                created_by=STRING, created_at=TIME, comment=STRING, active=BOOLEAN)

SCHEMAS = {
    "Error": obj(error=obj(code=STRING, message=STRING, optional={
        "field": STRING, "details": {"type": "array", "description": "the findings, when a schema is refused"}})),
    "Ok": obj(ok={"const": True}, optional={"message": STRING}),
    "Credentials": obj(username=STRING, password=STRING),
    "LoginToken": obj(token={"type": "string", "description": "a JWT: send it as Authorization: Bearer <token>"},
                      token_type={"const": "Bearer"}, expires_at=TIME),
    "PasswordChange": obj(current_password=STRING, new_password=STRING),
    "User": obj(**_USER),
    "Me": obj(auth={"type": "string", "enum": ["jwt", "api_token", "password"]}, **_USER),
    "DeletedUser": obj(deleted={"const": True}, **_USER),
    "UserPage": page_of(ref("User")),
    "NewUser": obj(username=STRING, password=STRING, optional={"scopes": SCOPES, "status": STATUS}),
    "UserChange": dict(obj(optional={"scopes": SCOPES, "status": STATUS, "password": STRING}),
                       additionalProperties=False, description="the fields to change; those left out are kept"),
    "Token": obj(**_TOKEN),
    "IssuedToken": obj(token={"type": "string", "pattern": "^dpt_", "description": "the secret, shown once"},
                       **_TOKEN),
    "TokenList": obj(items={"type": "array", "items": ref("Token")}),
    "TokenRequest": obj(name={"type": "string", "minLength": 1, "maxLength": 128}, scopes=dict(SCOPES, minItems=1),
                        optional={"expires_in": {"type": "integer", "minimum": 1, "description": "seconds; "
                                                 "default: auth.tokens.default_ttl_seconds"}}),
    "SchemaDocument": {"type": "object", "description": "a Depot schema (as schema.json; `python -m app check` "
                                                        "checks one)"},
    "SchemaVersion": obj(**_VERSION),
    "SchemaVersionWithDocument": obj(schema=ref("SchemaDocument"), **_VERSION),
    "AppliedSchema": dict(obj(warnings={"type": "array"}, optional={"unchanged": BOOLEAN}, **_VERSION),
                          description="201: a new version; 200: the schema already served (unchanged: true)"),
    "SchemaVersionPage": page_of(ref("SchemaVersion")),
    "Rollback": obj(version={"type": "integer", "minimum": 1}),
    "Route": dict(obj(required=["id", "method", "path", "pipeline"]), description="a route as api.routes declares one"),
    "GcRequest": dict(obj(optional={"dry_run": BOOLEAN, "grace_seconds": {"type": "integer", "minimum": 0}}),
                      additionalProperties=False),
    "GcReport": obj(dry_run=BOOLEAN, grace_seconds=COUNT, marked=COUNT, kept=COUNT,
                    removed={"type": "array", "items": STRING}, removed_bytes=COUNT, too_recent=COUNT,
                    orphans=obj(count=COUNT, bytes=COUNT, removed=COUNT, within_grace=COUNT, in_use=COUNT),
                    temp_files=obj(removed=COUNT, removed_bytes=COUNT, kept=COUNT)),
    "AuditRecord": obj(id={"type": "integer"}, at=TIME, actor=STRING, action=STRING, target=STRING, outcome=STRING,
                       client_ip=nullable(STRING), user_agent=nullable(STRING), request_id=nullable(STRING),
                       detail={"description": "what else the action recorded (an object, or null)"}),
    "AuditPage": page_of(ref("AuditRecord")),
    "ReplicationStatus": obj(cursor=COUNT, dedupe_key=nullable(STRING), apply_pipelines=SCOPES, read_only=BOOLEAN),
    "EventBatch": obj(events={"type": "array", "items": {"type": "object"}}, next_after=COUNT, more=BOOLEAN),
    "ReceivedBlob": obj(digest=DIGEST, size=COUNT, store=STRING),
    "ApplyRequest": obj(events={"type": "array", "items": {"type": "object"}},
                        optional={"gone": {"type": "array", "items": DIGEST}}),
    "ApplyResult": obj(applied=COUNT, skipped=COUNT, without_pipeline=COUNT, cursor=COUNT),
    "Grant": obj(id={"type": "integer"}, subject={"type": "string", "description": "user:NAME, group:NAME or "
                                                                                  "anonymous"},
                 namespace={"type": "string", "description": "a namespace or a pattern with *"},
                 permission=PERMISSION, created_by=STRING, created_at=TIME),
    "GrantRequest": dict(obj(subject={"type": "string", "pattern": "^(user:.+|group:.+|anonymous)$"},
                             namespace={"type": "string", "pattern": "^[a-z0-9*][a-z0-9._*-]{0,159}$"},
                             permission=PERMISSION), additionalProperties=False),
    "DeletedGrant": obj(deleted={"const": True}, id={"type": "integer"}, subject=STRING, namespace=STRING,
                        permission=PERMISSION, created_by=STRING, created_at=TIME),
    "GrantPage": page_of(ref("Grant")),
    "Group": obj(name=STRING, members={"type": "array", "items": STRING}, created_at=TIME),
    "NewGroup": dict(obj(name={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}),
                     additionalProperties=False),
    "DeletedGroup": obj(deleted={"const": True}, name=STRING, members={"type": "array", "items": STRING},
                        created_at=TIME),
    "GroupPage": page_of(ref("Group")),
    "Health": obj(ok=BOOLEAN, stores={"type": "object", "additionalProperties": obj(
        kind=STRING, ok=BOOLEAN)}, schema_sha256=STRING, read_only=BOOLEAN),
}

# --- error sets: "<status> <CODE>", as ops declare theirs ---------------------------------------------------

AUTHENTICATED = ("401 UNAUTHENTICATED", "401 INVALID_TOKEN", "401 TOKEN_EXPIRED", "401 TOKEN_REVOKED",
                 "401 MALFORMED_CREDENTIALS", "401 INVALID_CREDENTIALS", "429 RATE_LIMITED")
JSON_BODY = ("400 INVALID_JSON", "400 BODY_INCOMPLETE", "413 JSON_TOO_LARGE", "413 PAYLOAD_TOO_LARGE")
BINARY_BODY = ("400 BODY_INCOMPLETE", "413 PAYLOAD_TOO_LARGE")
PAGING = ("400 INVALID_QUERY",)
# the 5xx answered on purpose: an upstream failed, a request exceeded its budget (any other 5xx is a bug)
SERVER_ANSWERS = ("502", "503")


@dataclass(frozen=True)
class Access:
    """Who may call an operation: ``scopes`` the caller must hold ('admin' implies all); ``login_session``: only
    with a login token (JWT), never an API token."""
    scopes: tuple = ()
    login_session: bool = False

    def errors(self):
        refused = ["403 FORBIDDEN"] if self.scopes else []
        return list(AUTHENTICATED) + refused + (["403 LOGIN_SESSION_REQUIRED"] if self.login_session else [])

    def security(self):
        """The credentials it takes: a bearer token, or Basic credentials (a password or an API token) unless it
        needs a login session."""
        return [{"bearer": []}] if self.login_session else [{"bearer": []}, {"basic": []}]

    def describe(self):
        needs = "scope(s): %s (admin implies all)" % ", ".join(self.scopes) if self.scopes else "a valid token"
        return "Requires %s%s." % (needs, "; a login token (JWT), not an API token" if self.login_session else "")


SIGNED_IN = Access()
ADMIN = Access(("admin",))
LOGIN_SESSION = Access(login_session=True)

# --- response objects ---------------------------------------------------------------------------------------


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "a login JWT or an API token (dpt_...)"},
    "basic": {"type": "http", "scheme": "basic", "description": "a username and its password, a username and one "
              "of its API tokens, or __token__ and an API token or login JWT (as pip and twine send one)"}}


def json_answer(schema, description="JSON"):
    return {"description": description, "content": {JSON: {"schema": schema}}}


def add_errors(responses, declared):
    """Error answers (the JSON envelope) for "<status> <CODE>" entries, each status listing its codes."""
    for entry in declared:
        status, _, code = entry.partition(" ")
        answer = responses.setdefault(status, json_answer(ref("Error"), ""))
        codes = answer.setdefault("x-error-codes", [])
        if code not in codes:
            codes.append(code)
            answer["description"] = ", ".join(codes)
    return responses


_BLOB_HEADERS = {"ETag": {"description": "the blob's digest, quoted", "schema": STRING},
                 "X-Depot-Digest": {"description": "the blob's digest", "schema": DIGEST},
                 "Accept-Ranges": {"schema": {"const": "bytes"}},
                 "Content-Disposition": {"description": "attachment, with the download's file name (RFC 6266)",
                                         "schema": STRING},
                 "Last-Modified": {"description": "when the bytes were published (HTTP date)", "schema": STRING}}
_BLOB_CONTENT = {BYTES: {"schema": {"type": "string", "contentMediaType": BYTES}}}


def blob_answers(status=200):
    """A blob streamed from disk, as app/http/app.py writes one: the bytes, one Range's part, or no body for a
    conditional request answered from the client's copy. (416 is an error: BLOB_ANSWER_ERRORS.)"""
    return {
        str(status): {"description": "the bytes, streamed (HEAD: the headers alone)", "headers": _BLOB_HEADERS,
                      "content": _BLOB_CONTENT},
        "206": {"description": "the part of the bytes the Range asked for", "content": _BLOB_CONTENT,
                "headers": dict(_BLOB_HEADERS, **{"Content-Range": {"schema": STRING}})},
        "304": {"description": "not modified: If-None-Match names the blob's ETag, or (without If-None-Match) "
                               "If-Modified-Since is not before Last-Modified", "headers": _BLOB_HEADERS},
        "412": {"description": "precondition failed: If-Match was sent with a matching If-None-Match"},
    }


BLOB_ANSWERS = ("206 PARTIAL_CONTENT", "304 NOT_MODIFIED", "412 PRECONDITION_FAILED")
BLOB_ANSWER_ERRORS = ("404 BLOB_NOT_FOUND", "416 RANGE_NOT_SATISFIABLE")
BLOB_INPUTS = (
    RequestInput("header", "Range", "one byte range (bytes=<first>-<last>): 206 with that part, 416 when no part "
                 "of the blob is in it; several ranges: 200 with the whole body when any is satisfiable"),
    RequestInput("header", "If-Range", "an ETag: the Range applies only while the blob still has it"),
    RequestInput("header", "If-None-Match", "ETags (the blob's digest, quoted): 304 when one matches"),
    RequestInput("header", "If-Modified-Since", "an HTTP date: 304 when the blob's Last-Modified is not after "
                 "it (If-None-Match, when sent, decides instead)"),
    RequestInput("header", "If-Match", "ETags: with a matching If-None-Match, 412 instead of 304"))


def parameter(where, name, schema, description="", required=False):
    param = {"name": name, "in": where, "required": required or where == "path", "schema": schema}
    if description:
        param["description"] = description
    return param


REQUEST_ID = parameter("header", "X-Request-Id", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                       "echoed in the response's X-Request-Id (one is made when absent or malformed)")
