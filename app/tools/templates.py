"""Templates (templates/*.json): documented pieces of schema with <<placeholders>>, applied to a whole schema.

A template is {"$template": {"kind", "about", "placeholders": {name: {"about", "default"}}, "change": [...]},
"value": ...} plus "name" (entities, blob stores, upstreams) or "route" (pipeline patterns, wrapped into a
route). A string that is exactly one placeholder takes the value's JSON type when it parses as a number or a
boolean ("104857600" -> 104857600); elsewhere placeholders are replaced as text.
"""
import copy
import json
import re

_PLACEHOLDER = re.compile(r"<<([A-Za-z_][A-Za-z0-9_]*)>>")
KINDS = ("route", "pipeline", "entity", "blob_store", "auth_scope", "upstream")


class TemplateError(ValueError):
    pass


def load(path):
    with open(path, "rb") as handle:
        template = json.load(handle)
    meta = template.get("$template") if isinstance(template, dict) else None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS or "value" not in template:
        raise TemplateError("%s is not a template: expected {\"$template\": {\"kind\": one of %s}, \"value\": ...}"
                            % (path, ", ".join(KINDS)))
    return template


def parse_assignments(pairs):
    """['key=value', ...] -> {key: value}."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TemplateError("--set takes key=value, got %r" % pair)
        out[key] = value
    return out


def instantiate(template, assignments):
    """The template with every placeholder replaced (from ``assignments`` or the declared defaults)."""
    declared = template["$template"].get("placeholders", {})
    unknown = set(assignments) - set(declared)
    if unknown:
        raise TemplateError("unknown placeholder(s) %s; this template has: %s"
                            % (", ".join(sorted(unknown)), ", ".join(sorted(declared)) or "none"))
    values = {name: assignments.get(name, spec.get("default")) for name, spec in declared.items()}
    missing = sorted(name for name, value in values.items() if value is None)
    if missing:
        raise TemplateError("set %s with --set name=value" % ", ".join(missing))
    body = {k: v for k, v in template.items() if k != "$template"}
    used = set(_PLACEHOLDER.findall(json.dumps(body)))
    undeclared = sorted(used - set(values))
    if undeclared:
        raise TemplateError("the template uses undeclared placeholder(s) %s; declare them under "
                            "$template.placeholders" % ", ".join(undeclared))
    return _substitute(body, values)


def _substitute(node, values):
    if isinstance(node, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if not isinstance(node, str):
        return node
    whole = _PLACEHOLDER.fullmatch(node)
    if whole:
        return _typed(values[whole.group(1)])
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)


def _typed(text):
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, bool)) else text


def apply(doc, kind, body):
    """A copy of schema ``doc`` with the instantiated template added; (new doc, what was added)."""
    doc = copy.deepcopy(doc)
    if kind == "route":
        doc.setdefault("api", {}).setdefault("routes", []).append(body["value"])
        return doc, "route %s" % body["value"].get("id")
    if kind == "pipeline":
        route = dict(body["route"], pipeline=body["value"])
        doc.setdefault("api", {}).setdefault("routes", []).append(route)
        return doc, "route %s" % route.get("id")
    if kind == "auth_scope":
        scopes = doc.setdefault("auth", {}).setdefault("scopes", [])
        if any(scope.get("name") == body["value"].get("name") for scope in scopes):
            raise TemplateError("auth scope %r already exists" % body["value"].get("name"))
        scopes.append(body["value"])
        return doc, "scope %s" % body["value"].get("name")
    section = {"entity": ("entities",), "blob_store": ("storage", "blob_stores"), "upstream": ("upstreams",)}[kind]
    target = doc
    for part in section:
        target = target.setdefault(part, {})
    if body["name"] in target:
        raise TemplateError("%s %r already exists" % (kind.replace("_", " "), body["name"]))
    target[body["name"]] = body["value"]
    return doc, "%s %s" % (kind.replace("_", " "), body["name"])
