"""Replication by event sourcing, as the schema's `replication` section declares it.

A primary ships its event log in batches (`ship`). A replica applies each event through the apply pipeline
its type names (`apply_batch`), once: the event's dedupe key (`shipping.dedupe.key`, `event_id`) and the
replica's cursor (the last primary sequence number it has taken) are written in the same write batch as the
apply pipeline's own writes, so a crash or a re-delivered batch never applies an event twice or skips one.
Blob bytes travel on their own, before the events that name them: an event naming a digest the replica does
not hold is refused, so no document on a replica points at missing bytes. `pump` feeds a replica from a
primary over HTTP (`python -m app replicate`).

Nothing here knows Flask: app/http/management.py serves these under /admin/replication.
"""
import re
import threading
from contextlib import contextmanager

from app.errors import DepotError, bad_request, not_found

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
RECEIVED_BLOB_LEASE_SECONDS = 3600  # received bytes outlive collections this long, while their event is on its way
_APPLY_LOCK = threading.Lock()  # one stream of events at a time: dedupe checks and cursor moves never interleave


# --- the primary: shipping ----------------------------------------------------------------------------------

def ship(engine, after, limit=None):
    """Events with a sequence number above ``after``, in order, at most ``limit`` (and the schema's batch
    bounds) of them. -> {"events", "next_after", "more"}: ask again with next_after while more is true."""
    settings = engine.event_log.settings
    limit = min(limit or settings.batch_events, settings.batch_events)
    events, size, more = [], 0, False
    for event in engine.event_log.read_after(after):
        if events and (len(events) >= limit or size + event.size > settings.batch_bytes):
            more = True
            break
        events.append(event.record)
        size += event.size
    return {"events": events, "next_after": events[-1]["seq"] if events else after, "more": more}


def locate(engine, digest):
    """The blob with ``digest`` in any of the engine's stores, or None."""
    for store in engine.blob_stores.values():
        blob = store.locate(digest)
        if blob is not None:
            return blob
    return None


def find_blob(engine, digest):
    blob = locate(engine, digest)
    if blob is None:
        raise not_found("no blob %s in any store" % digest, "BLOB_NOT_FOUND")
    return blob


def named_digests(payload):
    """(field, digest) for each top-level payload value that is a blob digest: the bytes an event refers to."""
    return [(field, value) for field, value in payload.items() if isinstance(value, str) and _DIGEST.match(value)]


# --- the replica: replay -------------------------------------------------------------------------------------

def cursor(engine):
    """The last primary sequence number this replica has taken (0: none)."""
    return engine.event_log.applied_through()


def was_applied(engine, event_id):
    """Whether this replica has applied the event with this dedupe key."""
    return engine.event_log.was_applied(event_id)


def receive_blob(engine, store_name, digest, stream):
    """Store the bytes of ``digest`` read from ``stream`` into blob store ``store_name`` (may be left empty when
    there is only one); the bytes must hash to ``digest`` (400 DIGEST_MISMATCH, nothing kept). -> the BlobRef."""
    check_digest(digest, "digest")
    if not store_name and len(engine.blob_stores) == 1:
        store_name = next(iter(engine.blob_stores))
    store = engine.blob_stores.get(store_name)
    if store is None:
        raise bad_request("UNKNOWN_BLOB_STORE", "no blob store %r here; expected one of: %s"
                          % (store_name, ", ".join(sorted(engine.blob_stores))), "store")
    staged = store.stage(stream)
    if staged.digest != digest:
        store.discard(staged)
        raise DepotError("DIGEST_MISMATCH", 400, "the bytes hash to %s, not %s" % (staged.digest, digest), "digest")
    store.lease(digest, RECEIVED_BLOB_LEASE_SECONDS)  # no document names them until their event is applied
    store.commit(staged)
    return staged


def apply_batch(engine, events, gone=None):
    """Apply shipped ``events`` in order. An event already applied (its dedupe key seen) or at or below the
    cursor is skipped; the next must follow the cursor (409 EVENT_GAP otherwise: the log has no gaps); an event
    type with no apply pipeline moves the cursor and nothing else. The first event
    that fails stops the batch: those before it stay applied, the error names it. ``gone``: digests the primary
    no longer holds (garbage collection takes bytes only once every artifact naming them is deleted, and those
    deletions follow in the log), so events naming them apply without the bytes, as the primary's state is.
    -> {"applied", "skipped", "without_pipeline", "cursor"}"""
    if not isinstance(events, list):
        raise bad_request("INVALID_BATCH", "events is a list of events", "events")
    gone = [] if gone is None else gone
    if not isinstance(gone, list):
        raise bad_request("INVALID_BATCH", "gone is a list of digests", "gone")
    for i, digest in enumerate(gone):
        check_digest(digest, "gone[%d]" % i)
    result = {"applied": 0, "skipped": 0, "without_pipeline": 0}
    with _APPLY_LOCK:
        position = cursor(engine)
        for i, event in enumerate(events):
            seq, event_id = _check_event(engine, event, "events[%d]" % i)
            if seq <= position or (event_id is not None and was_applied(engine, event_id)):
                result["skipped"] += 1
                continue
            if seq != position + 1:  # the primary numbers its events without gaps: one is missing
                raise DepotError("EVENT_GAP", 409, "expected the event with seq %d next, got %d: ship from the "
                                 "replica's cursor" % (position + 1, seq), "events[%d].seq" % i)
            if event["type"] in engine.compiled.apply_pipelines:
                _check_payload(engine, event, "events[%d].payload" % i)
                with _held_blobs(engine, event["payload"], gone, "events[%d].payload" % i):
                    _apply_one(engine, event, (seq, event_id), i)
                result["applied"] += 1
            else:
                engine.record_applied(seq, event_id)
                result["without_pipeline"] += 1
            position = seq
    result["cursor"] = position
    return result


def _check_event(engine, event, where):
    """-> (the event's sequence number, its dedupe key or None); 400 naming the field if malformed."""
    if not isinstance(event, dict):
        raise bad_request("INVALID_EVENT", "an event is an object", where)
    seq, payload = event.get("seq"), event.get("payload")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise bad_request("INVALID_EVENT", "seq is a positive integer", where + ".seq")
    if not isinstance(event.get("type"), str):
        raise bad_request("INVALID_EVENT", "type is a string", where + ".type")
    if not isinstance(payload, dict):
        raise bad_request("INVALID_EVENT", "payload is an object", where + ".payload")
    key = engine.event_log.settings.dedupe_key
    if key is None:
        return seq, None
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request("INVALID_EVENT", "%s (replication.shipping.dedupe.key) is a non-empty string" % key,
                          where + "." + key)
    return seq, value


def _check_payload(engine, event, where):
    """The payload must satisfy its event type's schema here too: the apply pipeline relies on it."""
    try:
        engine.compiled.definitions["event_type"][event["type"]].check(event["payload"], "EVENT_INVALID", 400)
    except DepotError as error:
        error.field = where + ("." + error.field if error.field else "")
        raise


@contextmanager
def _held_blobs(engine, payload, gone, where):
    """Hold the blobs an event names (those the primary still has) while it is applied: held before they are
    looked for, so garbage collection has either removed one already (409 BLOB_MISSING: the pump sends it again)
    or keeps it; once the event is applied a live document names them and their leases end."""
    held = []
    try:
        for field, value in named_digests(payload):
            if value in gone:
                continue
            store = _store_holding(engine, value)
            if store is None:
                raise DepotError("BLOB_MISSING", 409, "blob %s is not here yet: send its bytes before the event "
                                 "naming it" % value, where + "." + field)
            held.append((store, value))
        yield
        for store, value in held:
            store.end_lease(value)
    finally:
        for store, value in held:
            store.release(value)


def _store_holding(engine, digest):
    """The blob store holding ``digest``, which it now holds against collection; None (nothing held) if none."""
    for store in engine.blob_stores.values():
        store.hold(digest)
        if store.locate(digest) is not None:
            return store
        store.release(digest)
    return None


def _apply_one(engine, event, applied, index):
    try:
        engine.apply_event(event, applied)
    except DepotError as error:
        raise DepotError(error.code, error.status, "event %d (seq %d, %s) was not applied: %s"
                         % (index, event["seq"], event["type"], error.message), "events[%d]" % index) from None


def check_digest(digest, field):
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise bad_request("INVALID_DIGEST", "a digest is sha256:<64 lower-case hex digits>", field)


# --- the pump: primary -> replica over HTTP -------------------------------------------------------------------

class Endpoint:
    """A Depot server's /admin/replication API, with an admin bearer token."""

    def __init__(self, base_url, token, timeout=60):
        import requests
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Bearer " + token
        self.timeout = timeout

    def call(self, method, path, expect=(200,), **kwargs):
        url = self.base_url + "/admin/replication" + path
        response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if response.status_code not in expect:
            try:
                error = response.json()["error"]
                detail = "%s: %s" % (error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                detail = response.text[:200]
            response.close()
            raise PumpError("%s %s answered %d (%s)" % (method, url, response.status_code, detail))
        return response


class PumpError(RuntimeError):
    pass


MAX_RETRY_WAIT = 60.0


def pump(source, target, follow=False, interval=2.0, report=print, stop=None):
    """Copy what ``source`` (an Endpoint on the primary) has shipped since ``target``'s cursor: blob bytes
    first, then the events. Returns the number of events the target applied. With ``follow``, keeps polling
    every ``interval`` seconds until ``stop`` (a threading.Event) is set, and rides out either server being
    down or refusing: the error is reported and the round retried, the wait doubling up to a minute."""
    stop = stop if stop is not None else threading.Event()
    total, retry_wait = 0, interval
    while True:
        try:
            applied, more = _pump_batch(source, target, report)
        except (PumpError, OSError) as exc:  # requests' errors are OSErrors
            if not follow:
                raise
            report("replication paused: %s; retrying in %.1f s" % (exc, retry_wait))
            if stop.wait(retry_wait):
                return total
            retry_wait = min(retry_wait * 2, MAX_RETRY_WAIT)
            continue
        total, retry_wait = total + applied, interval
        if more:
            continue
        if not follow or stop.wait(interval):
            return total


def _pump_batch(source, target, report):
    """One batch from the target's cursor on. -> (events applied, whether the source has more)."""
    after = target.call("GET", "/status").json()["cursor"]
    batch = source.call("GET", "/events", params={"after": after}).json()
    if not batch["events"]:
        return 0, batch["more"]
    gone = [digest for digest in digests_named_by(batch["events"]) if not _copy_blob(source, target, digest)]
    result = target.call("POST", "/apply", json={"events": batch["events"], "gone": gone}).json()
    report("applied %d event(s), skipped %d, cursor now %d" % (result["applied"], result["skipped"],
                                                               result["cursor"]))
    return result["applied"], batch["more"]


def digests_named_by(events):
    """Every digest the events name, once each, in order."""
    return list(dict.fromkeys(digest for event in events for _, digest in named_digests(event["payload"])))


def _copy_blob(source, target, digest):
    """Make sure the target holds ``digest``'s bytes; False when the source no longer has them either."""
    if target.call("HEAD", "/blobs/" + digest, expect=(200, 404)).status_code == 200:
        return True
    with source.call("GET", "/blobs/" + digest, expect=(200, 404), stream=True) as download:
        if download.status_code == 404:
            return False
        store = download.headers.get("X-Depot-Blob-Store", "")
        target.call("PUT", "/blobs/" + digest, expect=(201,), params={"store": store},
                    data=download.iter_content(1024 * 1024))
    return True

