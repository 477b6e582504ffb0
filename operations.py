"""The operation vocabulary: one small function per op, each declared with its arguments.

Every op receives the ExecutionContext and its bound arguments (templates already parsed, schema references
already resolved to their definitions). Ops know nothing of HTTP: they read ``ctx.request`` (a RequestData),
write ``ctx.fields`` / ``ctx.vars``, and end a pipeline by setting ``ctx.response`` (respond.*) or raising a
DepotError. OPERATIONS.md is generated from these declarations.
"""
import base64
import binascii
import io
import json
import re
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

from app.identity.auth import require
from app.identity.access import require_resource
from app.identity.permissions import RANK
from app.engine.body import parse_json as parse_json_body, read_all
from app.engine.conditions import ConditionError, compile_condition
from app.engine.rows import RowContext, RowStream
from app.engine.versions import SCHEMES
from app.engine.context import EMPTY_BODY, ResponseSpec
from app.engine.archives import FORMATS, Bounds, find_member, member_matcher, random_access
from app.engine.jsonstream import DECODINGS, DEFAULT_MAX_MEMBERS, JsonMember, JsonStreamReader, StreamSpec
from app.engine.multipart import (DEFAULT_FIELD_BYTES, DEFAULT_FORM_BYTES, DEFAULT_MAX_ITEMS, DEFAULT_MAX_PARTS,
                                  FormFile, FormSpec, MultipartReader, boundary_of, read_form)
from app.engine.staged import StagedUpload
from app.engine.definitions import MAX_PAGE, MAX_PAGE_SIZE, chain, fields_normalizer, query_value
from app.errors import DepotError, bad_request, too_large, unknown_session
from app.engine import expr
from app.http.openapi_components import (BLOB_ANSWER_ERRORS, BLOB_ANSWERS, BLOB_INPUTS, COUNT, DIGEST, STRING,
                                    nullable, portable)
from app.engine.media import negotiate
from app.engine.pages import CachedText
from app.engine.opspec import (BindError, Const, JsonSchema, MediaType, MediaTypes, OpDecl, Output, PageTemplate,
                               RefTo, RequestInput, Scopes, Source, Template, Vocabulary)
from app.stores.codec import dumps
from app.stores.digests import (ALGORITHMS, DIGEST_PREFIX, algorithm_named, algorithm_names, hash_stream,
                                parse_declared, split_digest)
from app.stores.interfaces import BlobHandle
from app.stores import text as text_search

VOCABULARY = Vocabulary()
op = VOCABULARY.op  # each @op below declares into VOCABULARY; nothing is registered until register() is called


def register(registry: dict[str, OpDecl]) -> None:
    """Hand the vocabulary to the engine's registry (app.engine.opspec.load_vocabulary calls this, once)."""
    VOCABULARY.register(registry)


MAX_QUERY_LIMIT = 1000
ARCHIVE_BUFFER = 64 * 1024
MAX_OFFSET = MAX_PAGE * MAX_PAGE_SIZE
_DECLARED_DIGEST = [
    RequestInput("header", "Content-Digest", "the body's digest (RFC 9530): sha-256=:<base64>:; a mismatch is 400 "
                 "DIGEST_MISMATCH and nothing is stored"),
    RequestInput("query", "digest", "the body's digest as sha256:<hex> or sha512:<hex>, for clients that cannot "
                 "send Content-Digest", {"type": "string",
                                         "pattern": "^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$"})]


def _stored(a):
    """What kv.get binds: the document (its storage schema, when it has one) or null."""
    return nullable(portable(a.doc.validator.schema) if a.doc.validator is not None else {})


def _prepare_digests(a, scope):
    """The algorithms a step computes besides sha-256, by Depot's names (any usual spelling is accepted)."""
    try:
        a.digests = algorithm_names(a.digests or ())
    except ValueError as exc:
        raise BindError(str(exc), "digests") from None


def _digests_arg(what):
    return Const("string list", "further digests of %s computed in the same pass: any of %s (as spelt here, or "
                 "any usual spelling: sha-512, blake2b-256); a handle's .digests.<name> reads one in hex, "
                 ".digests_base64.<name> in base64" % (what, ", ".join(a for a in ALGORITHMS if a != "sha256")),
                 required=False, default=[])


_STORED_BLOB = "variable receiving the stored blob's handle: .digest, .size, .digests.<algorithm> (hex), " \
               ".digests_base64.<algorithm>"


# --- auth -------------------------------------------------------------------------------------------------

def _default_permission(a, scope):
    """Without `permission`, the namespace permission that matches the scopes asked for."""
    if a.permission is None:
        a.permission = "admin" if "admin" in a.scopes else "write" if "write" in a.scopes else "read"


@op("auth.require_scopes", "Require an authenticated principal holding every listed scope ('admin' implies all). "
    "With `namespace`, once the installation has namespace grants, the principal's permission on that namespace "
    "is checked instead (see Namespace permissions); without grants the scopes decide. With `resource`, a "
    "principal restricted to resources (an access token: auth.issue_access_token) also needs the permission on "
    "that resource itself (a mount's source repository, say).",
    args={"scopes": Scopes("scopes the principal must hold"),
          "namespace": Template("the namespace the route acts on (e.g. {namespace}, once bound)", required=False,
                                shape="string"),
          "resource": Template("the resource the step acts on, for principals restricted to resources (e.g. "
                               "{from}, a repository's name)", required=False, shape="string"),
          "out": Output("variable receiving whether the principal passes (true or false), instead of refusing "
                        "one that does not: a step that falls back (a mount becomes an upload) rather than fails",
                        required=False, schema={"type": "boolean"}),
          "permission": Const("string", "the permission needed on it (default: admin if the scopes ask admin, "
                              "write if they ask write, else read)", required=False,
                              choices=["read", "write", "delete", "admin"])},
    errors=["401 UNAUTHENTICATED", "403 FORBIDDEN"],
    example={"scopes": ["write"]}, prepare=_default_permission,
    openapi=lambda o, a: o.require(a.scopes))
def auth_require_scopes(ctx, a):
    if a.out is None:
        return _require_scopes(ctx, a)
    try:
        _require_scopes(ctx, a)
    except DepotError as refusal:
        if refusal.status not in (401, 403):
            raise
        ctx.vars[a.out] = False
    else:
        ctx.vars[a.out] = True


def _require_scopes(ctx, a):
    if a.namespace is not None and ctx.engine.access.active:
        ctx.engine.access.require(ctx.principal, a.namespace.render(ctx), a.permission)
    else:
        require(ctx.principal, a.scopes)
    if a.resource is not None:
        require_resource(ctx.principal, a.resource.render(ctx), a.permission)


_ISSUED_TOKEN = {"type": "object", "required": ["token", "username", "scopes", "expires_at"],
                 "properties": {"token": STRING, "username": STRING, "expires_at": STRING,
                                "scopes": {"type": "array", "items": STRING}}}


def _text(value, field):
    """A credential a template rendered: text, or 400 naming where it came from."""
    if not isinstance(value, str) or not value:
        raise bad_request("INVALID_CREDENTIALS_FORMAT", "%s is a non-empty string" % field, field)
    return value


@op("auth.issue_token", "Log a user in by name and password and issue an API token of that user, for clients "
    "whose protocol logs in through the registry (npm login's PUT /-/user/org.couchdb.user:<name>, a token "
    "endpoint): the password is checked as a login (the login rate limits apply, 429 RATE_LIMITED; a failure is "
    "audited; 401 INVALID_CREDENTIALS alike for an unknown user, a wrong password and a disabled account), and "
    "the token holds those of `scopes` the user holds ('admin' implies all; 403 SCOPE_NOT_HELD when none). The "
    "token is an ordinary API token: listed and revoked under /auth/tokens, audited as token.create.",
    args={"username": Template("the user name", shape="string"),
          "password": Template("the password", shape="string"),
          "scopes": Scopes("the scopes a token issued here may carry"),
          "name": Template("the token's name, as /auth/tokens lists it (1 to 128 characters)", shape="string"),
          "ttl_seconds": Const("integer", "the token's lifetime (default: auth.tokens.default_ttl_seconds; at most "
                               "auth.tokens.max_ttl_seconds)", required=False, minimum=1),
          "out": Output("variable receiving {token, username, scopes, expires_at}", schema=_ISSUED_TOKEN)},
    errors=["400 INVALID_CREDENTIALS_FORMAT", "401 INVALID_CREDENTIALS", "403 SCOPE_NOT_HELD", "429 RATE_LIMITED",
            "501 NOT_SUPPORTED"],
    example={"username": "{name}", "password": "$body.password", "scopes": ["read", "write"],
             "name": "npm login", "out": "login"},
    io=True)
def auth_issue_token(ctx, a):
    accounts = ctx.engine.accounts
    if accounts is None:
        raise DepotError("NOT_SUPPORTED", 501, "this server issues no tokens from routes")
    username = _text(a.username.render(ctx), "username")
    password = _text(a.password.render(ctx), "password")
    ctx.vars[a.out] = accounts.issue_token(username, password, _text(a.name.render(ctx), "name"), a.scopes,
                                           a.ttl_seconds, ctx.request)


_ACCESS_TOKEN = {"type": "object", "required": ["token", "access_token", "expires_in", "issued_at"],
                 "properties": {"token": STRING, "access_token": STRING, "expires_in": COUNT, "issued_at": STRING,
                                "granted": {"type": "array", "items": STRING}}}
_DEFAULT_ACTIONS = {"pull": "read", "push": "write", "delete": "delete", "*": "delete"}


def _prepare_actions(a, scope):
    if not a.actions or not all(isinstance(name, str) and permission in RANK
                                for name, permission in a.actions.items()):
        raise BindError("actions maps each action name to a permission: %s" % ", ".join(RANK), "actions")


def _requested_scopes(request, parameter):
    """Every scope the query asks for: the parameter may repeat, and each value may hold several, space-separated
    (RFC 6749's form)."""
    query = request.query
    values = query.getlist(parameter) if hasattr(query, "getlist") else [query.get(parameter)]
    return [item for value in values if isinstance(value, str) for item in value.split()]


def _grant(ctx, a, requested):
    """(resource name -> permission, the granted scopes as the token endpoint answers them) for the principal."""
    resources, granted = {}, []
    for item in requested:
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != a.type or not name:
            continue  # another kind of scope (registry:catalog:*): none granted
        rank = ctx.engine.access.effective_rank(ctx.principal, name.split("/")[0])
        allowed = [action for action in actions.split(",") if action in a.actions and
                   rank >= RANK[a.actions[action]]]
        if allowed:
            best = max((a.actions[action] for action in allowed), key=RANK.__getitem__)
            if RANK[best] > RANK.get(resources.get(name, ""), -1):
                resources[name] = best
            granted.append("%s:%s:%s" % (kind, name, ",".join(allowed)))
    return resources, granted


@op("auth.issue_access_token", "Issue a short-lived access token restricted to the resources a token request "
    "names (the Docker/OCI registry token flow: `GET /token?service=...&scope=repository:acme/app:pull,push`, the "
    "`scope` parameter repeated or space-separated). The caller is the request's principal (Basic credentials, a "
    "token); each `<type>:<name>:<actions>` scope is granted the actions whose permission (`actions`) the caller "
    "holds on the name's namespace (its first segment) now, by grants or scopes. The token reaches only those "
    "resources, on routes that declare their `resource` (a route naming a namespace but no resource refuses it), "
    "manages no API tokens, and ends early with the account's token version. Unknown scope types and actions are "
    "left out, not refused: a client then meets 403 where it asked too much. 401 without credentials; 403 for a "
    "caller itself holding an access token (a token cannot widen itself).",
    args={"query_parameter": Const("string", "the query parameter naming the scopes asked for", required=False,
                                   default="scope"),
          "type": Const("string", "the scope type granted (the first part of `<type>:<name>:<actions>`)",
                        required=False, default="repository"),
          "actions": Const("object", "action -> the namespace permission it needs", required=False,
                           default=_DEFAULT_ACTIONS),
          "ttl_seconds": Const("integer", "the token's lifetime", required=False, default=300, minimum=1,
                               maximum=3600),
          "out": Output("variable receiving {token, access_token, expires_in, issued_at, granted}",
                        schema=_ACCESS_TOKEN)},
    errors=["401 UNAUTHENTICATED", "403 FORBIDDEN", "501 NOT_SUPPORTED"],
    example={"type": "repository", "ttl_seconds": 300, "out": "issued"}, io=True, prepare=_prepare_actions)
def auth_issue_access_token(ctx, a):
    accounts, principal = ctx.engine.accounts, ctx.principal
    if accounts is None:
        raise DepotError("NOT_SUPPORTED", 501, "this server issues no tokens from routes")
    require(principal, frozenset(), "a token")
    if "resources" in principal:
        raise DepotError("FORBIDDEN", 403, "an access token cannot be exchanged for another: send the account's "
                         "credentials")
    resources, granted = _grant(ctx, a, _requested_scopes(ctx.request, a.query_parameter))
    wanted = {"read"} | ({"write"} if any(RANK[p] >= RANK["write"] for p in resources.values()) else set())
    scopes = frozenset(wanted & principal["scopes"] if "admin" not in principal["scopes"] else wanted)
    token, expires = accounts.issue_access_token(principal["sub"], scopes, resources, a.ttl_seconds)
    ctx.vars[a.out] = {"token": token, "access_token": token, "expires_in": a.ttl_seconds,
                       "issued_at": _now(), "granted": granted}


# --- parse ------------------------------------------------------------------------------------------------

@op("parse.path", "Bind the route's path parameters into the field namespace.",
    args={"entity": RefTo("entity", "entity whose fields the parameters are", required=False)},
    example={"entity": "artifact"}, binds=lambda scope, raw: scope.bind_path_params(raw.get("entity")),
    openapi=lambda o, a: o.path_params(a.entity))
def parse_path(ctx, a):
    ctx.fields.update(ctx.request.path_params)


@op("parse.query", "Bind query parameters into the field namespace, typed and bounded when declared.",
    args={"fields": Const("object", "name -> {type: string|integer|boolean, default, minimum, maximum, required}",
                          required=False, default={}),
          "out": Output("variable receiving all query parameters as an object", required=False,
                        schema={"type": "object", "additionalProperties": STRING})},
    errors=["400 INVALID_QUERY"],
    example={"fields": {"page": {"type": "integer", "default": 1, "minimum": 1}}, "out": "query"},
    binds=lambda scope, raw: scope.bind_fields(raw["fields"]) if raw.get("fields") else scope.bind_unknown("query"),
    openapi=lambda o, a: o.query_params(a.fields))
def parse_query(ctx, a):
    query = ctx.request.query
    if a.fields:
        for name, spec in a.fields.items():
            ctx.fields.setdefault(name, query_value(query.get(name), name, spec))
    else:
        for name, value in query.items():
            ctx.fields.setdefault(name, value)
    if a.out:
        ctx.vars[a.out] = dict(query)


@op("parse.headers", "Bind request headers: `fields` maps field names to header names (absent headers bind "
    "nothing); `prefixes` maps variable names to a header prefix and collects every header with it into an object "
    "keyed by the rest of the name, lower-cased (X-Depot-Label-Os: linux -> {\"os\": \"linux\"}). A header the "
    "server could not pass on (a name with an underscore, which WSGI cannot tell from a hyphen) that this step "
    "would have read is refused, never silently missing.",
    args={"fields": Const("object", "field name -> header name", required=False, default={}),
          "prefixes": Const("object", "variable name -> header name prefix", required=False, default={})},
    errors=["400 INVALID_HEADER"],
    example={"fields": {"description": "X-Depot-Description"}, "prefixes": {"labels": "X-Depot-Label-"}},
    binds=lambda scope, raw: (scope.bind_fields(raw.get("fields", {})),
                              [scope.binds_var(name) for name in raw.get("prefixes", {})]),
    openapi=lambda o, a: o.header_params(a.fields, a.prefixes))
def parse_headers(ctx, a):
    if ctx.request.dropped_headers:
        _refuse_dropped(ctx.request.dropped_headers, a)
    headers = ctx.request.headers
    for field, header in a.fields.items():
        value = headers.get(header)
        if value is not None:
            ctx.fields.setdefault(field, _utf8(value))
    for name, prefix in a.prefixes.items():
        start = len(prefix)
        ctx.vars[name] = {key[start:].lower(): _utf8(value) for key, value in headers.items()
                          if key.lower().startswith(prefix.lower()) and len(key) > start}


def _refuse_dropped(dropped, a):
    """400 INVALID_HEADER for the first dropped header a `fields` name or a `prefixes` prefix would have read."""
    names = {header.lower() for header in a.fields.values()}
    prefixes = [prefix.lower() for prefix in a.prefixes.values()]
    for name in dropped:
        lower = name.lower()
        if lower in names or any(lower.startswith(prefix) and len(lower) > len(prefix) for prefix in prefixes):
            raise bad_request("INVALID_HEADER", "header %s cannot be received: the server drops header names with "
                              "an underscore (WSGI cannot tell them from a hyphen); name it without one" % name,
                              name)


def _utf8(value):
    """WSGI hands header values over as latin-1; clients send UTF-8, so read the bytes as UTF-8 when they are."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


_STREAM_ARGS = {  # the keys of parse.json's `stream`, bound as arguments of these kinds are
    "members": Const("string list"), "store": RefTo("blob_store"),
    "decode": Const("string", required=False, default="base64", choices=list(DECODINGS)),
    "digests": Const("string list", required=False, default=[]),
    "max_members": Const("integer", required=False, default=DEFAULT_MAX_MEMBERS, minimum=1),
    "out": Const("string")}
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STREAM_ERRORS = ["400 INVALID_ENCODING", "400 STREAMED_MEMBER_NOT_STRING", "400 TOO_MANY_STREAMED_MEMBERS",
                  "400 BODY_INCOMPLETE", "413 BLOB_TOO_LARGE", "400 BLOB_TOO_SMALL"]


def _prepare_json_stream(a, scope):
    """At load: `stream`, when given, bound key by key (errors name the key), its patterns compiled."""
    if a.stream is None:
        return
    if getattr(a, "from") is not None:
        raise BindError("`stream` reads the request body; `from` parses a stored document instead", "stream")
    unknown = sorted(set(a.stream) - set(_STREAM_ARGS))
    if unknown:
        raise BindError("unknown key(s) %s; expected: %s" % (", ".join(unknown), ", ".join(_STREAM_ARGS)), "stream")
    stream = SimpleNamespace(**{key: _stream_arg(a.stream, key, scope) for key in _STREAM_ARGS})
    if not _VARIABLE.match(stream.out) or stream.out == a.out:
        raise BindError("expected a variable name matching [A-Za-z_][A-Za-z0-9_]*, other than `out`'s",
                        "stream.out")
    try:
        stream.digests = algorithm_names(stream.digests)
    except ValueError as exc:
        raise BindError(str(exc), "stream.digests") from None
    try:
        stream.spec = StreamSpec.compile(stream.members, stream.decode, stream.max_members)
    except ValueError as exc:
        message, index = exc.args
        raise BindError(message, "stream.members" if index is None else "stream.members[%d]" % index) from None
    a.stream = stream


def _stream_arg(raw, key, scope):
    arg = _STREAM_ARGS[key]
    if key not in raw:
        if arg.required:
            raise BindError("`stream` needs %s (%s)" % (key, arg.describe()), "stream." + key)
        return arg.default
    try:
        return arg.bind(raw[key], scope)
    except BindError as exc:
        raise BindError(str(exc), "stream." + key) from None


def _bind_json(scope, raw):
    if raw.get("from") is not None:  # a stored document: only $out is bound
        if isinstance(raw.get("out"), str):
            scope.binds_var(raw["out"])
        return
    scope.bind_json_body(raw.get("out"))
    stream = raw.get("stream")
    if isinstance(stream, dict) and isinstance(stream.get("out"), str):
        scope.binds_var(stream["out"])


def _document_json(o, a):
    if getattr(a, "from") is not None:
        return
    o.json_body(a.out)
    if a.stream is not None:
        o.streamed_members(a.stream.spec, a.stream.store.name, a.stream.out)
        o.errors(_STREAM_ERRORS)


@op("parse.json", "Parse the request body as JSON (bounded by ops.limits.max_json_bytes and max_json_depth); an "
    "object's members also join the field namespace without overriding path parameters. With `stream`, the "
    "declared string members (an npm publish's base64 tarball) are never held: each streams, decoded, into the "
    "blob store's staging area while the body is parsed, hashed as it is written (as parse.multipart's file), "
    "and reads null in $out and the fields; the stream's `out` lists their staged handles. blob.put from a "
    "handle makes it a stored blob without copying; a handle no step takes is removed when the request ends. "
    "Memory stays bounded whatever the members' size: max_json_bytes counts the body without them (each one "
    "as null).",
    args={"out": Output("variable receiving the parsed body"),
          "from": Template("a blob handle ($blob, as blob.put's out_blob or blob.get bind it) to parse instead of "
                           "the request body: a document stored byte for byte (an OCI manifest), read whole up to "
                           "max_json_bytes; only $out is bound", required=False),
          "stream": Const("object", "string members to stream into a blob store: `members` (required), a "
                          "non-empty list of patterns (below); `store` (required), the blob store they are staged "
                          "in (its max_blob_bytes and min_blob_bytes apply to the decoded bytes); `out` "
                          "(required), the variable receiving the list of their staged handles in document order "
                          "(.digest, .size, .store, .digests.<alg>, .digests_base64.<alg>, and .path: the keys and "
                          "item indexes leading to the member, e.g. `[\"_attachments\", \"pkg-1.0.0.tgz\", "
                          "\"data\"]`, read as `$attachments[0].path[1]`); `decode`: base64 (the default: "
                          "standard, padded, validated; the escape `\\/` reads as `/`, any other escape is 400 "
                          "INVALID_ENCODING) or none (the string's own text, as UTF-8); `digests`: further "
                          "algorithms hashed while staging, as blob.put's; `max_members` (default %d): one member "
                          "more is 400 TOO_MANY_STREAMED_MEMBERS naming it. A pattern is dot-separated steps: an "
                          "object key, `*` for any one key, `[]` after a step for any one array item "
                          "(`files[].data`; `[].data` in a top-level array); a backslash escapes `. * [ ] \\` in "
                          "a key (`a\\.b` is the key \"a.b\"). Every string a pattern matches streams; a "
                          "matched member that is not a string is 400 STREAMED_MEMBER_NOT_STRING"
                          % DEFAULT_MAX_MEMBERS, required=False)},
    errors=["400 INVALID_JSON", "413 JSON_TOO_LARGE"],
    example={"out": "body", "stream": {"members": ["_attachments.*.data"], "decode": "base64", "store": "primary",
                                       "digests": ["sha1", "sha512"], "max_members": 1, "out": "attachments"}},
    io=True, prepare=_prepare_json_stream, binds=_bind_json, openapi=_document_json)
def parse_json(ctx, a):
    if a.stream is not None:
        return _parse_streamed_json(ctx, a)
    if getattr(a, "from") is not None:
        return _parse_stored_json(ctx, a)
    limits = ctx.engine.limits
    request = ctx.request
    if request.content_length is not None and request.content_length > limits.max_json_bytes:
        raise too_large("JSON body exceeds max_json_bytes (%d)" % limits.max_json_bytes, "JSON_TOO_LARGE")
    raw = read_all(request.stream, limits.max_json_bytes) if request.stream is not None else b""
    if not raw.strip():
        raise bad_request("INVALID_JSON", "request body is empty; expected JSON")
    _bind_body(ctx, a, parse_json_body(raw, limits.max_json_depth))


def _parse_stored_json(ctx, a):
    blob, limits = getattr(a, "from").render(ctx), ctx.engine.limits
    if not isinstance(blob, BlobHandle):
        raise DepotError("INVALID_SOURCE", 500, "parse.json `from` must name a blob handle")
    if blob.size is not None and blob.size > limits.max_json_bytes:
        raise too_large("the document exceeds max_json_bytes (%d)" % limits.max_json_bytes, "JSON_TOO_LARGE")
    ctx.count_io()
    with blob.open() as stream:
        raw = read_all(stream, limits.max_json_bytes)
    if not raw.strip():
        raise bad_request("INVALID_JSON", "the document is empty; expected JSON")
    ctx.vars[a.out] = parse_json_body(raw, limits.max_json_depth)


def _bind_body(ctx, a, body):
    ctx.vars[a.out] = body
    if isinstance(body, dict):
        for name, value in body.items():
            ctx.fields.setdefault(name, value)


def _parse_streamed_json(ctx, a):
    stream = a.stream
    store = ctx.engine.blob_store(stream.store.name)

    def stage(member, path):
        ctx.count_io()
        with ctx.streaming():  # moving a member's bytes is not charged to the CPU budget; parsing the rest is
            handle = JsonMember(store.stage(member, stream.digests), path)
        ctx.cleanups.append(lambda: handle.discard(store))  # a no-op once blob.put has taken it
        return handle
    limits = ctx.engine.limits
    request = ctx.request
    reader = JsonStreamReader(request.stream if request.stream is not None else io.BytesIO(), stream.spec, stage,
                              limits.max_json_bytes, limits.max_json_depth)
    body, handles = reader.read()
    _bind_body(ctx, a, body)
    ctx.vars[stream.out] = handles


def _prepare_multipart(a, scope):
    """At load: the form compiled (FormSpec), the digests named; a file part needs a store and an output."""
    try:
        a.form = FormSpec.compile(a.fields, a.file, a.max_form_bytes, a.max_parts)
    except ValueError as exc:
        raise BindError(str(exc), "fields") from None
    _prepare_digests(a, scope)
    if a.file is not None and (a.store is None or a.out is None):
        raise BindError("a form with a file part needs `store` (where it is staged) and `out` (its handle)",
                        "store" if a.store is None else "out")
    if a.file is None and (a.store is not None or a.out is not None or a.digests):
        raise BindError("`store`, `out` and `digests` are for the file part: declare it with `file`", "file")


@op("parse.multipart", "Read a multipart/form-data body while it streams in: the declared text fields join the "
    "field namespace (typed and bounded; path parameters win), undeclared parts are skipped unread into memory, "
    "and the `file` part streams straight into the blob store's staging area, hashed as it is written, whatever "
    "the order of the parts. $out is the staged file (.filename, .content_type, .size, .digest, .digests.<alg>, "
    ".digests_base64.<alg>): blob.put from it makes it a stored blob without copying; otherwise it is removed "
    "when the request ends. Memory stays bounded whatever the file's size.",
    args={"fields": Const("object", "field name -> {form: the form field's name (default: the field name), type: "
                          "string|integer|boolean, required, default, minimum, maximum, max_bytes (default "
                          "%d), repeated: true binds a list of every value given (an absent one binds []), "
                          "max_items (default %d)}" % (DEFAULT_FIELD_BYTES, DEFAULT_MAX_ITEMS),
                          required=False, default={}),
          "file": Const("string", "the form name of the file part (required in the body once declared)",
                        required=False),
          "store": RefTo("blob_store", "the blob store the file is staged in (its max_blob_bytes applies)",
                         required=False),
          "digests": _digests_arg("the file"),
          "max_form_bytes": Const("integer", "the declared text fields' bytes, all together",
                                  required=False, default=DEFAULT_FORM_BYTES, minimum=1),
          "max_parts": Const("integer", "parts the body may have, declared or not", required=False,
                             default=DEFAULT_MAX_PARTS, minimum=1),
          "out": Output("variable receiving the staged file", required=False)},
    errors=["400 INVALID_MULTIPART", "400 FORM_FIELD_MISSING", "400 FORM_FIELD_TOO_LARGE",
            "400 INVALID_FORM_FIELD", "400 BODY_INCOMPLETE", "413 PAYLOAD_TOO_LARGE", "413 BLOB_TOO_LARGE",
            "400 BLOB_TOO_SMALL"],
    example={"fields": {"action": {"form": ":action", "required": True}, "name": {"required": True},
                        "classifiers": {"repeated": True}, "sha256_digest": {"max_bytes": 64}},
             "file": "content", "store": "primary", "digests": ["md5", "blake2b_256"], "out": "upload"},
    io=True, prepare=_prepare_multipart,
    binds=lambda scope, raw: (scope.bind_fields(raw.get("fields") or {}), scope.reads_body("parse.multipart")),
    openapi=lambda o, a: o.form_body(a.form))
def parse_multipart(ctx, a):
    request = ctx.request
    reader = MultipartReader(request.stream if request.stream is not None else io.BytesIO(),
                             boundary_of(request.headers.get("Content-Type")), a.max_parts)
    store = ctx.engine.blob_store(a.store.name) if a.store is not None else None

    def stage(stream, part):
        upload = FormFile(store.stage(stream, a.digests), part.filename, part.content_type)
        ctx.cleanups.append(lambda: upload.discard(store))  # a no-op once blob.put has taken it
        return upload
    ctx.count_io()
    with ctx.streaming():
        values, upload = read_form(reader, a.form, stage)
    for name, value in values.items():
        if value is not None:
            ctx.fields.setdefault(name, value)
    if a.out:
        ctx.vars[a.out] = upload


# --- http -------------------------------------------------------------------------------------------------

@op("http.negotiate", "Choose the media type to answer with from the request's Accept header (RFC 9110 proactive "
    "negotiation, werkzeug's parser: q-values, wildcards, several Accept headers): the offer the client rates "
    "highest, then the one its most specific entry names, then the earliest offer; without an Accept header, the "
    "first offer. When no offer is acceptable the answer is 406 NOT_ACCEPTABLE naming the field Accept. The answer "
    "then varies with Accept (the response says Vary: Accept); later steps choose it with `when` conditions on "
    "the bound variable, and respond steps may take it as their `content_type`.",
    args={"offers": MediaTypes("the media types the route answers with (type/subtype), in the server's order of "
                               "preference"),
          "out": Output("variable receiving the chosen offer, as written in `offers`",
                        schema=lambda a: {"type": "string", "enum": list(a.offers)})},
    errors=["406 NOT_ACCEPTABLE"],
    inputs=[RequestInput("header", "Accept", "the media types the client accepts, with q-values (RFC 9110); the "
                         "route answers with the acceptable one it prefers, 406 when none is")],
    example={"offers": ["application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+html", "text/html"],
             "out": "format"})
def http_negotiate(ctx, a):
    ctx.vary += ("Accept",)
    chosen = negotiate(ctx.request.headers.get("Accept"), a.offers)
    if chosen is None:
        raise DepotError("NOT_ACCEPTABLE", 406, "none of the media types this route answers with is acceptable "
                         "(it offers %s)" % ", ".join(a.offers), "Accept", headers={"Vary": "Accept"})
    ctx.vars[a.out] = chosen


# --- normalize / validate ---------------------------------------------------------------------------------

def _prepare_normalize(a, scope):
    """Only the rules of fields this pipeline can have bound are kept."""
    a.normalizers = [(name, chain(rules)) for name, rules in a.entity.normalizers if scope.may_bind(name)]
    a.normalize_fields = fields_normalizer(a.normalizers)


@op("normalize.entity", "Apply the entity's per-field normalize rules to the fields present.",
    args={"entity": RefTo("entity", "entity whose fields' normalize rules apply")}, example={"entity": "artifact"},
    prepare=_prepare_normalize)
def normalize_entity(ctx, a):
    a.normalize_fields(ctx.fields)


@op("validate.entity", "Check the fields present against the entity's constraints and versioning scheme.",
    args={"entity": RefTo("entity", "entity whose constraints apply")},
    errors=["400 INVALID_FIELD", "400 INVALID_VERSION", "400 PRERELEASE_NOT_ALLOWED"],
    example={"entity": "artifact"},
    prepare=lambda a, scope: setattr(a, "checker", a.entity.checker(scope.may_bind)))
def validate_entity(ctx, a):
    a.checker(ctx.fields)


@op("validate.json_schema", "Validate a value against a JSON Schema; the first error names the field.",
    args={"schema": JsonSchema("the schema to satisfy"), "value": Template("the value to validate, usually $body"),
          "code": Const("string", "the error code of a value that fails (a protocol's own: MANIFEST_INVALID)",
                        required=False, default="SCHEMA_VALIDATION")},
    example={"schema": {"type": "object", "required": ["version"]}, "value": "$body"},
    binds=lambda scope, raw: scope.bind_body_schema(raw.get("value"), raw.get("schema")),
    openapi=lambda o, a: (o.body_schema(a.value, a.schema), o.error_response(400, a.code)))
def validate_json_schema(ctx, a):
    a.schema.check(a.value.render(ctx), a.code, 400)


# --- transactions -----------------------------------------------------------------------------------------

@op("txn.begin", "Open a transaction: later KV, index and event writes and blob puts are buffered.",
    args={"isolation": Const("string", "optimistic serializable: reads re-checked at commit",
                            choices=["serializable"], required=False, default="serializable")},
    errors=["500 TXN_NESTED"], example={"isolation": "serializable"}, opens_txn=True)
def txn_begin(ctx, a):
    if ctx.txn is not None:
        raise DepotError("TXN_NESTED", 500, "a transaction is already open")
    ctx.txn = ctx.engine.state.transaction()


@op("txn.commit", "Commit the open transaction atomically (one write batch); conditions are checked under "
    "the commit lock.", needs_txn=True, errors=["409 CONFLICT", "409 UNIQUE_VIOLATION"], example={}, io=True,
    closes_txn=True)
def txn_commit(ctx, a):
    if ctx.txn is None:
        raise DepotError("TXN_CLOSED", 500, "txn.commit ran with no open transaction")
    txn, ctx.txn = ctx.txn, None
    ctx.engine.commit(ctx, txn)


@op("txn.abort", "Discard the open transaction; nothing it buffered is written.", needs_txn=True, example={},
    closes_txn=True)
def txn_abort(ctx, a):
    ctx.abort_txn()


# --- kv ---------------------------------------------------------------------------------------------------

def _doc_key(ctx, a):
    return (a.key or a.doc.key).render_key(ctx)


_MISSING_KEYS = {"status", "code", "message", "field"}


def _prepare_kv_get(a, scope):
    """`missing`, checked and its message compiled once; `each` and `as` go together."""
    if (a.each is None) != (getattr(a, "as") is None):
        raise BindError("`each` and `as` go together: `as` names the variable each item is bound to", "as")
    if a.missing is None:
        return
    spec = a.missing
    if set(spec) - _MISSING_KEYS or not {"status", "code", "message"} <= set(spec):
        raise BindError("missing is {\"status\", \"code\", \"message\"[, \"field\"]}", "missing")
    if not isinstance(spec["status"], int) or not 400 <= spec["status"] <= 599 or not isinstance(spec["code"], str):
        raise BindError("missing.status is an error status (400-599) and missing.code a string", "missing")
    try:
        message = expr.compile_value(spec["message"])
    except expr.TemplateSyntaxError as exc:
        raise BindError(str(exc), "missing") from None
    scope.uses(message.refs)
    a.missing = SimpleNamespace(status=spec["status"], code=spec["code"], message=message, field=spec.get("field"))


def _kv_get_errors(o, a):
    """What a step reading several documents, or refusing an absent one, may answer besides its document."""
    if a.each is not None:
        o.error_response(400, "TOO_MANY_ITEMS")
    if a.missing is not None:
        o.error_response(a.missing.status, a.missing.code)


def _read_document(ctx, a):
    key = _doc_key(ctx, a)
    document = ctx.txn.get(a.doc.store, key) if ctx.txn is not None else ctx.engine.documents.get(a.doc.store, key)
    if document is None and a.missing is not None:
        missing = a.missing
        raise DepotError(missing.code, missing.status, str(missing.message.render(ctx)), missing.field)
    return document


@op("kv.get", "Read a document (null when absent) into a variable. With `each` (a list) and `as` (a variable), "
    "one document per item, its key rendered with the item bound to `as`: the list of them, in the items' order "
    "(at most 1000 items): a manifest's layers, say. With `missing`, an absent document is that error instead.",
    args={"doc": RefTo("document", "the document type"),
          "each": Template("a list: read one document per item", required=False),
          "as": Output("variable bound to each item of `each` while its key (and `missing`'s message) is "
                       "rendered", required=False, per_item=True),
          "key": Template("key; defaults to the document's key_template", required=False, shape="string"),
          "missing": Const("object", "the error an absent document is, instead of null: {\"status\", \"code\", "
                           "\"message\" (a template), \"field\"}", required=False),
          "out": Output("variable receiving the document, or null (with `each`: the list of them)",
                        schema=lambda a: {"type": "array", "items": _stored(a)} if a.each is not None
                        else _stored(a))},
    example={"doc": "artifact_meta", "key": "artifact/{namespace}/{name}/{version}/{variant}", "out": "meta"},
    io=True, prepare=_prepare_kv_get, openapi=lambda o, a: _kv_get_errors(o, a))
def kv_get(ctx, a):
    ctx.count_io()
    if a.each is None:
        ctx.vars[a.out] = _read_document(ctx, a)
        return
    items = a.each.render(ctx)
    items = [] if items is None else items
    if not isinstance(items, list):
        raise DepotError("INVALID_TEMPLATE_VALUE", 500, "kv.get each must render a list")
    if len(items) > MAX_QUERY_LIMIT:
        raise bad_request("TOO_MANY_ITEMS", "at most %d documents are read at once, not %d"
                          % (MAX_QUERY_LIMIT, len(items)))
    documents = []
    for item in items:
        ctx.vars[getattr(a, "as")] = item
        documents.append(_read_document(ctx, a))
    ctx.vars[a.out] = documents


def _document_bytes(ctx, a):
    value = a.value.render(ctx)
    a.doc.check(value)
    raw = ctx.engine.documents.encode(value)
    limit = ctx.engine.limits.max_kv_value_bytes
    if len(raw) > limit:
        raise too_large("document exceeds max_kv_value_bytes (%d)" % limit, "VALUE_TOO_LARGE")
    return raw


@op("kv.put", "Write a document, validated against its storage schema.",
    args={"doc": RefTo("document", "the document type (its schema validates the value)"),
          "key": Template("key; defaults to the document's key_template", required=False, shape="string"),
          "value": Template("the document")},
    writes=True, errors=["400 DOCUMENT_INVALID", "413 VALUE_TOO_LARGE"],
    example={"doc": "tag_map", "key": "tag/{namespace}/{name}/{tag}", "value": {"tag": "{tag}"}}, io=True)
def kv_put(ctx, a):
    key, raw = _doc_key(ctx, a), _document_bytes(ctx, a)
    ctx.count_io()
    with ctx.writing() as txn:
        txn.put(a.doc.store, key, raw)


@op("kv.cas_put", "Write a document only if the condition holds at commit (if_absent: the key must not exist).",
    args={"doc": RefTo("document", "the document type (its schema validates the value)"),
          "key": Template("key; defaults to the document's key_template", required=False, shape="string"),
          "value": Template("the document"),
          "if_absent": Const("boolean", "the key must not exist at commit (409 CONFLICT otherwise)", required=False,
                             default=True)},
    writes=True, errors=["409 CONFLICT", "400 DOCUMENT_INVALID", "413 VALUE_TOO_LARGE"],
    example={"doc": "artifact_meta", "if_absent": True, "value": {"namespace": "{namespace}"}}, io=True)
def kv_cas_put(ctx, a):
    key, raw = _doc_key(ctx, a), _document_bytes(ctx, a)
    ctx.count_io()
    with ctx.writing() as txn:
        if a.if_absent:
            txn.put_if_absent(a.doc.store, key, raw, "%s %r" % (a.doc.name, key))
        else:
            txn.put(a.doc.store, key, raw)


@op("kv.delete", "Delete a document.",
    args={"doc": RefTo("document", "the document type"),
          "key": Template("key; defaults to the document's key_template", required=False, shape="string")},
    writes=True, example={"doc": "tag_map", "key": "tag/{namespace}/{name}/{tag}"}, io=True)
def kv_delete(ctx, a):
    key = _doc_key(ctx, a)
    ctx.count_io()
    with ctx.writing() as txn:
        txn.delete(a.doc.store, key)


# --- blob -------------------------------------------------------------------------------------------------

@op("blob.get", "Locate a blob by digest; the handle streams from disk when responded.",
    args={"store": RefTo("blob_store", "the blob store"), "digest": Template("'sha256:<hex>'", shape="string"),
          "out": Output("variable receiving the blob handle (.digest, .size)")},
    errors=["400 INVALID_DIGEST", "404 BLOB_NOT_FOUND"],
    example={"store": "primary", "digest": "$meta.blob_digest", "out": "blob"}, io=True)
def blob_get(ctx, a):
    ctx.count_io()
    store, digest = ctx.engine.blob_store(a.store.name), a.digest.render(ctx)
    ctx.hold_blob(store, digest)  # before looking: a collection either sees the hold or has already removed it
    blob = store.locate(digest)
    if blob is None:
        raise DepotError("BLOB_NOT_FOUND", 404, "blob is not in store %r" % a.store.name)
    ctx.vars[a.out] = blob


@op("blob.put", "Stream bytes into the content-addressed store, hashing while writing (sha-256, the `digests` "
    "asked for, and from request.body also each further algorithm the client's Content-Digest declares: "
    "sha-512); inside a transaction the blob is moved into place only at commit. A form's file that "
    "parse.multipart staged, or a JSON member parse.json streamed, in the same store is taken over as it is, not "
    "copied (a digest it did not compute is computed from its file).",
    args={"store": RefTo("blob_store", "the blob store"),
          "from": Source("request.body, a body handle such as $up_resp.body, a form's file ($upload) or a "
                         "streamed JSON member ($attachments[0])"),
          "digests": _digests_arg("the bytes"),
          "out": Output("variable receiving 'sha256:<hex>'", schema=DIGEST),
          "out_size": Output("variable receiving the size in bytes", required=False, schema=COUNT),
          "out_blob": Output(_STORED_BLOB, required=False)},
    errors=["413 BLOB_TOO_LARGE", "413 PAYLOAD_TOO_LARGE", "400 BLOB_TOO_SMALL", "400 INVALID_DIGEST",
            "400 UNSUPPORTED_DIGEST_ALGORITHM"],
    example={"store": "primary", "from": "request.body", "digests": ["sha512"], "out": "digest",
             "out_size": "blob_size"}, io=True, mutates=True, prepare=_prepare_digests,
    binds=lambda scope, raw: scope.reads_body("blob.put") if raw.get("from") == Source.REQUEST_BODY else None,
    openapi=lambda o, a: o.binary_body() if getattr(a, "from") == Source.REQUEST_BODY else None)
def blob_put(ctx, a):
    store = ctx.engine.blob_store(a.store.name)
    source = getattr(a, "from")
    ctx.count_io()
    described = ()  # what the client declared of these bytes: its Content-Digest and ?digest= are the body's
    with ctx.streaming():
        if source == Source.REQUEST_BODY:  # the client's declared digests, checked before a byte is read, name
            # further algorithms hashed while streaming
            described = ctx.request.declared_digests
            staged = store.stage(ctx.request.stream, {claim.algorithm for claim in described}.union(a.digests))
        else:
            staged = _stage_from_value(store, source.render(ctx), a.digests)
    _keep(ctx, store, staged)
    ctx.unverified_blobs[staged.digest] = (staged, described)
    ctx.vars[a.out] = staged.digest
    if a.out_size:
        ctx.vars[a.out_size] = staged.size
    if a.out_blob:
        ctx.vars[a.out_blob] = staged


def _stage_from_value(store, value, digests):
    if isinstance(value, StagedUpload):
        staged = value.take(store)
        if staged is not None:
            _complete_digests(staged, digests)
            return staged
    if not isinstance(value, BlobHandle):
        raise DepotError("INVALID_SOURCE", 500, "blob.put 'from' must be request.body or a body/blob handle")
    with value.open() as stream:
        return store.stage(stream, digests)


def _complete_digests(staged, names):
    """Compute from the staged file the digests in ``names`` it was not hashed with while streaming in."""
    missing = [name for name in names if name not in staged.digests]
    if missing:
        with staged.open() as stream:
            staged.digests.update(hash_stream(stream, missing))


def _keep(ctx, store, staged):
    """Staged bytes become the store's: held from garbage collection while the request runs, promoted at the
    transaction's commit (or now, outside one)."""
    ctx.hold_blob(store, staged.digest)
    if ctx.txn is not None:
        ctx.txn.stage_blob(store, staged)
    else:
        store.commit(staged)


def _prepare_expected(a, scope):
    """At load: each declared digest `expected` holds, as (its algorithm, the node rendering it, the field its
    errors name, whether the algorithm is pinned by an object key)."""
    node, a.claims = a.expected, None
    if node is None:
        return
    constant = getattr(node, "value", None)
    items = node.items if isinstance(node, expr.DictNode) else \
        [(key, expr.Const(value)) for key, value in constant.items()] if isinstance(constant, dict) else None
    if items is None:
        a.claims = [(a.algo, node, _claim_field(node, "expected"), False)]
        return
    a.claims = []
    for key, value in items:
        algorithm = algorithm_named(key)
        if algorithm is None:
            raise BindError("unknown digest algorithm %r; Depot computes: %s" % (key, ", ".join(ALGORITHMS)),
                            "expected")
        a.claims.append((algorithm.name, value, _claim_field(value, key), True))


def _claim_field(node, default):
    """The field a declared digest's errors name: the field or variable member its template reads."""
    single = getattr(node, "single", None)
    if single is None:
        return default
    names = [step for step in single.path if isinstance(step, str)]
    return names[-1] if names else single.root


@op("blob.verify_digest", "Check a put blob's digest against declared digests: by default every digest the "
    "client declared for the request body (when the blob is the request body), each Content-Digest member Depot "
    "computes (sha-256, sha-512; others are ignored beside one it computes) and ?digest=sha256:<hex>, all of "
    "them; with `expected`, the digests it names, in any "
    "usual form (`<hex>` in `algo`, `sha256:<hex>`, `sha256=<hex>`, SRI `sha512-<base64>`, `sha-256=:<base64>:`). "
    "A digest blob.put did not compute while streaming is computed from the stored file. A mismatch names the "
    "field that disagreed, rejects the request, and nothing is recorded.",
    args={"digest": Template("the digest blob.put produced ($digest)", shape="string"),
          "algo": Const("string", "the algorithm of a bare hex `expected`", choices=list(ALGORITHMS),
                        required=False, default="sha256"),
          "expected": Template("the declared digest: one string, or an object algorithm -> digest, e.g. "
                               "{\"sha256\": \"{sha256_digest?}\", \"blake2b_256\": \"{blake2_256_digest?}\"}; "
                               "null values are skipped, errors name the field a value reads; default: the "
                               "client's declarations", required=False)},
    errors=["400 DIGEST_MISMATCH", "400 INVALID_DIGEST", "400 UNSUPPORTED_DIGEST_ALGORITHM"],
    example={"digest": "$digest", "expected": {"sha256": "{sha256_digest?}", "md5": "{md5_digest?}"}},
    prepare=_prepare_expected,
    openapi=lambda o, a: o.inputs(_DECLARED_DIGEST) if a.expected is None else None)
def blob_verify_digest(ctx, a):
    actual = split_digest(a.digest.render(ctx))
    staged, described = ctx.unverified_blobs.pop(DIGEST_PREFIX + actual, (None, ctx.request.declared_digests))
    if a.claims is None:  # a form's file or a fetched body is not the request body the client's digests describe
        declared = described
    else:
        declared = [claim for algorithm, node, field, pinned in a.claims
                    for claim in _declared(node.render(ctx), algorithm, field, pinned)]
    if staged is not None:
        with ctx.streaming():  # hashing a stored file again is moving bytes, as blob.put's hashing is
            _complete_digests(staged, {claim.algorithm for claim in declared})
    _check_declared(declared, staged, actual)
    if staged is not None:
        staged.verified = True


def _declared(value, algorithm, field, pinned):
    if value is None:
        return []
    claims = parse_declared(value, algorithm, field)
    if pinned and any(claim.algorithm != algorithm for claim in claims):
        raise bad_request("INVALID_DIGEST", "%s is declared as a %s digest but names another algorithm"
                          % (field, algorithm), field)
    return claims


def _check_declared(declared, staged, actual):
    """Each declared digest against the blob's (sha-256 is ``actual``; the others were computed while it
    streamed in, or since from its file)."""
    computed = dict(staged.digests if staged is not None else {}, sha256=actual)
    wrong = []
    for claim in declared:
        value = computed.get(claim.algorithm)
        if value is None:
            raise DepotError("DIGEST_NOT_COMPUTED", 500, "%s cannot be checked: the blob was not put by this "
                             "request" % claim.describe())
        if value != claim.hexdigest:
            wrong.append(claim)
    if wrong:
        raise DepotError("DIGEST_MISMATCH", 400, "; ".join(
            "%s does not match the uploaded bytes (%s %s)" % (claim.describe(), claim.algorithm,
                                                              computed[claim.algorithm]) for claim in wrong),
                         wrong[0].source)


def _prepare_extract(a, scope):
    """At load: the member pattern compiled, the bounds gathered, the digests named."""
    try:
        a.matches = member_matcher(a.member)
    except ValueError as exc:
        raise BindError(str(exc), "member") from None
    a.bounds = Bounds(a.max_member_bytes, a.max_entries, a.max_scan_bytes)
    _prepare_digests(a, scope)
    if a.text_out is not None and a.max_text_bytes > a.max_member_bytes:
        raise BindError("max_text_bytes exceeds max_member_bytes", "max_text_bytes")


@op("blob.extract", "Put one member of a stored archive (a wheel's *.dist-info/METADATA, an sdist's "
    "*/PKG-INFO) into a blob store, content addressed, reading only that member: a zip from its central "
    "directory (more than one member matching is 400 ARCHIVE_MEMBER_AMBIGUOUS), a tar (plain, gzip, bzip2 or xz) "
    "up to the first match. `member` is a glob matched segment by segment ('*' never crosses '/'). Every cost "
    "is bounded: the member's size as declared and as inflated (a zip bomb stops at max_member_bytes), a zip's "
    "directory (max_entries entries in at most max_entries KiB), a tar's headers (max_entries) and the bytes "
    "passed over to reach the member (max_scan_bytes). No member matching binds null (or, `required`, is 400 "
    "ARCHIVE_MEMBER_NOT_FOUND).",
    args={"store": RefTo("blob_store", "the blob store the member is put in"),
          "from": Template("the archive: a blob or form file handle ($blob, $upload)"),
          "member": Const("string", "the member's path, a glob such as *.dist-info/METADATA"),
          "format": Const("string", "the archive's format; auto: a zip by its signature, else a tar",
                          choices=list(FORMATS), required=False, default="auto"),
          "required": Const("boolean", "no matching member is 400 ARCHIVE_MEMBER_NOT_FOUND (default: null)",
                            required=False, default=False),
          "max_member_bytes": Const("integer", "the member's uncompressed size", required=False,
                                    default=16 * 1024 * 1024, minimum=1),
          "max_entries": Const("integer", "entries of a zip's directory, headers of a tar read", required=False,
                               default=65536, minimum=1),
          "max_scan_bytes": Const("integer", "decompressed bytes of a tar passed over to reach the member",
                                  required=False, default=512 * 1024 * 1024, minimum=1),
          "digests": _digests_arg("the member"),
          "max_text_bytes": Const("integer", "the largest member text_out binds", required=False,
                                  default=64 * 1024, minimum=1),
          "out": Output("variable receiving the member's blob handle (.digest, .size, .digests.<algorithm>, "
                        ".digests_base64.<algorithm>), or null"),
          "text_out": Output("variable receiving the member's text (UTF-8; undecodable bytes replaced), or null "
                             "when absent or larger than max_text_bytes", required=False,
                             schema=nullable(STRING))},
    errors=["400 INVALID_ARCHIVE", "400 ARCHIVE_MEMBER_AMBIGUOUS", "400 ARCHIVE_MEMBER_NOT_FOUND",
            "413 ARCHIVE_MEMBER_TOO_LARGE", "413 BLOB_TOO_LARGE", "400 BLOB_TOO_SMALL"],
    example={"store": "primary", "from": "$blob", "member": "*.dist-info/METADATA", "format": "zip",
             "out": "metadata"}, io=True, mutates=True, prepare=_prepare_extract)
def blob_extract(ctx, a):
    archive = getattr(a, "from").render(ctx)
    if not isinstance(archive, BlobHandle):
        raise DepotError("INVALID_SOURCE", 500, "blob.extract 'from' must be a blob handle")
    store = ctx.engine.blob_store(a.store.name)
    ctx.count_io()
    with ctx.streaming(), random_access(archive, ARCHIVE_BUFFER) as raw, \
            find_member(raw, a.format, a.matches, a.bounds) as member:
        staged = store.stage(member.stream, a.digests) if member is not None else None
    if staged is None:
        if a.required:
            raise DepotError("ARCHIVE_MEMBER_NOT_FOUND", 400, "the archive has no member %s" % a.member)
        ctx.vars[a.out] = None
    else:
        staged.verified = True  # bytes read from a stored blob: no client claims a digest for them
        _keep(ctx, store, staged)
        ctx.vars[a.out] = staged
    if a.text_out:
        ctx.vars[a.text_out] = _small_text(staged, a.max_text_bytes)


def _small_text(blob, limit):
    if blob is None or blob.size > limit:
        return None
    with blob.open() as stream:
        return stream.read(limit).decode("utf-8", errors="replace")


# --- upload sessions --------------------------------------------------------------------------------------

_SESSIONS = RefTo("upload_sessions", "the upload sessions (storage.upload_sessions)")
_SESSION_ID = Template("the session's id, as upload.start bound it (a path parameter, usually)", shape="string")
_HELD_RANGE = Output("variable receiving the bytes held as an HTTP range, `0-<last byte>` (`0-0` when empty): "
                     "what OCI's Range header says", required=False, schema=STRING)
_HELD_SIZE = Output("variable receiving the bytes the session holds", required=False, schema=COUNT)
_CHUNK_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?$")


def _upload_sessions(ctx, a):
    return ctx.engine.upload_sessions[a.sessions.name]


def _bind_held(ctx, a, size):
    if a.out_size:
        ctx.vars[a.out_size] = size
    if a.out_range:
        ctx.vars[a.out_range] = "0-%d" % max(size - 1, 0)


@op("upload.start", "Start a resumable upload (an upload session: storage.upload_sessions): an empty session whose "
    "id (32 hex digits, unguessable) later steps and requests name. The session lives in the store, not in the "
    "process, and is forgotten after its ttl_seconds without a change (garbage collection removes it).",
    args={"sessions": _SESSIONS, "out": Output("variable receiving the session's id", schema=STRING)},
    example={"sessions": "uploads", "out": "session"}, io=True, mutates=True)
def upload_start(ctx, a):
    ctx.count_io()
    ctx.vars[a.out] = _upload_sessions(ctx, a).start()


def _chunk_start(ctx, a):
    """Where the chunk says it starts (None: at the end); its length is checked against Content-Length."""
    text = a.range.render(ctx) if a.range is not None else None
    if text is None or text == "":
        return None
    match = _CHUNK_RANGE.match(str(text).strip())
    if match is None:
        raise DepotError("INVALID_RANGE", 400, "the chunk's range must be <first>-<last> (bytes, inclusive)",
                         "Content-Range")
    first, last = int(match.group(1)), int(match.group(2))
    length = ctx.request.content_length
    if last < first or (length is not None and last - first + 1 != length):
        raise DepotError("UPLOAD_RANGE_INVALID", 416, "the chunk's range %d-%d does not match its %s bytes"
                         % (first, last, length), "Content-Range")
    return first


@op("upload.append", "Append the request body to an upload session, streamed to the store (never held). With "
    "`range` (a Content-Range such as `0-1023` or `bytes 0-1023/*`), the chunk must start where the session's "
    "bytes end and be as long as the range says: otherwise 416 UPLOAD_RANGE_INVALID and nothing changes. A chunk "
    "is all or nothing: one cut short (the client gone, the size limit passed) leaves the session as it was. "
    "Concurrent appends to one session are serialised.",
    args={"sessions": _SESSIONS, "session": _SESSION_ID,
          "from": Source("request.body"),
          "range": Template("the chunk's byte range, inclusive (its Content-Range header); absent or empty: "
                            "appended at the end", required=False, shape="string"),
          "out_size": _HELD_SIZE, "out_range": _HELD_RANGE},
    errors=["404 UPLOAD_UNKNOWN", "416 UPLOAD_RANGE_INVALID", "400 INVALID_RANGE", "413 BLOB_TOO_LARGE"],
    example={"sessions": "uploads", "session": "{session}", "from": "request.body", "range": "$content_range?",
             "out_range": "held"},
    io=True, mutates=True, prepare=lambda a, scope: _request_body_only(a, "upload.append"),
    binds=lambda scope, raw: scope.reads_body("upload.append"),
    openapi=lambda o, a: o.binary_body())
def upload_append(ctx, a):
    ctx.count_io()
    offset = _chunk_start(ctx, a)
    with ctx.streaming():
        size = _upload_sessions(ctx, a).append(a.session.render(ctx), ctx.request.stream, offset)
    _bind_held(ctx, a, size)


def _request_body_only(a, name):
    if getattr(a, "from") != Source.REQUEST_BODY:
        raise BindError("%s appends the request body: `from` must be request.body" % name, "from")


@op("upload.status", "Read how many bytes an upload session holds (404 UPLOAD_UNKNOWN when it is not there: "
    "finished, cancelled or expired).",
    args={"sessions": _SESSIONS, "session": _SESSION_ID, "out_size": _HELD_SIZE, "out_range": _HELD_RANGE},
    errors=["404 UPLOAD_UNKNOWN"], example={"sessions": "uploads", "session": "{session}", "out_range": "held"},
    io=True)
def upload_status(ctx, a):
    ctx.count_io()
    session_id = a.session.render(ctx)
    size = _upload_sessions(ctx, a).size(session_id)
    if size is None:
        raise unknown_session(session_id)
    _bind_held(ctx, a, size)


@op("upload.finish", "End an upload session: its bytes become a blob of the sessions' blob store, as blob.put's "
    "do (sha-256 computed, moved into place at the transaction's commit, held from garbage collection). Check "
    "it with blob.verify_digest before committing (a mismatch discards the bytes). The session is gone either way.",
    args={"sessions": _SESSIONS, "session": _SESSION_ID,
          "out": Output("variable receiving 'sha256:<hex>'", schema=DIGEST),
          "out_size": Output("variable receiving the size in bytes", required=False, schema=COUNT),
          "out_blob": Output(_STORED_BLOB, required=False)},
    errors=["404 UPLOAD_UNKNOWN", "413 BLOB_TOO_LARGE", "400 BLOB_TOO_SMALL"],
    example={"sessions": "uploads", "session": "{session}", "out": "digest"}, io=True, mutates=True)
def upload_finish(ctx, a):
    ctx.count_io()
    sessions = _upload_sessions(ctx, a)
    store = ctx.engine.blob_store(a.sessions.blob_store)  # the sessions' definition, bound at load
    with ctx.streaming():
        staged = sessions.finish(a.session.render(ctx))
    _keep(ctx, store, staged)
    ctx.unverified_blobs[staged.digest] = (staged, ())
    ctx.vars[a.out] = staged.digest
    if a.out_size:
        ctx.vars[a.out_size] = staged.size
    if a.out_blob:
        ctx.vars[a.out_blob] = staged


@op("upload.abort", "Cancel an upload session and remove its bytes (404 UPLOAD_UNKNOWN when it is not there).",
    args={"sessions": _SESSIONS, "session": _SESSION_ID},
    errors=["404 UPLOAD_UNKNOWN"], example={"sessions": "uploads", "session": "{session}"}, io=True, mutates=True)
def upload_abort(ctx, a):
    ctx.count_io()
    session_id = a.session.render(ctx)
    if not _upload_sessions(ctx, a).abort(session_id):
        raise unknown_session(session_id)


# --- index ------------------------------------------------------------------------------------------------

def _prepare_index_query(a, scope):
    """At load: pick the index key the query's fields select (or `using` names), their order, the paging, and
    compile the row filter."""
    items = getattr(a.key, "items", None)
    constant = getattr(a.key, "value", None)
    static = isinstance(items, list) or isinstance(constant, dict)
    names = [k for k, _ in items] if isinstance(items, list) else list(constant or ())
    a.index_key, a.key_fields, a.key_values = None, None, None
    if a.using is not None and a.using not in {k.name for k in a.index.keys}:
        raise BindError("index %s has no key named %r" % (a.index.name, a.using), "using")
    if static:
        a.index_key = a.index.key_for(names, a.using)
        if a.index_key is None:
            raise BindError("index %s has no key%s whose leading fields are [%s]"
                            % (a.index.name, " " + a.using if a.using else "", ", ".join(names)), "key")
        a.key_fields = [f for f in a.index_key.fields if f in names]
        nodes = dict(items) if isinstance(items, list) else {k: expr.Const(v) for k, v in constant.items()}
        a.key_values = expr.ListNode([nodes[f] for f in a.key_fields]).render  # ctx -> the values, in key order
    if (a.page is not None or a.page_size is not None) and (a.limit is not None or a.offset is not None):
        raise BindError("page/page_size and limit/offset are two ways to say the same; use one", "page")
    _check_keyset(a)
    if a.all:
        scope.binds_stream(a.out)
    a.limit_value = _constant_int(a.limit, "limit", 1, MAX_QUERY_LIMIT) if a.limit is not None else None
    a.offset_value = _constant_int(a.offset, "offset", 0, MAX_OFFSET) if a.offset is not None else 0
    a.window = _window(None, a) if all(isinstance(n, expr.Const) or n is None
                                       for n in (a.limit, a.offset, a.page, a.page_size)) else None
    a.filter = None
    if a.where is not None:
        refs = []
        try:
            predicate = compile_condition(a.where, "where", refs=refs, scheme=SCHEMES.get(a.index.scheme or ""),
                                          no_scheme="index %s names no entity, and the entities version "
                                                    "differently" % a.index.name)
        except (ConditionError, expr.TemplateSyntaxError) as exc:
            raise BindError(str(exc), "where") from None
        scope.uses([r for r in refs if r.namespace == "var"])  # {field} in a filter reads the row
        a.filter = predicate
    # the most common query (`latest`, a metadata page): fields matched at load, a constant window, nothing but
    # the rows wanted; index_query reads it without the general path's questions
    a.plain = (a.key_values is not None and a.window is not None and not a.all and a.filter is None
               and a.namespace_field is None and a.after is None and a.after_row is None and not a.total_out
               and not a.next_out)


def _check_keyset(a):
    """`all` reads every row: no window. `after` continues from a row: page and offset, which count from the
    first row, do not go with it."""
    if a.all:
        window = [n for n in ("limit", "offset", "page", "page_size", "next_out") if getattr(a, n) is not None]
        if window:
            raise BindError("all binds every row (streamed as the response is written): it takes no %s"
                            % ", ".join(window), "all")
    if a.after is not None and a.after_row is not None:
        raise BindError("after and after_row both say where to start: use one", "after_row")
    if a.after_row is not None and (a.page is not None or a.offset is not None):
        raise BindError("after_row continues from a row: page and offset count from the first row; give the "
                        "page's size as limit or page_size", "after_row")
    if a.after is not None and a.offset is not None:
        raise BindError("after continues from a cursor: offset counts from the first row; give the page's size "
                        "as limit or page_size", "after")


def _constant_int(node, name, low, high):
    if not isinstance(node, expr.Const):
        return None
    try:
        return _bounded_int(node.value, name, low, high)
    except DepotError as exc:
        raise BindError(exc.message, name) from None


@op("index.query", "Read rows of an index in its sort order (first row = highest version for artifact_versions). "
    "Page with limit/offset or page/page_size (at most %d a page), or by keyset: `next_out` receives a cursor "
    "when more rows follow, and `after` reads on from it (stable while rows are added or removed; a route may "
    "offer both, and a request giving `after` may not give a page past the first: a cursor's cost does not grow "
    "with the rows before it, a page number's does). `all: true` "
    "binds every row, however many, read in batches as the response is written (respond.json streams it); "
    "`where` filters rows ({field} reads the row, $var the request); `total_out` receives the number of "
    "matching rows (all of them, whatever the page or cursor)." % MAX_PAGE_SIZE,
    args={"index": RefTo("index", "the index"),
          "key": Template("values of the index key's leading fields ({} for all rows)", shape="object"),
          "using": Const("string", "the index key to read, by name (default: the first whose fields match)",
                         required=False),
          "limit": Template("rows to return (at most %d)" % MAX_QUERY_LIMIT, required=False),
          "offset": Template("rows to skip", required=False),
          "page": Template("page number from 1", required=False),
          "page_size": Template("rows a page (at most %d)" % MAX_PAGE_SIZE, required=False),
          "after": Template("a cursor a query of this key gave in `next_out`: the rows after that row (an "
                            "absent or empty value: from the first row)", required=False, shape="string"),
          "after_row": Template("a row to read on from, by its key and sort fields (OCI's `last` tag): the rows "
                                "after where it falls in the key's order, whether or not it is there; a row "
                                "missing one of those fields reads from the first row", required=False,
                                shape="object"),
          "all": Const("boolean", "bind every row of the key (no page): a listing read in batches as the "
                       "response is written, in bounded memory; only an argument that streams takes it "
                       "(respond.json's body), whole", required=False, default=False),
          "where": Const("object", "a condition each row must meet", required=False),
          "namespace_field": Const("string", "the row field naming its namespace: once namespace grants exist, "
                                   "rows of namespaces the caller may not read are left out (and not counted)",
                                   required=False),
          "out": Output("variable receiving the list of rows", schema={"type": "array", "items": {"type": "object"}}),
          "total_out": Output("variable receiving the number of matching rows", required=False,
                              schema=COUNT),
          "next_out": Output("variable receiving the cursor of the page's last row when more rows follow "
                             "(pass it as `after`), else null", required=False, schema=nullable(STRING))},
    example={"index": "artifact_versions", "key": {"namespace": "{namespace}", "name": "{name}"},
             "limit": 1, "out": "rows"},
    errors=["400 INVALID_QUERY"], io=True, prepare=_prepare_index_query)
def index_query(ctx, a):
    if a.plain:
        offset, limit = a.window
        # by position (key, values, after, offset, limit): every plain query's path
        rows = ctx.vars[a.out] = list(ctx.engine.indexes.rows(a.index_key, a.key_values(ctx), None, offset, limit))
        ctx.count_io(1 + len(rows))
        return
    if a.key_values is not None:  # the usual case: the key's fields were matched to the index at load
        index_key, values = a.index_key, a.key_values(ctx)
    else:  # the key is one reference to an object: its fields are known only now
        key = a.key.render(ctx)
        index_key = a.index.key_for(key, a.using)
        if index_key is None:
            raise DepotError("INDEX_KEY_UNKNOWN", 500, "index %s has no key over %s" % (a.index.name, sorted(key)))
        values = [key[f] for f in index_key.fields if f in key]
    keep = None if a.filter is None and a.namespace_field is None else _row_filter(ctx, a)
    indexes = ctx.engine.indexes
    after = _read_cursor(a.after.render(ctx)) if a.after is not None else \
        _row_cursor(indexes, index_key, a.after_row.render(ctx)) if a.after_row is not None else None
    if a.all:  # read as the response is written: one I/O op now, none charged while it streams
        rows = ctx.vars[a.out] = RowStream(indexes, index_key, values, after, keep)
        ctx.count_io()
        if a.total_out:
            ctx.vars[a.total_out] = indexes.count(index_key, values) if keep is None else sum(1 for _ in rows)
        return
    offset, limit = _cursor_window(a.window or _window(ctx, a), after)
    wanted = limit + 1 if a.next_out else limit  # one row more tells whether another page follows
    if keep is None:
        rows = list(indexes.rows(index_key, values, after=after, offset=offset, limit=wanted))
        total = indexes.count(index_key, values) if a.total_out else None
    else:
        rows, total = _filtered_window(indexes.rows(index_key, values, after=after), a, offset, wanted, keep)
        if a.total_out and after is not None:  # the total counts every matching row, not those after the cursor
            total = sum(1 for row in indexes.rows(index_key, values) if keep(row))
    _bind_page(ctx, a, rows, total, limit, lambda row: indexes.cursor(index_key, row))


def _cursor_window(window, after):
    """``window`` (offset, limit), refused when a cursor is given with a page past the first."""
    if window[0] and after is not None:
        raise bad_request("INVALID_QUERY", "after reads on from a cursor: leave page out (or give 1)", "page")
    return window


def _bind_page(ctx, a, rows, total, limit, cursor_of):
    """Bind a page of ``rows`` (read with one more than ``limit`` when `next_out` asks whether more follow), its
    next cursor (``cursor_of`` the last row) and the total."""
    if a.next_out:
        more = len(rows) > limit
        del rows[limit:]
        ctx.vars[a.next_out] = _cursor_text(cursor_of(rows[-1])) if more else None
    ctx.count_io(1 + len(rows))
    ctx.vars[a.out] = rows
    if a.total_out:
        ctx.vars[a.total_out] = total


def _prepare_index_search(a, scope):
    """At load: the index must declare `text`; the page window is decided when it is constant."""
    if a.index.text is None:
        raise BindError("index %s declares no text fields (indexes.%s.text) to search"
                        % (a.index.name, a.index.name), "index")
    a.window = _paged(None, a) if all(isinstance(n, expr.Const) or n is None
                                       for n in (a.page, a.page_size)) else None
    a.filter = None  # _row_filter's `where`: a search filters by namespace only


def _every_row(row):
    return True


def _search_terms(ctx, a):
    try:
        return text_search.terms(a.q.render(ctx))
    except text_search.QueryError as exc:
        raise bad_request("INVALID_QUERY", str(exc), "q") from None


@op("index.search", "Search an index's declared text fields (`indexes.<name>.text`): the rows matching every "
    "whitespace-separated term of q, case-insensitively (a term of 3 characters or more anywhere in a field, a "
    "shorter one at the start of a field or of one of its words), in row id order. Its cost follows the rarest "
    "term, not the number of rows. Page with page/page_size (at most %d a page), or by keyset: `next_out` "
    "receives a cursor when more rows follow, and `after` reads on from it (a request giving `after` may not give "
    "a page past the first, as with index.query); "
    "`total_out` receives the number of matching rows (all of them, whatever the page or cursor)." % MAX_PAGE_SIZE,
    args={"index": RefTo("index", "the index (one declaring `text`)"),
          "q": Template("the query: 1 to %d terms, at most %d characters" % (text_search.MAX_TERMS,
                                                                          text_search.MAX_QUERY_CHARS)),
          "page": Template("page number from 1", required=False),
          "page_size": Template("rows a page (at most %d; default 50)" % MAX_PAGE_SIZE, required=False),
          "after": Template("a cursor a search of this index gave in `next_out`: the matches after that row (an "
                            "absent or empty value: from the first)", required=False, shape="string"),
          "namespace_field": Const("string", "the row field naming its namespace: once namespace grants exist, "
                                   "rows of namespaces the caller may not read are left out (and not counted)",
                                   required=False),
          "out": Output("variable receiving the list of rows", schema={"type": "array", "items": {"type": "object"}}),
          "total_out": Output("variable receiving the number of matching rows", required=False, schema=COUNT),
          "next_out": Output("variable receiving the cursor of the page's last row when more rows follow "
                             "(pass it as `after`), else null", required=False, schema=nullable(STRING))},
    example={"index": "packages", "q": "{q}", "page_size": 20, "out": "rows"},
    errors=["400 INVALID_QUERY"], io=True, prepare=_prepare_index_search)
def index_search(ctx, a):
    terms = _search_terms(ctx, a)
    keep = None if a.namespace_field is None else _row_filter(ctx, a)
    indexes = ctx.engine.indexes
    after = _read_cursor(a.after.render(ctx)) if a.after is not None else None
    offset, limit = _cursor_window(a.window or _paged(ctx, a), after)
    wanted = limit + 1 if a.next_out else limit
    rows, total = _filtered_window(indexes.search(a.index, terms, after), a, offset, wanted, keep or _every_row)
    if a.total_out and after is not None:  # the total counts every match, not those after the cursor
        total = sum(1 for row in indexes.search(a.index, terms) if keep is None or keep(row))
    _bind_page(ctx, a, rows, total, limit, lambda row: indexes.search_cursor(a.index, row))


MAX_CURSOR = 4096  # characters: a cursor is an index entry's key, far shorter
_CURSOR = re.compile(r"[A-Za-z0-9_-]*")


def _row_cursor(indexes, index_key, row):
    """The position of ``row`` (real or not) in the key's order; None when it lacks a field the order needs."""
    needed = list(index_key.fields) + [field for field, _, _ in index_key.sorts]
    if not isinstance(row, dict) or any(row.get(field) is None for field in needed):
        return None
    try:
        return indexes.cursor(index_key, row)
    except (KeyError, TypeError, ValueError):
        return None


def _cursor_text(cursor):
    """An index store's cursor as a query parameter: base64url, unpadded. Opaque: a client passes it back."""
    return base64.urlsafe_b64encode(cursor).rstrip(b"=").decode("ascii")


def _read_cursor(text):
    """The store cursor ``text`` (from _cursor_text) stands for; None when absent. Any bytes are safe to pass
    on: a store reads only the key's rows, from where the cursor falls among them."""
    if text is None or text == "":
        return None
    if not isinstance(text, str) or len(text) > MAX_CURSOR or not _CURSOR.fullmatch(text):
        raise bad_request("INVALID_QUERY", "after is not a cursor a listing gave", "after")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise bad_request("INVALID_QUERY", "after is not a cursor a listing gave", "after") from None


def _window(ctx, a):
    """(offset, limit) from limit/offset or page/page_size."""
    if a.page is not None or a.page_size is not None:
        return _paged(ctx, a)
    limit = a.limit_value or (_bounded_int(a.limit.render(ctx), "limit", 1, MAX_QUERY_LIMIT)
                              if a.limit is not None else 100)
    offset = a.offset_value if a.offset is None or a.offset_value is not None else \
        _bounded_int(a.offset.render(ctx), "offset", 0, MAX_OFFSET)
    return offset, limit


def _paged(ctx, a):
    """(offset, limit) from page/page_size (defaults 1 and 50)."""
    page = _bounded_int(a.page.render(ctx) if a.page is not None else 1, "page", 1, MAX_PAGE)
    size = _bounded_int(a.page_size.render(ctx) if a.page_size is not None else 50, "page_size", 1, MAX_PAGE_SIZE)
    return (page - 1) * size, size


def _row_filter(ctx, a):
    """The test a row must pass: the query's `where`, and with `namespace_field` while grants exist, that the
    caller may read the row's namespace. None: every row passes."""
    where = a.filter
    readable = None
    if a.namespace_field is not None and (ctx.engine.access.active or _restricted(ctx.principal)):
        access, principal, field = ctx.engine.access, ctx.principal, a.namespace_field
        def readable(row):  # a row without a namespace is not namespaced
            namespace = row.get(field)
            return not isinstance(namespace, str) or access.may_read(principal, namespace)
    if where is None:
        return readable
    variables = ctx.vars
    if readable is None:
        return lambda row: where(RowContext(row, variables))
    return lambda row: readable(row) and where(RowContext(row, variables))


def _restricted(principal):
    """An access token: it reads only the namespaces of its resources, grants or not."""
    return principal is not None and "resources" in principal


def _filtered_window(candidates, a, offset, limit, keep):
    """The rows in [offset, offset + limit) of the ``candidates`` ``keep`` accepts, and how many it accepts."""
    rows, matched = [], 0
    for row in candidates:
        if not keep(row):
            continue
        matched += 1
        if offset < matched <= offset + limit:
            rows.append(row)
        elif matched > offset + limit and a.total_out is None:
            break
    return rows, matched


def _bounded_int(value, name, low, high):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise bad_request("INVALID_QUERY", "%s must be an integer" % name, name)
    if number < low or (high is not None and number > high):
        raise bad_request("INVALID_QUERY", "%s must be between %s and %s" % (name, low, high), name)
    return number


def _index_row(ctx, a):
    return _checked_row(a.index, dict(a.value.render(ctx)) if a.value is not None else {}, a.key.render(ctx))


def _checked_row(index, row, key):
    for field, value in key.items():
        if row.setdefault(field, value) != value:
            raise DepotError("INDEX_KEY_MISMATCH", 500, "index key field %r differs from the row's value" % field)
    index.rowid(row)  # fail now, naming the missing field, rather than at commit
    return row


@op("index.upsert", "Insert or replace a row; its position follows the index's key and sort fields.",
    args={"index": RefTo("index", "the index"), "key": Template("the index key's fields", shape="object"),
          "value": Template("the row (key fields are added to it)", shape="object")},
    writes=True, errors=["409 UNIQUE_VIOLATION"],
    example={"index": "tags", "key": {"namespace": "{namespace}"}, "value": {"namespace": "{namespace}"}}, io=True)
def index_upsert(ctx, a):
    row = _index_row(ctx, a)
    ctx.count_io()
    with ctx.writing() as txn:
        txn.index_upsert(a.index, row)


def _one_row_or_rows(a, scope):
    if a.rows is not None and a.value is not None:
        raise BindError("`rows` lists the rows to remove; `value` names one: give one of them", "rows")


@op("index.delete", "Remove the row identified by key (and value) from an index; with `rows`, every row of a list "
    "index.query bound (each identified by its own fields, which must agree with `key`): the tags naming an "
    "unpublished version, say, found with a `where`.",
    args={"index": RefTo("index", "the index"), "key": Template("the index key's fields", shape="object"),
          "value": Template("further fields identifying the row", required=False, shape="object"),
          "rows": Template("a list of rows to remove (as index.query binds them); an empty list removes nothing",
                           required=False)},
    writes=True, example={"index": "tags", "key": {"namespace": "{namespace}", "name": "{name}", "tag": "{tag}"}},
    errors=["500 INVALID_TEMPLATE_VALUE"], io=True, prepare=_one_row_or_rows)
def index_delete(ctx, a):
    if a.rows is None:
        rows = [_index_row(ctx, a)]
    else:
        listed = a.rows.render(ctx)
        if not isinstance(listed, list) or not all(isinstance(row, dict) for row in listed):
            raise DepotError("INVALID_TEMPLATE_VALUE", 500, "index.delete's rows is a list of rows")
        key = a.key.render(ctx)
        rows = [_checked_row(a.index, dict(row), key) for row in listed]
    ctx.count_io()
    with ctx.writing() as txn:
        for row in rows:
            txn.index_delete(a.index, row)


# --- cache ------------------------------------------------------------------------------------------------

_CACHE_KINDS = ["response", "blob"]


@op("cache.get", "Look up a cache entry (response or blob cache); a miss or expiry sets the hit flag false.",
    args={"kind": Const("string", "caching.response_cache or caching.blob_cache", choices=_CACHE_KINDS),
          "key": Template("cache key", shape="string"),
          "hit_out": Output("variable receiving true/false", schema={"type": "boolean"}),
          "value_out": Output("variable receiving the value")},
    example={"kind": "response", "key": "blob_resp/{namespace}/{name}", "hit_out": "hit", "value_out": "cached"},
    io=True)
def cache_get(ctx, a):
    ctx.count_io()
    hit, value = ctx.engine.cache.get(a.kind, a.key.render_key(ctx))
    ctx.vars[a.hit_out] = hit
    ctx.vars[a.value_out] = value


@op("cache.put", "Store a value (blob handles are kept by reference) for ttl_seconds; entries larger than "
    "max_entry_bytes are skipped.",
    args={"kind": Const("string", "caching.response_cache or caching.blob_cache", choices=_CACHE_KINDS),
          "key": Template("cache key", shape="string"), "value": Template("the value to cache"),
          "ttl_seconds": Const("integer", "lifetime; default: the cache's default_ttl_seconds", required=False,
                               minimum=1)},
    example={"kind": "response", "key": "blob_resp/{namespace}/{name}", "value": {"body": "$blob"},
             "ttl_seconds": 300}, io=True)
def cache_put(ctx, a):
    ctx.count_io()
    ctx.engine.cache.put(a.kind, a.key.render_key(ctx), a.value.render(ctx), a.ttl_seconds)


# --- proxy ------------------------------------------------------------------------------------------------

@op("proxy.fetch", "Fetch from an upstream with its timeouts and bounded retries; the body streams to a "
    "temporary file. Output: {status, headers, body, size}; status is null when the upstream was unreachable.",
    args={"upstream": RefTo("upstream", "the upstream (base_url, timeouts, retry)"),
          "method": Const("string", "HTTP method", choices=["GET", "HEAD"], required=False, default="GET"),
          "path": Template("path appended to base_url", shape="string"),
          "out": Output("variable receiving {status, headers, body, size, digest}", schema={"type": "object"})},
    errors=["404 PROXY_DISABLED"],
    example={"upstream": "originA", "method": "GET", "path": "/v1/{namespace}/{name}", "out": "up_resp"}, io=True)
def proxy_fetch(ctx, a):
    if not ctx.engine.features.get("proxy_enabled", True):
        raise DepotError("PROXY_DISABLED", 404, "proxying is disabled (features.proxy_enabled)")
    ctx.count_io()
    with ctx.streaming():
        ctx.vars[a.out] = ctx.engine.fetch_upstream(ctx, a.upstream, a.method, a.path.render(ctx))


# --- events -----------------------------------------------------------------------------------------------

@op("emit.event", "Append an event to the durable log (with the transaction's commit, or at once), validated "
    "against the event type's schema.",
    args={"type": RefTo("event_type", "the event type (its schema validates the payload)"),
          "payload": Template("the payload", shape="object"),
          "id_out": Output("variable receiving the event's id (unique: a revision a later step can write, such as "
                           "the one a cached page's key names; apply pipelines read it as {event.event_id})",
                           required=False, schema=STRING)},
    errors=["400 EVENT_INVALID", "413 EVENT_TOO_LARGE"],
    example={"type": "artifact.published", "payload": {"namespace": "{namespace}"}}, io=True, mutates=True)
def emit_event(ctx, a):
    payload = a.payload.render(ctx)
    a.type.check(payload, "EVENT_INVALID", 400)
    record = {"event_id": uuid.uuid4().hex, "type": a.type.name, "at": _now(), "payload": payload}
    log = ctx.engine.event_log
    limit = log.settings.max_event_bytes
    if len(dumps(record)) > limit:
        raise too_large("event exceeds max_event_bytes (%d)" % limit, "EVENT_TOO_LARGE")
    ctx.count_io()
    with ctx.writing() as txn:
        txn.append(log, record)
    if a.id_out:
        ctx.vars[a.id_out] = record["event_id"]


# --- respond ----------------------------------------------------------------------------------------------

_STATUS = dict(minimum=100, maximum=599)


_HEADERS = Template("extra headers (not Content-Type: see content_type)", required=False, shape="object")


def _headers(ctx, a):
    """A respond step's headers; one whose value is absent or null (an optional reference) is not sent."""
    if a.headers is None:
        return None
    headers = a.headers.render(ctx)
    if isinstance(headers, dict) and None in headers.values():
        return {name: value for name, value in headers.items() if value is not None}
    return headers


def _content_type_apart(a, scope):
    """Content-Type is the content_type argument's, checked at load: a header of that name would be overridden.
    ``a.fixed_type``: the header of a constant content type (None: rendered per request)."""
    headers = a.headers
    names = headers.value if isinstance(headers, expr.Const) else dict(getattr(headers, "items", ()))
    if isinstance(names, dict) and any(name.lower() == "content-type" for name in names):
        raise BindError("Content-Type is set by the content_type argument, not a header", "headers")
    a.fixed_type = a.content_type.fixed.header if a.content_type.fixed is not None else None


def _streams_listing(a, scope):
    """Whether the body holds a listing read whole (index.query `all`): then it is written as it is read."""
    a.streamed = any(ref.namespace == "var" and ref.root in scope.stream_vars for ref in expr.whole_refs(a.body))


def _prepare_json(a, scope):
    _content_type_apart(a, scope)
    _streams_listing(a, scope)


@op("respond.json", "End the pipeline with a JSON response; an open transaction is aborted. A listing read whole "
    "(index.query with `all`) in the body is written as its rows are read, in bounded memory (no "
    "Content-Length: the body is sent chunked).",
    args={"status": Const("integer", "HTTP status", required=False, default=200, **_STATUS),
          "body": Template("the JSON body", streams=True), "headers": _HEADERS,
          "content_type": MediaType("the Content-Type: application/json or a type with the +json suffix "
                                    "(application/vnd.pypi.simple.v1+json), or a variable holding one (checked "
                                    "per request: 500 INVALID_CONTENT_TYPE otherwise)", required=False,
                                    default="application/json", json=True)},
    errors=["500 INVALID_CONTENT_TYPE"], example={"status": 200, "body": {"ok": True}},
    prepare=_prepare_json, openapi=lambda o, a: o.json_response(a.status, a.body, a.content_type),
    terminal=True)
def respond_json(ctx, a):
    headers = _headers(ctx, a) if a.headers is not None else None
    body = a.body.render(ctx)
    # by position (status, headers, json, content_type, streamed): this is every JSON answer's path
    ctx.response = ResponseSpec(a.status, headers, body, a.fixed_type or a.content_type.resolve(ctx).header,
                                a.streamed)


def _compile_page(a, scope):
    """The page, compiled once: escaping substituted values for an HTML or XML content type, not for another; both
    ways when the content type is known only per request."""
    _content_type_apart(a, scope)
    fixed = a.content_type.fixed
    a.page = a.template.compile(fixed.markup if fixed is not None else None)


@op("respond.render", "End the pipeline with a page rendered from a Jinja2 template (HTML, or any text): the "
    "template is compiled at load in Jinja's sandbox and sees the pipeline's fields, vars and principal (see "
    "\"Page templates\"); for an HTML or XML content type every substituted value is escaped. The page streams: "
    "loops over a lazy sequence of rows render row by row, and a page is never held whole. An open transaction "
    "is aborted.",
    args={"template": PageTemplate("the page's Jinja2 source: a string, or a list of lines joined with newlines"),
          "status": Const("integer", "HTTP status", required=False, default=200, **_STATUS),
          "content_type": MediaType("the Content-Type (charset=utf-8 is added when it names none), or a variable "
                                    "holding one, such as http.negotiate's choice", required=False,
                                    default="text/html; charset=utf-8"),
          "headers": _HEADERS,
          "cache_key": Template("keep the rendered page in the response cache (caching.response_cache: its TTL "
                                "and max_entry_bytes) under this key, and answer a later request whose key is "
                                "the same from it without rendering: the key must name everything the page "
                                "depends on (a revision written with every change, the negotiated type, "
                                "{request.base_url} when it writes URLs); a key that renders empty (an optional "
                                "reference absent: data from before any revision was written) renders the page "
                                "and keeps nothing", required=False, shape="string")},
    errors=["500 RENDER_FAILED", "500 INVALID_CONTENT_TYPE"],
    example={"template": ["<!DOCTYPE html>", "<title>{{ fields.name }}</title>",
                          "{% for row in vars.rows %}<a href=\"{{ row.url }}\">{{ row.file }}</a><br>{% endfor %}"],
             "content_type": "text/html; charset=utf-8", "headers": {"Cache-Control": "max-age=600"}},
    prepare=_compile_page, openapi=lambda o, a: o.text_response(a.status, a.content_type), terminal=True)
def respond_render(ctx, a):
    kind = a.content_type.resolve(ctx)
    headers = _headers(ctx, a)
    key = a.cache_key.render_key(ctx) if a.cache_key is not None else ""
    stream = _cached_page(ctx, a, kind, key) if key else a.page.stream(ctx, kind.markup)
    ctx.response = ResponseSpec(a.status, headers, stream=stream, content_type=kind.text_header)


def _cached_page(ctx, a, kind, key):
    """The page the response cache kept under ``key``, or the page rendered now and kept once whole."""
    cache, key = ctx.engine.cache, "page/" + key
    ctx.count_io()
    hit, text = cache.get("response", key)
    if hit and isinstance(text, str):
        return CachedText(text)
    return a.page.stream(ctx, kind.markup, keep=lambda whole: cache.put("response", key, whole))


@op("respond.bytes", "End the pipeline streaming a blob from disk as an attachment (Content-Disposition, "
    "Last-Modified). HEAD, Range, ETag, If-None-Match, If-Modified-Since and If-Range are honoured; a Range "
    "header asking for several ranges is answered with the whole body (200) when any of them is satisfiable, "
    "416 when none is.",
    args={"status": Const("integer", "HTTP status", required=False, default=200, **_STATUS),
          "body": Template("a blob handle ($blob)"), "headers": Template("extra headers", required=False,
                                                                         shape="object"),
          "filename": Template("the download's file name, e.g. {name}-{version}-{variant} (Content-Disposition: "
                               "attachment; a name that is not plain ASCII is also sent RFC 5987-encoded); "
                               "default: sha256-<hex> of the blob", required=False, shape="string"),
          "last_modified": Template("when the bytes were published, an ISO 8601 timestamp such as "
                                    "$meta.created_at (Last-Modified, If-Modified-Since); default: the blob "
                                    "file's modification time", required=False)},
    errors=BLOB_ANSWER_ERRORS + ("500 INVALID_TIMESTAMP",), answers=BLOB_ANSWERS, inputs=BLOB_INPUTS,
    example={"status": 200, "body": "$blob", "headers": {"Content-Type": "application/octet-stream"},
             "filename": "{name}-{version}-{variant}", "last_modified": "$meta.created_at"},
    openapi=lambda o, a: o.bytes_response(a.status), terminal=True)
def respond_bytes(ctx, a):
    body = a.body.render(ctx)
    if not isinstance(body, BlobHandle):
        raise DepotError("INVALID_BODY", 500, "respond.bytes needs a blob handle as its body")
    headers = _headers(ctx, a)
    filename = a.filename.render(ctx) if a.filename is not None else None
    modified = _timestamp(a.last_modified.render(ctx)) if a.last_modified is not None else None
    ctx.response = ResponseSpec(a.status, headers, blob=body, filename=filename or None, last_modified=modified)


def _timestamp(value):
    """An ISO 8601 timestamp as an aware datetime (UTC when it names no zone); None stays None."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise DepotError("INVALID_TIMESTAMP", 500, "respond.bytes last_modified must be an ISO 8601 timestamp, "
                         "not %r" % (value,)) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@op("respond.redirect", "End the pipeline with a redirect.",
    args={"status": Const("integer", "HTTP status", required=False, default=302, choices=[301, 302, 303, 307, 308]),
          "location": Template("the Location header", shape="string")},
    example={"status": 307, "location": "/v1/{namespace}/{name}/{version}/{variant}/blob"},
    openapi=lambda o, a: o.redirect_response(a.status), terminal=True)
def respond_redirect(ctx, a):
    ctx.response = ResponseSpec(a.status, {"Location": a.location.render(ctx)},
                                json={"location": a.location.render(ctx)})


@op("respond.empty", "End the pipeline with an answer that has no body (and no Content-Type): 201, 202 or 204 "
    "with headers such as Location or Range. An open transaction is aborted.",
    args={"status": Const("integer", "HTTP status", required=False, default=204, minimum=200, maximum=399),
          "headers": Template("the answer's headers", required=False, shape="object")},
    example={"status": 202, "headers": {"Location": "/v2/{namespace}/{repo}/blobs/uploads/{$session}",
                                        "Range": "$held"}},
    openapi=lambda o, a: o.empty_response(a.status, a.headers), terminal=True)
def respond_empty(ctx, a):
    headers = _headers(ctx, a)
    ctx.response = ResponseSpec(a.status, headers, stream=EMPTY_BODY)


@op("respond.error", "End the pipeline with the JSON error envelope; an open transaction is aborted.",
    args={"status": Const("integer", "HTTP status", minimum=400, maximum=599),
          "code": Const("string", "stable error code"), "message": Template("human-readable message", shape="string"),
          "field": Const("string", "the offending field", required=False)},
    example={"status": 404, "code": "NOT_FOUND", "message": "Artifact not found"},
    openapi=lambda o, a: o.error_response(a.status, a.code), terminal=True)
def respond_error(ctx, a):
    raise DepotError(a.code, a.status, a.message.render(ctx), a.field)


# --- time / string ----------------------------------------------------------------------------------------

def _now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@op("time.now_iso8601", "Bind the current UTC time, ISO 8601 with milliseconds and 'Z'.",
    args={"out": Output("variable receiving the timestamp", schema={"type": "string", "format": "date-time"})},
    example={"out": "now"})
def time_now_iso8601(ctx, a):
    ctx.vars[a.out] = _now()


@op("string.format", "Render a string template into a variable (always a string: an absent optional reference "
    "renders as nothing, a non-string value as its JSON).",
    args={"template": Template("the string to render", shape="string"),
          "out": Output("variable receiving the string", schema=STRING)},
    example={"template": "{namespace}/{name}@{version}", "out": "coordinates"})
def string_format(ctx, a):
    value = a.template.render(ctx)
    if value is None:  # the template is one optional reference, absent: its segment disappears
        value = ""
    ctx.vars[a.out] = value if isinstance(value, str) else json.dumps(value)


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_value_target(a, scope):
    """value.bind names where its value goes: a variable, a field (never a path parameter: the URL decides
    those), or both."""
    if a.field is None and a.out is None:
        raise BindError("value.bind needs `out` (a variable), `field` (a field), or both", "out")
    if a.field is not None and not _FIELD_NAME.match(a.field):
        raise BindError("a field name is an identifier, got %r" % a.field, "field")
    if a.field is not None and a.field in scope.params:
        raise BindError("{%s} is a path parameter: the URL decides it, a step cannot replace it" % a.field, "field")


@op("value.bind", "Bind a template's value, of any JSON type, to a variable and/or a field: a part of a parsed "
    "body picked out by reference and filters (`{$body.versions|keys|first}`, the one version an npm publish "
    "names), so that later steps read it by name and entity rules can normalize and validate it as a field. A "
    "field it binds replaces one a JSON body brought; path parameters cannot be replaced (a load error).",
    args={"value": Template("the value"),
          "out": Output("variable receiving the value", required=False),
          "field": Const("string", "field receiving the value (a name; not a path parameter)", required=False)},
    example={"value": "{$body.versions|keys|first}", "field": "version"},
    prepare=_check_value_target, binds=lambda scope, raw: scope.bind_fields([raw["field"]] if raw.get("field") else []))
def value_bind(ctx, a):
    value = a.value.render(ctx)
    if a.out:
        ctx.vars[a.out] = value
    if a.field:
        ctx.fields[a.field] = value
