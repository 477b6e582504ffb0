"""Garbage collection of blobs, as the schema's `gc` section describes it.

Mark: every blob digest named by `gc.sweep.mark.mark_blobs_by` (for example `artifact_meta.blob_digest`, or a path
through lists such as `oci_manifest.blobs[]` or `doc.layers[].digest`) in a document that is not a tombstone
(`deleted: true`), read from a snapshot taken after the collection began. Upload sessions idle past their
time-to-live are removed first.
Sweep: every blob no mark names (an orphan), and every temporary upload file, untouched for
`gc.sweep.sweep_unreferenced_after_seconds`, unless a write in flight needs it: app/stores/guard.py is the
protocol that makes a collection safe beside concurrent publishes, re-publishes, uploads and replication, for
any grace period, 0 included. A dry run takes every decision a real run would and removes nothing.
`gc.enabled: false` refuses collections (dry runs still report).
"""
import time
from dataclasses import dataclass, field
from functools import partial

from app.errors import DepotError
from app.stores.digests import DIGEST_PREFIX

DEFAULT_GRACE_SECONDS = 7 * 86400


def collect(engine, dry_run=False, grace_seconds=None):
    section = engine.compiled.doc.get("gc", {})
    if not section.get("enabled", True) and not dry_run:  # a dry run removes nothing: it still reports
        raise DepotError("GC_DISABLED", 409, "garbage collection is disabled (gc.enabled is false)")
    spec = section.get("sweep", {})
    marks = spec.get("mark", {}).get("mark_blobs_by", [])
    if not marks and not dry_run:  # nothing marked live: the sweep would take every blob, live ones included
        raise DepotError("GC_NO_MARKS", 409, "the schema names no gc.sweep.mark.mark_blobs_by: a collection would "
                         "remove every blob, so none runs (a dry run shows what it would remove)")
    if grace_seconds is None:
        grace_seconds = spec.get("sweep_unreferenced_after_seconds", DEFAULT_GRACE_SECONDS)
    guard = engine.stores.guard
    if not guard.begin():
        raise DepotError("GC_RUNNING", 409, "a garbage collection is already running; try again when it ends")
    try:
        cutoff = time.time() - grace_seconds
        expired = expire_sessions(engine, dry_run)
        marked = mark(engine, marks)
        sweeps = [sweep(store, guard, marked, cutoff, dry_run) for store in engine.blob_stores.values()]
    finally:
        guard.end()
    return dict(summary(sweeps, len(marked), dry_run, grace_seconds), upload_sessions=expired)


def expire_sessions(engine, dry_run):
    """Remove the upload sessions idle past their time-to-live (a dry run removes none)."""
    removed = removed_bytes = 0
    for sessions in ([] if dry_run else engine.upload_sessions.values()):
        count, size = sessions.expire()
        removed, removed_bytes = removed + count, removed_bytes + size
    return {"expired_removed": removed, "expired_removed_bytes": removed_bytes}


def mark_path(source):
    """"document.a.b[].c" -> ("document", ["a", "b[]", "c"]): the steps to a digest; `[]` after a step reads each
    item of the list there."""
    name, *steps = source.split(".")
    return name, steps


def _digests_at(value, steps):
    """The strings found by following ``steps`` from ``value`` (each item of a list where a step ends in [])."""
    if not steps:
        if isinstance(value, str):
            yield value
        return
    step, rest = steps[0], steps[1:]
    listed = step.endswith("[]")
    value = value.get(step[:-2] if listed else step) if isinstance(value, dict) else None
    for item in (value if isinstance(value, list) else []) if listed else [value]:
        yield from _digests_at(item, rest)


def mark(engine, sources):
    """Hex digests referenced by live documents, for sources written "document.field" (or a path: mark_path)."""
    documents = engine.compiled.definitions["document"]
    marked = set()
    for source in sources:
        name, steps = mark_path(source)
        document = documents[name]  # the checker refuses a mark naming an undeclared document
        literal = document.key.parts[0] if document.key.parts and isinstance(document.key.parts[0], str) else ""
        for _, doc in engine.documents.items(document.store, literal):
            if isinstance(doc, dict) and not doc.get("deleted"):
                marked.update(digest.rpartition(":")[2] for digest in _digests_at(doc, steps))
    return marked


def sweep(store, guard, marked, cutoff, dry_run=False):
    """Remove every blob of ``store`` whose hex digest is not in ``marked``, nor in use, nor touched at or after
    ``cutoff`` (a time.time()), and every staged upload no upload is writing that is that old; ``guard`` decides
    and deletes, one at a time. ``dry_run`` decides the same and removes nothing. -> SweepReport"""
    report = SweepReport()
    for digest in store.digests():
        hexdigest = digest[len(DIGEST_PREFIX):]
        if hexdigest in marked:
            report.kept += 1
            continue
        outcome, size = guard.remove_unless_needed(guard.blob_in_use, hexdigest, partial(store.stat, digest),
                                                   partial(store.delete, digest), cutoff, dry_run)
        report.count_orphan(outcome, size, digest)
    for upload in store.uploads():
        outcome, size = guard.remove_unless_needed(guard.temp_in_use, upload, partial(store.upload_stat, upload),
                                                   partial(store.delete_upload, upload), cutoff, dry_run)
        report.count_temp(outcome, size)
    return report


@dataclass
class SweepReport:
    """What a sweep found and did. Orphans are blobs no live document names."""
    kept: int = 0
    removed: list = field(default_factory=list)
    removed_bytes: int = 0
    recent: int = 0
    recent_bytes: int = 0
    in_use: int = 0
    temp_removed: int = 0
    temp_removed_bytes: int = 0
    temp_kept: int = 0

    def count_orphan(self, outcome, size, digest):
        if outcome == "removed":
            self.removed.append(digest)
            self.removed_bytes += size
        elif outcome == "recent":
            self.recent += 1
            self.recent_bytes += size
        elif outcome == "in_use":
            self.in_use += 1

    def count_temp(self, outcome, size):
        if outcome == "removed":
            self.temp_removed += 1
            self.temp_removed_bytes += size
        elif outcome != "gone":
            self.temp_kept += 1


def summary(sweeps, marked, dry_run, grace_seconds):
    """One report over every store's sweep. Orphans: blobs no live document names."""
    def total(name):
        return sum(getattr(sweep, name) for sweep in sweeps)
    removed = [digest for sweep in sweeps for digest in sweep.removed]
    return {"dry_run": dry_run, "grace_seconds": grace_seconds, "marked": marked, "kept": total("kept"),
            "removed": removed, "removed_bytes": total("removed_bytes"), "too_recent": total("recent"),
            "orphans": {"count": len(removed) + total("recent") + total("in_use"),
                        "bytes": total("removed_bytes") + total("recent_bytes"),
                        "removed": len(removed), "within_grace": total("recent"), "in_use": total("in_use")},
            "temp_files": {"removed": total("temp_removed"), "removed_bytes": total("temp_removed_bytes"),
                           "kept": total("temp_kept")}}


def audit_target(result):
    """How the audit log names what a collection did (or, dry, would have done)."""
    return "%s%d blob(s)" % ("dry run: " if result["dry_run"] else "", len(result["removed"]))


def audit_detail(result):
    """What the audit log keeps of a collection's report: whether it was a dry run and what it removed."""
    return {"dry_run": result["dry_run"], "grace_seconds": result["grace_seconds"],
            "removed": len(result["removed"]), "removed_bytes": result["removed_bytes"],
            "temp_files_removed": result["temp_files"]["removed"]}
