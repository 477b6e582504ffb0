"""Garbage collection of blobs, as the schema's `gc` section describes it.

Mark: every blob digest named by `gc.sweep.mark.mark_blobs_by` (for example `artifact_meta.blob_digest`) in a
document that is not a tombstone (`deleted: true`). Sweep: every blob file no mark names, and every temporary
upload, older than `gc.sweep.sweep_unreferenced_after_seconds`. Each file is checked and removed under the
commit lock: a commit that references a blob touches its file under that lock, so a blob referenced after the
mark is seen as recent and kept.
"""
import os
import time

from app.stores.state import kv_key, loads

DEFAULT_GRACE_SECONDS = 7 * 86400


def collect(engine, dry_run=False, grace_seconds=None):
    spec = engine.compiled.doc.get("gc", {})
    if grace_seconds is None:
        grace_seconds = spec.get("sweep", {}).get("sweep_unreferenced_after_seconds", DEFAULT_GRACE_SECONDS)
    marked = mark(engine, spec.get("sweep", {}).get("mark", {}).get("mark_blobs_by", []))
    cutoff = time.time() - grace_seconds
    removed, kept, recent = [], 0, 0
    for store in engine.blob_stores.values():
        for hexdigest, path in store.files():
            if hexdigest in marked:
                kept += 1
            elif _remove_if_older(engine, path, cutoff, dry_run):
                removed.append("sha256:" + hexdigest)
            else:
                recent += 1
        for path in store.temp_files():
            _remove_if_older(engine, path, cutoff, dry_run)
    return {"marked": len(marked), "kept": kept, "removed": removed, "too_recent": recent, "dry_run": dry_run,
            "grace_seconds": grace_seconds}


def mark(engine, sources):
    """Hex digests referenced by live documents, for sources written "document.field"."""
    documents = engine.compiled.definitions["document"]
    marked = set()
    for source in sources:
        name, _, field = source.partition(".")
        document = documents.get(name)
        if document is None:
            continue
        literal = document.key.parts[0] if document.key.parts and isinstance(document.key.parts[0], str) else ""
        for _, raw in engine.state.scan(kv_key(document.store, literal)):
            doc = loads(raw)
            digest = doc.get(field) if isinstance(doc, dict) else None
            if isinstance(digest, str) and not doc.get("deleted"):
                marked.add(digest.rpartition(":")[2])
    return marked


def _remove_if_older(engine, path, cutoff, dry_run):
    with engine.state.commit_lock:
        try:
            if os.stat(path).st_mtime >= cutoff:
                return False
            if not dry_run:
                os.unlink(path)
        except FileNotFoundError:
            return False
    return True
