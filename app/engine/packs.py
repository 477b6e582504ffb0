"""Route packs: schema fragments a schema includes through its `packs` section, each mounted under a path.

A pack (packs/pypi.json, say) declares what one protocol needs: entities, storage (kv stores, documents, JSON
schemas, blob stores), indexes, upstreams, auth policies, event types, replication apply pipelines, gc marks and
routes. The schema lists it as ``{"file": "packs/pypi.json", "mount": "/pypi/{namespace}"}``.

Two stages, so that compiling never reads a file:

- ``embed`` (load_schema_file): each pack's file, relative to the schema file's directory, is read and put into
  its entry as ``content``. A schema so loaded carries its packs whole: a stored schema version is
  self-contained, its digest covers the packs, and a changed pack file is a changed schema.
- ``merge`` (compile_schema): the packs' sections are merged into one document before anything is checked, so
  the checker, the compiler, OpenAPI, `check` and `validate` see one schema. A pack's route paths are relative
  to its mount, and its route ids are prefixed with the pack's name (``pypi.simple_index``). Any other name
  defined twice (an entity, a document, a policy...) is an error naming both places. The Report names every
  place inside a pack where it was written: ``packs[0] (packs/pypi.json): api.routes[3].pipeline[2].args.doc``.

A pack cannot widen ``ops.allowed`` nor change the schema's settings (versioning, limits, auth settings): the
schema including it decides those, and its policies (by tag) apply to a pack's routes as to its own.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Callable, Mapping

import jsonschema

from app.engine.metaschema import ERROR_BODY, METASCHEMA, PACK_NAME
from app.engine.report import Report, place

SchemaDoc = dict[str, Any]
_TOP = METASCHEMA["properties"]


def _only(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False}


# What a pack may hold: the sections below, each item shaped as the schema's own
PACK_SCHEMA = _only(
    description={"type": "string"},
    entities={"type": "object", "additionalProperties": _TOP["entities"]["additionalProperties"]},
    storage=_only(**_TOP["storage"]["properties"]),
    indexes=_TOP["indexes"],
    upstreams=_TOP["upstreams"],
    auth=_only(policies=_TOP["auth"]["properties"]["policies"]),
    events=_only(types=_TOP["events"]["properties"]["types"]),
    api=_only(routes=_TOP["api"]["properties"]["routes"], error_body=ERROR_BODY),
    replication=_only(apply_pipelines=_TOP["replication"]["properties"]["apply_pipelines"],
                      replay=_only(apply_pipelines={"type": "object", "additionalProperties": {"type": "string"}})),
    gc=_only(sweep=_only(mark=_only(mark_blobs_by=_TOP["gc"]["properties"]["sweep"]["properties"]["mark"]
                                    ["properties"]["mark_blobs_by"]))))

# sections whose members are named by their key, merged key by key
KEYED = (("entities",), ("storage", "kv_stores"), ("storage", "documents"), ("storage", "schemas"),
         ("storage", "blob_stores"), ("storage", "upload_sessions"), ("indexes",), ("upstreams",),
         ("replication", "apply_pipelines"),
         ("replication", "replay", "apply_pipelines"))
# sections that are lists, appended to; items named by the given key (None: the item itself)
LISTED = ((("auth", "policies"), "name"), (("events", "types"), "name"), (("api", "routes"), "id"),
          (("gc", "sweep", "mark", "mark_blobs_by"), None))


class PackFileError(ValueError):
    """A pack's file cannot be read or is not JSON; the message names the pack's place."""


def embed(doc: Any, base_dir: str) -> Any:
    """``doc`` with each pack's file content in its entry (``content``); entries that have it are kept. A doc or
    entry of another shape is left for the checker to report."""
    entries = doc.get("packs") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return doc
    embedded = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and "content" not in entry and isinstance(entry.get("file"), str):
            entry = dict(entry, content=_read(entry["file"], base_dir, place("packs", i, "file")))
        embedded.append(entry)
    return dict(doc, packs=embedded)


def _read(file: str, base_dir: str, where: str) -> Any:
    path = os.path.join(base_dir, file)
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except OSError as exc:
        raise PackFileError("%s: cannot read %s: %s" % (where, path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise PackFileError("%s: %s is not JSON: %s" % (where, path, exc)) from None


def pack_name(entry: Mapping[str, Any]) -> str | None:
    """The pack's name: its ``name``, else its file's name without the extension."""
    if "name" in entry:
        return str(entry["name"])
    if isinstance(entry.get("file"), str):
        return os.path.splitext(os.path.basename(entry["file"]))[0]
    return None


def merge(doc: SchemaDoc, report: Report) -> SchemaDoc:
    """One document: ``doc`` with its packs' sections merged in (``doc`` itself when it includes none). Problems
    are reported at the pack's places, and the report names merged places where they were written."""
    entries = doc.get("packs", [])
    if not entries:
        return doc
    merged = copy.deepcopy({key: value for key, value in doc.items() if key != "packs"})
    owners = _Owners(merged)
    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        name = pack_name(entry)
        label = "%s (%s)" % (place("packs", i), entry.get("file", name))
        if name is None or not PACK_NAME.fullmatch(name):
            report.error(place("packs", i, "name"), "a pack's name prefixes its route ids: give one matching %s "
                         "(the file's name %r does not)" % (PACK_NAME.pattern, name))
            continue
        if name in names:
            report.error(place("packs", i, "name"), "pack name %r is also packs[%d]'s: route ids would collide"
                         % (name, names[name]))
            continue
        names[name] = i
        if "content" not in entry:
            report.error(place("packs", i), "the pack's content is not in the schema: a schema loaded from its file "
                         "(check, serve) embeds each pack's file as `content`; a schema uploaded to /admin/schema "
                         "must carry it")
            continue
        if _shape_ok(entry["content"], label, report):
            _Pack(entry["content"], name, entry["mount"], label, merged, owners, report).merge()
    return merged


def _shape_ok(content: Any, label: str, report: Report) -> bool:
    ok = True
    for error in jsonschema.Draft202012Validator(PACK_SCHEMA).iter_errors(content):
        within = place(*error.absolute_path)
        report.error("%s: %s" % (label, within) if within else label, "%s (pack shape)" % error.message)
        ok = False
    if ok and "versioning" in content.get("entities", {}):
        report.error("%s: entities.versioning" % label, "a pack cannot set entities.versioning: the including "
                     "schema's versioning applies to every entity")
        ok = False
    return ok


class _Owners:
    """Who defines each named member of the merged document: (section, name) -> the place that names it."""

    def __init__(self, merged: SchemaDoc) -> None:
        self.places: dict[tuple[tuple[str, ...], Any], str] = {}
        for section in KEYED:
            for key in _section(merged, section, {}):
                self.places[(section, key)] = place(".".join(section), key)
        for section, id_key in LISTED:
            for j, item in enumerate(_section(merged, section, [])):
                self.places[(section, _item_name(item, id_key))] = place(".".join(section), j)

    def claim(self, section: tuple[str, ...], name: Any, where: str, report: Report) -> bool:
        """Whether ``name`` is free in ``section``; if not, an error at ``where`` naming the other place."""
        other = self.places.get((section, name))
        if other is not None:
            report.error(where, "%s %r is defined twice: also at %s" % (".".join(section), name,
                                                                         report.display(other)))
            return False
        self.places[(section, name)] = where
        return True


def _item_name(item: Any, id_key: str | None) -> Any:
    return item.get(id_key) if id_key is not None and isinstance(item, dict) else item


def _section(doc: SchemaDoc, path: tuple[str, ...], empty: Any) -> Any:
    """The member of ``doc`` at ``path``, or ``empty`` (a fresh value, not put in ``doc``)."""
    node: Any = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return empty
        node = node[key]
    return node


def _make_section(doc: SchemaDoc, path: tuple[str, ...], empty: Callable[[], Any]) -> Any:
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    return node.setdefault(path[-1], empty())


class _Pack:
    """One pack merged into the document: its members added where they are free, its routes mounted."""

    def __init__(self, content: SchemaDoc, name: str, mount: str, label: str, merged: SchemaDoc, owners: _Owners,
                 report: Report) -> None:
        self.content, self.name, self.mount, self.label = content, name, mount, label
        self.merged, self.owners, self.report = merged, owners, report

    def written(self, *parts: str | int) -> str:
        return "%s: %s" % (self.label, place(*parts))

    def merge(self) -> None:
        for section in KEYED:
            members = _section(self.content, section, {})
            for key, value in members.items():
                dotted = ".".join(section)
                if self.owners.claim(section, key, self.written(dotted, key), self.report):
                    _make_section(self.merged, section, dict)[key] = copy.deepcopy(value)
                    self.report.origin(place(dotted, key), self.written(dotted, key))
        for section, id_key in LISTED:
            for j, item in enumerate(_section(self.content, section, [])):
                self._append(section, id_key, j, self._mounted(item) if section == ("api", "routes") else item)

    def _mounted(self, route: dict[str, Any]) -> dict[str, Any]:
        """A route as the merged document has it: its id prefixed with the pack's name, its path under the mount,
        and the pack's error_body."""
        mounted = dict(route, id="%s.%s" % (self.name, route["id"]), path=self.mount + route["path"])
        error_body = self.content.get("api", {}).get("error_body")
        if error_body is not None and "error_body" not in route:  # the pack's format, unless the route has its own
            mounted["error_body"] = error_body
        return mounted

    def _append(self, section: tuple[str, ...], id_key: str | None, j: int, item: Any) -> None:
        dotted = ".".join(section)
        target = _make_section(self.merged, section, list)
        if id_key is None:  # a plain value (a gc mark): two packs may name the same one
            if item in target:
                return
        elif not self.owners.claim(section, _item_name(item, id_key), self.written(dotted, j, id_key),
                                   self.report):
            return
        target.append(copy.deepcopy(item))
        self.report.origin(place(dotted, len(target) - 1), self.written(dotted, j))
