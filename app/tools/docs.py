"""Generate OPERATIONS.md from the op registry, the condition and check registries and app/tools/doc_sections/."""
import json
import os

from app.engine import checks, schema_keys
from app.engine.conditions import KEYWORDS
from app.engine.definitions import NORMALIZERS
from app.engine.filters import FILTERS
from app.engine.opspec import FLAGS, REGISTRY, load_vocabulary
from app.engine.versions import SCHEMES

SECTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "doc_sections")
OPERATIONS_MD = os.path.join(os.path.dirname(SECTIONS), "..", "..", "OPERATIONS.md")
_ARITY = {"one": "`operand`", "two": "`[a, b]`", "conds": "`[condition, ...]`", "cond": "`condition`",
          "cond_pair": "`[condition, condition]`",
          "version": "`operand`, or `{\"version\": operand, \"scheme\": name}`"}
_KEYWORD_DOCS = {
    "equals": "a equals b", "not_equals": "a differs from b", "in": "a is an element of list b",
    "not_in": "a is not an element of list b", "is_null": "the operand is null or unbound",
    "is_not_null": "the operand is bound and not null", "is_empty": "null, or an empty string, list or object",
    "is_not_empty": "not is_empty", "all": "every condition holds", "any": "at least one holds",
    "not": "the condition does not hold", "implies": "[p, q]: q holds whenever p holds",
    "contains": "string a contains string b (case-insensitive)", "starts_with": "string a starts with b "
    "(case-insensitive)", "is_prerelease": "a version with a pre-release part, under the versioning scheme in force "
    "there or the one named (\"Versioning schemes\")",
}


def _section(name):
    with open(os.path.join(SECTIONS, name), encoding="utf-8") as handle:
        return handle.read().rstrip() + "\n"


def _conditions():
    lines = [_section("30_conditions_head.md"), "| keyword | operand | holds when |", "|---|---|---|"]
    for name, (_, arity) in sorted(KEYWORDS.items()):
        lines.append("| `%s` | %s | %s |" % (name, _ARITY[arity], _KEYWORD_DOCS.get(name, "")))
    return "\n".join(lines) + "\n"


def _filters():
    lines = [_section("22_filters_head.md"), "| filter | argument | gives | example |", "|---|---|---|---|"]
    for name, decl in sorted(FILTERS.items()):
        errors = " (%s)" % ", ".join("`%s`" % e for e in decl.errors) if decl.errors else ""
        lines.append("| `%s` | %s | %s%s | `%s` |" % (name, decl.argument or "none", decl.doc, errors,
                                                   decl.example.replace("|", "\\|")))
    return "\n".join(lines) + "\n"


def _versioning():
    lines = [_section("35_versioning_head.md"), "| scheme | a version is | order | pre-releases |", "|---|---|---|---|"]
    lines += ["| `%s` | %s | %s | %s |" % (s.name, s.expected, s.order, s.prerelease) for s in SCHEMES.values()]
    return "\n".join(lines) + "\n"


# what each flag of an op's declaration (app/engine/opspec.py OpDecl) means, as the reference says it
FLAG_DOCS = {
    "terminal": "ends the pipeline (nothing after it runs; a route's last step must be one)",
    "opens_txn": "opens a transaction",
    "closes_txn": "closes the open transaction",
    "needs_txn": "needs an open transaction",
    "writes": "writes (buffered in the open transaction, or its own one-step transaction)",
    "mutates": "changes the repository (a read-only replica refuses it)",
    "io": "does I/O (the CPU budget is checked before it)",
}


def _op(decl):
    lines = ["### `%s`" % decl.name, "", decl.summary, ""]
    facts = [FLAG_DOCS[flag] for flag in decl.flags]
    if facts:
        lines += ["*" + "; ".join(facts) + ".*", ""]
    if decl.args:
        lines += ["| argument | kind | required | default | meaning |", "|---|---|---|---|---|"]
        for name, arg in decl.args.items():
            default = "" if arg.default in (None, {}) else "`%s`" % json.dumps(arg.default)
            lines.append("| `%s` | %s | %s | %s | %s |" % (name, arg.describe(), "yes" if arg.required else "no",
                                                           default, arg.doc))
        lines.append("")
    else:
        lines += ["No arguments.", ""]
    outputs = decl.outputs
    lines.append("Outputs: %s." % (", ".join("`%s`" % o for o in outputs) if outputs else "none"))
    lines.append("Errors: %s." % (", ".join("`%s`" % e for e in decl.errors) if decl.errors else "none of its own"))
    if decl.answers:
        lines.append("Other answers: %s." % ", ".join("`%s`" % a for a in decl.answers))
    if decl.inputs:
        lines.append("Reads: %s." % ", ".join("%s `%s`" % (i.where, i.name) for i in decl.inputs))
    lines += ["", "```json", json.dumps({"op": decl.name, "args": decl.example or {}}), "```", ""]
    return "\n".join(lines)


def _ops():
    groups = {}
    for decl in REGISTRY.values():
        groups.setdefault(decl.name.split(".")[0], []).append(decl)
    out = ["## Operations", "", "The closed vocabulary: %d ops. `ops.allowed` must list only these." % len(REGISTRY),
           "", _flag_table(), ""]
    for group in groups:
        out.append("\n".join(_op(d) for d in groups[group]))
    return "\n".join(out)


def _flag_table():
    """Which op does what, as declared: the compiler, the checker and these docs read the same flags."""
    lines = ["What each op does is declared with it; the compiler (which steps end a pipeline, which need the CPU "
             "budget or the read-only check before them) and the checker (transactions, terminal steps) read these "
             "flags, never the op's name:", ""]
    lines += ["- `%s`: %s" % (flag, FLAG_DOCS[flag]) for flag in FLAGS]
    lines += ["", "| op | %s |" % " | ".join("`%s`" % f for f in FLAGS), "|---|%s" % ("---|" * len(FLAGS))]
    for decl in REGISTRY.values():
        lines.append("| `%s` | %s |" % (decl.name, " | ".join("yes" if getattr(decl, f) else "" for f in FLAGS)))
    return "\n".join(lines)


def _checks():
    lines = ["## Load-time checks", "",
             "Always checked: the schema's shape; every op is in `ops.allowed` and in the vocabulary; every "
             "argument is known, present when required and of its kind; every reference to an entity, document, "
             "index, blob store, kv store, upstream, event type, scope or storage schema exists; every template "
             "parses and every reference in it can be bound; pipelines fit `max_pipeline_ops`; route ids and "
             "method+path pairs are unique; transactions open and close in order; routes end by responding; "
             "documents written from literal objects carry their schema's required fields; each "
             "`gc.sweep.mark.mark_blobs_by` entry names a declared document. Keys the server accepts but does not "
             "act on are reported as warnings (\"Schema keys read and ignored\"), and so is a second step of a "
             "pipeline reading the request body (`parse.json`, `parse.multipart`, `blob.put` from request.body): a "
             "request sends its body once.", "",
             "`validation.load_time_checks` predicates (`on_fail`: `reject_config` = error, `warn` = warning; "
             "an unknown predicate is an error):", ""]
    lines += ["- `%s`: %s" % (n, (f.__doc__ or "").strip()) for n, f in sorted(checks.LOAD_PREDICATES.items())]
    lines += ["", "`validation.runtime_checks` predicates, decided statically and reported as warnings at load, and "
              "enforced per request when `on_fail` is `abort_request`:", ""]
    lines += ["- `%s`: %s" % (n, (f.__doc__ or "").strip()) for n, f in sorted(checks.RUNTIME_PREDICATES.items())]
    lines += ["", "`invariants`: each `assert` is a condition over the schema itself (a string whose first segment "
              "names a top-level section is a path into the schema), plus `route_requires: {route_id: [{op, "
              "args_contains}]}`. A violation is reported with the invariant's id: a warning, or an error when the "
              "invariant has `\"on_fail\": \"reject_config\"`.", "",
              "Entity field `normalize` rules: %s (parameters after `:`, e.g. `replace:_:-`). `trim`, `lower`, "
              "`upper` and `collapse_whitespace` change ASCII characters only: Unicode case mapping would fold "
              "look-alikes into ASCII (the Kelvin sign lower-cases to `k`), letting a name the constraints refuse "
              "pass them once normalized; left alone, such characters meet the constraints and are refused."
              % ", ".join("`%s`" % n for n in sorted(NORMALIZERS)), ""]
    return "\n".join(lines)


def _schema_keys():
    lines = [_section("67_schema_keys.md"), "| key | reported when | what the server does |", "|---|---|---|"]
    lines += ["| `%s` | %s | %s |" % row for row in schema_keys.documented()]
    return "\n".join(lines) + "\n"


def render():
    load_vocabulary()  # the ops the reference documents
    parts = [_section("10_intro.md"), _section("20_grammar.md"), _filters(), _section("24_each.md"), _conditions(),
             _section("35_pages.md"), _versioning(), _section("40_access.md"), _ops(), _checks(),
             _section("45_packs.md"), _section("46_pypi_pack.md"), _section("47_npm_pack.md"),
             _section("48_oci_pack.md"), _section("50_limits.md"), _section("52_bodies.md"),
             _section("55_server.md"), _section("60_stores.md"), _section("65_replication.md"), _schema_keys(),
             _section("70_deviations.md")]
    return "\n".join(p.rstrip() + "\n" for p in parts)


def write(path=OPERATIONS_MD):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render())
