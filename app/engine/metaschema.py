"""The shape of a repository-type schema, checked first so later checks can rely on it."""
import re

PACK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # a route pack's name: its route ids' prefix
# a pack's mount: one or more path segments, each a literal or one {parameter}; no trailing slash
PACK_MOUNT = r"^(/([A-Za-z0-9._~-]+|\{[A-Za-z_][A-Za-z0-9_]*\}))+$"

_STEP = {
    "type": "object",
    "required": ["op"],
    "properties": {"op": {"type": "string"}, "args": {"type": "object"}, "when": {"type": "object"},
                   "id": {"type": "string"}},
    "additionalProperties": False,
}
_PIPELINE = {"type": "array", "items": _STEP}
# a versioning declaration: `entities.versioning` (the default) or an entity's own; the compiler checks the names
_VERSIONING = {
    "type": "object",
    "properties": {"scheme": {"type": "string"}, "ordering": {"type": "string"},
                   "allow_prerelease": {"type": "boolean"}, "latest_policy": {"type": "object"}},
}
# WWW-Authenticate of a route's 401s (app/engine/policies.py reads what it says)
# a route's error answers in its protocol's format: a template over {error.code}, {error.message}, {error.field},
# {error.status} (app.engine.error_bodies)
ERROR_BODY = {"type": "object"}
_CHALLENGE = {"type": "string", "minLength": 1, "maxLength": 1024}

METASCHEMA = {
    "type": "object",
    "required": ["ops", "api"],
    "properties": {
        "schema_version": {"type": "string"},
        "type_id": {"type": "string"},
        "description": {"type": "string"},
        "capabilities": {"type": "object"},
        "entities": {
            "type": "object",
            "properties": {"versioning": _VERSIONING},
            "additionalProperties": {
                "type": "object",
                "required": ["fields"],
                "properties": {
                    "versioning": _VERSIONING,
                    "fields": {"type": "object", "additionalProperties": {
                        "type": "object",
                        "properties": {"type": {"enum": ["string"]}, "optional": {"type": "boolean"},
                                       "normalize": {"type": "array", "items": {"type": "string"}}},
                    }},
                    "primary_key": {"type": "array", "items": {"type": "string"}},
                    "constraints": {"type": "array", "items": {
                        "type": "object", "required": ["field"],
                        "properties": {"field": {"type": "string"}, "regex": {"type": "string"},
                                       "when_present": {"type": "boolean"}, "min_length": {"type": "integer"},
                                       "max_length": {"type": "integer"}, "enum": {"type": "array"},
                                       "reserved": {"type": "array", "items": {"type": "string"}},
                                       "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}},
                        "additionalProperties": False}},
                },
            },
        },
        "storage": {
            "type": "object",
            "properties": {
                "blob_stores": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["kind"],
                    "properties": {"kind": {"type": "string"}, "root": {"type": "string"},
                                   "bucket": {"type": "string"}, "prefix": {"type": "string"},
                                   "endpoint_url": {"type": "string"}, "region": {"type": "string"},
                                   "addressing": {"type": "object"},
                                   "limits": {"type": "object", "properties": {
                                       "max_blob_bytes": {"type": "integer", "minimum": 0},
                                       "min_blob_bytes": {"type": "integer", "minimum": 0}}}}}},
                "kv_stores": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["kind"]}},
                "upload_sessions": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["blob_store"], "additionalProperties": False,
                    "properties": {"blob_store": {"type": "string"},
                                   "ttl_seconds": {"type": "integer", "minimum": 1},
                                   "max_bytes": {"type": "integer", "minimum": 0}}}},
                "documents": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["store", "key_template"],
                    "properties": {"store": {"type": "string"}, "key_template": {"type": "string"},
                                   "schema": {"type": "string"}}}},
                "schemas": {"type": "object", "additionalProperties": {"type": "object"}},
            },
        },
        "indexes": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["source_document", "keys"],
            "properties": {
                "source_document": {"type": "string"},
                "entity": {"type": "string"},
                "keys": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "fields"],
                    "properties": {"name": {"type": "string"},
                                   "fields": {"type": "array", "items": {"type": "string"}},
                                   "where": {"type": "object"},
                                   "sort": {"type": "array", "items": {
                                       "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*(:(asc|desc))?$"}},
                                   "unique": {"type": "boolean"}}}},
                # text search over row fields (app/stores/text.py); the compiler checks that they are distinct
                "text": {"type": "object", "required": ["fields"], "additionalProperties": False, "properties": {
                    "fields": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
                        "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}}}},
                "materialization": {"type": "object"}}}},
        "auth": {"type": "object", "properties": {
            "scopes": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "actions": {"type": "array"}}}},
            "policies": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "effect": {"enum": ["allow", "deny"]},
                               "when": {"type": "object"}, "challenge": _CHALLENGE,
                               "require": {"type": "object", "properties": {
                                   "scopes": {"type": "array", "items": {"type": "string"}},
                                   "namespace": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                   "permission": {"enum": ["read", "write", "delete", "admin"]}},
                                   "additionalProperties": False}}}},
            "anonymous": {"type": "object", "properties": {
                "enabled": {"type": "boolean"}, "scopes": {"type": "array", "items": {"type": "string"}}},
                "additionalProperties": False},
            "login": {"type": "object", "properties": {
                "rate_limit_per_username_and_address": {"type": "string"},
                "rate_limit_per_username": {"type": "string"},  # the older name of the one above
                "rate_limit_per_address": {"type": "string"},
                "min_password_length": {"type": "integer", "minimum": 8},
                "token_ttl_seconds": {"type": "integer", "minimum": 60}},
                "additionalProperties": False},
            "tokens": {"type": "object", "properties": {
                "default_ttl_seconds": {"type": "integer", "minimum": 60},
                "max_ttl_seconds": {"type": "integer", "minimum": 60}},
                "additionalProperties": False}}},
        "upstreams": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["base_url"],
            "properties": {"base_url": {"type": "string", "pattern": "^https?://"},
                           "timeouts_ms": {"type": "object", "properties": {
                               "connect": {"type": "integer", "minimum": 1}, "read": {"type": "integer",
                                                                                       "minimum": 1}}},
                           "retry": {"type": "object", "properties": {
                               "max_attempts": {"type": "integer", "minimum": 1},
                               "backoff_ms": {"type": "integer", "minimum": 0}}}}}},
        "caching": {"type": "object"},
        "ops": {"type": "object", "required": ["allowed"], "properties": {
            "closed_world": {"type": "boolean"},
            "allowed": {"type": "array", "items": {"type": "string"}},
            "limits": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}}},
        "api": {"type": "object", "required": ["routes"], "properties": {
            "routes": {"type": "array", "items": {
                "type": "object", "required": ["id", "method", "path", "pipeline"],
                "properties": {"id": {"type": "string"},
                               "method": {"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]},
                               "path": {"type": "string", "pattern": "^/"},
                               "tags": {"type": "array", "items": {"type": "string"}},
                               "description": {"type": "string"}, "challenge": _CHALLENGE,
                               "resource": {"type": "string", "minLength": 1},
                               "error_body": ERROR_BODY, "pipeline": _PIPELINE}}}}},
        "events": {"type": "object", "properties": {"types": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "durable": {"type": "boolean"},
                           "schema": {"type": "object"}}}}}},
        "replication": {"type": "object", "properties": {
            "apply_pipelines": {"type": "object", "additionalProperties": _PIPELINE},
            "shipping": {"type": "object", "properties": {
                "dedupe": {"type": "object", "properties": {
                    "enabled": {"type": "boolean"}, "key": {"type": "string", "minLength": 1}}},
                "batch": {"type": "object", "properties": {
                    "max_events": {"type": "integer", "minimum": 1},
                    "max_bytes": {"type": "integer", "minimum": 1}}}}}}},
        "gc": {"type": "object", "properties": {
            "enabled": {"type": "boolean"},
            "sweep": {"type": "object", "properties": {
                "sweep_unreferenced_after_seconds": {"type": "integer", "minimum": 0},
                "mark": {"type": "object", "properties": {"mark_blobs_by": {"type": "array", "items": {
                    "type": "string", "pattern": r"^[^.\[\]]+(\.[^.\[\]]+(\[\])?)+$"}}}}}}}},
        "invariants": {"type": "object"},
        "packs": {"type": "array", "items": {
            "type": "object", "required": ["mount"],
            "properties": {"file": {"type": "string", "minLength": 1},
                           "name": {"type": "string", "pattern": "^%s$" % PACK_NAME.pattern},
                           "mount": {"type": "string", "pattern": PACK_MOUNT},
                           "content": {"type": "object"}},
            "additionalProperties": False}},
        "features": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "validation": {"type": "object", "properties": {
            "load_time_checks": {"type": "array", "items": {"type": "object", "required": ["id", "require"]}},
            "runtime_checks": {"type": "array", "items": {"type": "object", "required": ["id", "require"]}}}},
    },
}
