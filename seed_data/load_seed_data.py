"""Load Depot's seed data over HTTP: publish every artifact of a seed file, then set its tags.

    python seed_data/load_seed_data.py --url http://127.0.0.1:5000 --username admin --password ...
    python seed_data/load_seed_data.py --url http://127.0.0.1:5000 --token dpt_... [--file my_seed.json]

Re-running is safe: an artifact already stored with the same digest, or a tag already pointing at the same
target, counts as "already present". A different digest or tag target at the same coordinates is a failure
(published versions and tags are immutable). Exit status 0 when nothing failed, 1 when a step failed, 2 on a
usage, file, connection or login error.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import sys

import requests
from tqdm import tqdm

DEFAULT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "example_packages.json")
TIMEOUT_S = 30
PUBLISHED, PRESENT, FAILED = "published", "already present", "failed"


class Fatal(Exception):
    """An error that stops the whole run (bad file, server unreachable, login refused)."""


class StepFailed(Exception):
    """One artifact or tag could not be loaded; the run goes on with the next one."""


# --- command line and seed file ----------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description="Publish Depot's seed packages and tags over HTTP.")
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--username", help="user to log in as (with --password)")
    parser.add_argument("--password", help="that user's password")
    parser.add_argument("--token", help="an API token (dpt_...) or login token, instead of username/password")
    parser.add_argument("--file", default=DEFAULT_FILE, help="seed file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.token and (args.username or args.password):
        parser.error("give either --token or --username/--password, not both")
    if not args.token and not (args.username and args.password):
        parser.error("give --username and --password, or --token")
    args.url = args.url.rstrip("/")
    return args


def load_seed_file(path):
    try:
        with open(path, encoding="utf-8") as handle:
            seed = json.load(handle)
    except (OSError, ValueError) as exc:
        raise Fatal("cannot read seed file %s: %s" % (path, exc))
    if not isinstance(seed, dict) or not isinstance(seed.get("artifacts"), list):
        raise Fatal("seed file %s has no 'artifacts' list" % path)
    seed.setdefault("tags", [])
    return seed


# --- HTTP helpers ------------------------------------------------------------------------------------------

def request(session, method, url, **kwargs):
    """One HTTP request; an unreachable server becomes a Fatal with a one-line reason, not a traceback."""
    try:
        return session.request(method, url, timeout=TIMEOUT_S, **kwargs)
    except requests.ConnectionError as exc:
        raise Fatal("cannot connect to %s (%s); is the server running?" % (url, short_reason(exc)))
    except requests.RequestException as exc:
        raise Fatal("request %s %s failed: %s" % (method, url, short_reason(exc)))


def short_reason(exc):
    """'Connection refused' rather than urllib3's nested repr, when it can be found."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] ([^)'\"]+)", text)
    return found.group(1) if found else text


def describe_error(response):
    """'HTTP 409 CONFLICT: message' from Depot's JSON error envelope (or the raw body when it is not JSON)."""
    try:
        error = response.json().get("error") or {}
        code, message = error.get("code", "?"), error.get("message", "")
    except (ValueError, AttributeError):
        code, message = "-", response.text.strip()[:200]
    return "HTTP %d %s: %s" % (response.status_code, code, message)


def login(session, url, username, password):
    response = request(session, "POST", url + "/auth/login", json={"username": username, "password": password})
    if response.status_code != 200:
        raise Fatal("login as %r failed: %s" % (username, describe_error(response)))
    return response.json()["token"]


def check_can_write(session, url):
    """Stop early, before any step, when the token is refused or cannot publish."""
    response = request(session, "GET", url + "/auth/me")
    if response.status_code != 200:
        raise Fatal("the server refused the credentials: %s" % describe_error(response))
    scopes = set(response.json().get("scopes") or ())
    if not scopes & {"write", "admin"}:
        raise Fatal("these credentials have scopes %s; publishing needs 'write'" % sorted(scopes))


# --- artifacts ---------------------------------------------------------------------------------------------

def artifact_label(artifact):
    return "%(namespace)s/%(name)s %(version)s (%(variant)s)" % artifact


def artifact_path(artifact):
    return "/v1/%(namespace)s/%(name)s/%(version)s/%(variant)s" % artifact


def content_bytes(artifact):
    return artifact["content"].encode("utf-8")


def sha256_digest(body):
    return "sha256:" + hashlib.sha256(body).hexdigest()


def content_digest_header(body):
    return "sha-256=:%s:" % base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def publish_headers(artifact, body):
    headers = {"Content-Digest": content_digest_header(body), "Content-Type": "application/octet-stream"}
    if artifact.get("description"):
        headers["X-Depot-Description"] = artifact["description"]
    for key, value in (artifact.get("labels") or {}).items():
        headers["X-Depot-Label-" + key] = value
    check_header_safe(headers)
    return headers


def check_header_safe(headers):
    """Descriptions and labels travel in headers: refuse what HTTP cannot carry unchanged."""
    for name, value in headers.items():
        if "_" in name:
            raise StepFailed("label key in header %r contains '_', which HTTP servers drop or turn into '-'" % name)
        if not value.isascii() or any(ch in value for ch in "\r\n") or value != value.strip():
            raise StepFailed("header %s: value must be ASCII on one line without outer spaces" % name)


def read_existing(session, url, what):
    """The JSON document at ``url``, or None when nothing is there (404)."""
    response = request(session, "GET", url)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise StepFailed("reading %s: %s" % (what, describe_error(response)))
    return response.json()


def existing_digest(session, url, artifact):
    """The stored digest of these coordinates, or None when nothing is stored there."""
    meta = read_existing(session, url + artifact_path(artifact), "metadata")
    return None if meta is None else meta.get("blob_digest")


def check_existing(session, url, artifact, digest):
    """PRESENT when the same bytes are stored, None when nothing is; StepFailed on a different digest."""
    stored = existing_digest(session, url, artifact)
    if stored is None:
        return None
    if stored != digest:
        raise StepFailed("conflict: already published with digest %s, the seed file's content has %s"
                         % (stored, digest))
    return PRESENT


def publish_artifact(session, url, artifact):
    body = content_bytes(artifact)
    digest = sha256_digest(body)
    present = check_existing(session, url, artifact, digest)
    if present:
        return present
    response = request(session, "PUT", url + artifact_path(artifact) + "/blob", data=body,
                       headers=publish_headers(artifact, body))
    if response.status_code == 201:
        return PUBLISHED
    if response.status_code == 409:
        return recheck_after_conflict(session, url, artifact, digest, response)
    raise StepFailed("publish: %s" % describe_error(response))


def recheck_after_conflict(session, url, artifact, digest, response):
    """A 409 on publish: someone stored these coordinates meanwhile; fine only if with the same bytes."""
    try:
        if check_existing(session, url, artifact, digest):
            return PRESENT
    except StepFailed as exc:
        raise StepFailed("publish: %s; %s" % (describe_error(response), exc))
    raise StepFailed("publish: %s" % describe_error(response))


# --- tags --------------------------------------------------------------------------------------------------

def tag_label(tag):
    return "tag %(namespace)s/%(name)s:%(tag)s -> %(version)s (%(variant)s)" % tag


def tag_path(tag):
    return "/v1/%(namespace)s/%(name)s/tags/%(tag)s" % tag


def check_existing_tag(session, url, tag):
    """PRESENT when the tag already points at the seed file's target, None when it is not set."""
    current = read_existing(session, url + tag_path(tag), "tag")
    if current is None:
        return None
    target = (current.get("version"), current.get("variant"))
    if target != (tag["version"], tag["variant"]):
        raise StepFailed("conflict: tag already points at %s (%s) and tags are immutable" % target)
    return PRESENT


def set_tag(session, url, tag):
    present = check_existing_tag(session, url, tag)
    if present:
        return present
    body = {"version": tag["version"], "variant": tag["variant"]}
    response = request(session, "PUT", url + tag_path(tag), json=body)
    if response.status_code in (200, 201):
        return PUBLISHED
    if response.status_code == 409:
        return recheck_tag_after_conflict(session, url, tag, response)
    raise StepFailed("set tag: %s" % describe_error(response))


def recheck_tag_after_conflict(session, url, tag, response):
    try:
        if check_existing_tag(session, url, tag):
            return PRESENT
    except StepFailed as exc:
        raise StepFailed("set tag: %s; %s" % (describe_error(response), exc))
    raise StepFailed("set tag: %s" % describe_error(response))


# --- the run -----------------------------------------------------------------------------------------------

def run_step(step, session, url, item, label, counts):
    """Run one step, print its outcome, count it."""
    try:
        outcome = step(session, url, item)
    except StepFailed as exc:
        outcome = FAILED
        tqdm.write("FAILED  %s: %s" % (label, exc), file=sys.stdout)
    except (KeyError, TypeError, AttributeError) as exc:
        outcome = FAILED
        tqdm.write("FAILED  %s: malformed seed entry or response (%r)" % (label, exc), file=sys.stdout)
    else:
        tqdm.write("%-15s %s" % (outcome, label), file=sys.stdout)
    counts[outcome] += 1


def entry_label(describe, item):
    try:
        return describe(item)
    except (KeyError, TypeError):
        return "entry %r" % (item,)


def load_all(session, url, seed):
    counts = {PUBLISHED: 0, PRESENT: 0, FAILED: 0}
    steps = [(publish_artifact, a, entry_label(artifact_label, a)) for a in seed["artifacts"]]
    steps += [(set_tag, t, entry_label(tag_label, t)) for t in seed["tags"]]
    for step, item, label in tqdm(steps, desc="seeding", unit="step", file=sys.stderr):
        run_step(step, session, url, item, label, counts)
    return counts


def summary_line(counts):
    return "summary: %d published, %d already present, %d failed" % (counts[PUBLISHED], counts[PRESENT],
                                                                      counts[FAILED])


def main(argv=None):
    args = parse_args(argv)
    session = requests.Session()
    try:
        seed = load_seed_file(args.file)
        token = args.token or login(session, args.url, args.username, args.password)
        session.headers["Authorization"] = "Bearer " + token
        check_can_write(session, args.url)
        counts = load_all(session, args.url, seed)
    except Fatal as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    print(summary_line(counts))
    return 1 if counts[FAILED] else 0


if __name__ == "__main__":
    sys.exit(main())
