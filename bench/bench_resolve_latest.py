#!/usr/bin/env python3
"""Throughput of the compiled `resolve_latest` route against a hand-written Flask view doing the same work.

One run: a temporary data dir, a Depot over the reference schema, packages published through the real publish
route, then requests/second of

    compiled       GET /v1/{namespace}/{name}/latest on Depot's app (the compiled pipeline)
    handwritten    the same work written by hand as a Flask view on the same app (same request-id hooks,
                   its own URL), so the difference is what the engine costs
    hand-plain     the same view alone on a plain Flask app (no Depot hooks), for reference

Every variant is driven in-process by calling the WSGI app with a prepared environ (no sockets, no test-client
overhead), with the same requests, in interleaved rounds. Every variant's status and body are first checked
byte-identical.

    python3 bench/bench_resolve_latest.py [--seconds 30] [--rounds 10] [--profile]
"""
import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED_SCHEMA = ROOT.parent / "shared" / "reference" / "schema.json"
FIXTURE_SCHEMA = ROOT / "tests" / "fixtures" / "reference_schema.json"
HAND_SUFFIX = "-by-hand"  # the view answers /v1/<ns>/<name>/latest-by-hand: a URL of the same shape, so
# routing costs the two variants the same (a static prefix such as /_bench/... would match faster)
VARIANT = "linux-amd64"
VERSIONS = ["%d.%d.%d" % (i // 5, (i % 5) * 3, i % 3) for i in range(20)]  # semver order != string order

# The hand-written view's own copies of what the schema declares; checked against the schema at start-up.
SEGMENT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def index_prefix(head, namespace, name):
    """The by_name key prefix, encoded by hand (the order-preserving string encoding of app.stores.sortkeys)."""
    return (head + namespace.encode("utf-8").replace(b"\x00", b"\x00\xff") + b"\x00\x01"
            + name.encode("utf-8").replace(b"\x00", b"\x00\xff") + b"\x00\x01")


# --- the hand-written view ----------------------------------------------------------------------------------

def make_handwritten_view(service):
    """A Flask view doing resolve_latest's work by hand: the same JWT check, normalisation, regexes, index scan
    and JSON body, with no pipeline, templates or per-request context objects."""
    from flask import Response, request

    from app.errors import DepotError
    from app.identity.auth import credentials_required

    auth = service.identity
    state = service.engine.state
    index = service.engine.compiled.definitions["index"]["artifact_versions"]
    head = state.codec(index.key_for(["namespace", "name"])).head  # the embedded store's encoding of the key
    pattern = SEGMENT_RE.pattern

    def reply(status, payload, headers=None):
        return Response(json.dumps(payload, separators=(",", ":")).encode("utf-8"), status=status,
                        headers=headers, mimetype="application/json")

    def error(status, code, message, field=None, headers=None):
        body = {"code": code, "message": message}
        if field is not None:
            body["field"] = field
        return reply(status, {"error": body}, headers)

    def resolve_latest(namespace, name):
        for param, value in (("namespace", namespace), ("name", name)):
            if ".." in value or value == "." or "/" in value or "\\" in value or "\x00" in value:
                return error(400, "INVALID_PATH_PARAMETER",
                             "path parameter %s contains a forbidden sequence" % param, param)
        try:
            principal = auth.authenticate(request)
        except DepotError as exc:
            return error(exc.status, exc.code, exc.message, exc.field, exc.headers)
        if principal is None:
            refused = credentials_required()
            return error(refused.status, refused.code, refused.message, headers=refused.headers)
        scopes = principal["scopes"]
        if "read" not in scopes and "admin" not in scopes:
            return error(403, "FORBIDDEN", "a policy on this route requires scope(s): read")
        namespace = namespace.strip().lower()
        name = name.strip().lower().replace("_", "-")
        if not SEGMENT_RE.match(namespace):
            return error(400, "INVALID_FIELD", "namespace must match %s" % pattern, "namespace")
        if not SEGMENT_RE.match(name):
            return error(400, "INVALID_FIELD", "name must match %s" % pattern, "name")
        for _, raw in state.scan(index_prefix(head, namespace, name), 1):
            row = json.loads(raw)[1]
            return reply(200, {"namespace": namespace, "name": name, "version": row["version"],
                               "variant": row["variant"], "blob_digest": row["blob_digest"]})
        return error(404, "NOT_FOUND", "No versions found")

    return resolve_latest


def check_view_matches_schema(service, doc):
    """The hand-written view hard-codes what the schema declares; fail loudly if the schema has moved on."""
    entity = doc["entities"]["artifact"]
    regexes = {c["field"]: c["regex"] for c in entity["constraints"]}
    assert regexes["namespace"] == regexes["name"] == SEGMENT_RE.pattern, regexes
    assert entity["fields"]["namespace"]["normalize"] == ["trim", "lower"]
    assert entity["fields"]["name"]["normalize"] == ["trim", "lower", "replace:_:-"]
    route = next(r for r in doc["api"]["routes"] if r["id"] == "resolve_latest")
    assert [s["op"] for s in route["pipeline"]] == ["auth.require_scopes", "parse.path", "normalize.entity",
                                                    "validate.entity", "index.query", "respond.error",
                                                    "respond.json"], route["pipeline"]
    key = service.engine.compiled.definitions["index"]["artifact_versions"].key_for(["namespace", "name"])
    codec = service.engine.state.codec(key)
    assert codec.prefix_of(["team-a", "pkg\x00x"]) == index_prefix(codec.head, "team-a", "pkg\x00x")


# --- set-up -------------------------------------------------------------------------------------------------

def start_depot(data_dir, schema_path):
    """-> (the schema document, a LocalDepot serving it over ``data_dir``)."""
    os.environ["DEPOT_ADMIN_PASSWORD"] = "bench-admin-password"
    os.environ["DEPOT_BCRYPT_ROUNDS"] = "4"
    os.environ.pop("DEPOT_SECRET_KEY", None)
    os.environ.pop("DEPOT_DATABASE_URL", None)  # never point a benchmark at a real database
    from app.tools.testing import LocalDepot

    with open(schema_path, "rb") as handle:
        doc = json.load(handle)
    return doc, LocalDepot(data_dir, doc, schema_path=str(schema_path))


def publish(app, token, packages, versions):
    client = app.test_client()
    rng = random.Random(7)
    jobs = [(ns, name, version) for ns, name in packages for version in versions]
    rng.shuffle(jobs)
    started = time.perf_counter()
    for ns, name, version in jobs:
        response = client.put("/v1/%s/%s/%s/%s/blob" % (ns, name, version, VARIANT),
                              data=("%s/%s@%s\n" % (ns, name, version)).encode() * 8,
                              headers={"Authorization": "Bearer " + token})
        if response.status_code != 201:
            raise SystemExit("publish %s/%s@%s failed: %s %s" % (ns, name, version, response.status_code,
                                                                  response.get_data(as_text=True)))
    return len(jobs), time.perf_counter() - started


def request_paths(packages):
    """The timed requests: every package, spelled in ways normalisation must undo for a third of them."""
    paths = []
    for i, (ns, name) in enumerate(packages):
        if i % 3 == 1:
            ns, name = ns.upper(), name.upper().replace("-", "_")
        elif i % 3 == 2:
            ns, name = "%20" + ns, name.replace("-", "_") + "%20"
        paths.append("/v1/%s/%s/latest" % (ns, name))
    return paths


# --- driving a WSGI app in-process --------------------------------------------------------------------------

def prepare(path, authorization):
    from werkzeug.test import EnvironBuilder

    headers = {"Authorization": authorization} if authorization else {}
    builder = EnvironBuilder(path=path, method="GET", headers=headers)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call(app, environ):
    """One request through the WSGI callable: -> (status line, headers, body bytes)."""
    env = environ.copy()
    env["wsgi.input"] = io.BytesIO(b"")
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append((status, headers))

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = seen[-1]
    return status, headers, body


def run_batch(app, environs):
    """Send every prepared request once; -> seconds taken."""
    started = time.perf_counter()
    for environ in environs:
        env = environ.copy()
        env["wsgi.input"] = io.BytesIO(b"")
        result = app(env, _start_response)
        for _ in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return time.perf_counter() - started


def run_round(apps, environs, seconds):
    """One round: the variants take turns batch by batch (one pass over the requests each, the order reversed
    every turn) until ``seconds`` have passed, so a slow spell of the machine hits them all alike.
    -> {variant: requests per second}."""
    names = list(apps)
    spent = dict.fromkeys(names, 0.0)
    done = 0
    gc.collect()
    deadline = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < deadline:
        for name in (names if turn % 2 == 0 else names[::-1]):
            spent[name] += run_batch(apps[name], environs[name])
        done += len(environs[names[0]])
        turn += 1
    return {name: done / spent[name] for name in names}


def _start_response(status, headers, exc_info=None):
    return None


# --- checks -------------------------------------------------------------------------------------------------

def highest(versions):
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def check_identical(variants, cases, latest):
    """Every case must give the same status and byte-identical JSON body on every variant, and hits must name
    the highest published version."""
    problems = []
    for label, path, authorization, expect_status in cases:
        results = {}
        for vname, (app, suffix) in variants.items():
            status, headers, body = call(app, prepare(path + suffix, authorization))
            results[vname] = (status, dict(headers).get("Content-Type"), body)
        first = next(iter(results.values()))
        if any(r != first for r in results.values()):
            problems.append("%s (%s): %s" % (label, path, {k: (v[0], v[2]) for k, v in results.items()}))
        elif not first[0].startswith(str(expect_status)):
            problems.append("%s (%s): expected %s, got %s %s" % (label, path, expect_status, first[0], first[2]))
        elif expect_status == 200 and json.loads(first[2])["version"] != latest:
            problems.append("%s (%s): latest is %s, expected %s" % (label, path, first[2], latest))
    return problems


def correctness_cases(depot, paths, token):
    bearer = "Bearer " + token
    cases = [("timed request %d" % i, path, bearer, 200) for i, path in enumerate(paths)]
    cases += [
        ("admin scope", paths[0], "Bearer " + depot.token(["admin"], "root"), 200),
        ("no token", paths[0], None, 401),
        ("bad token", paths[0], "Bearer not-a-jwt", 401),
        ("wrong scheme", paths[0], "Basic Zm9vOmJhcg==", 401),
        ("write-only scope", paths[0], "Bearer " + depot.token(["write"], "w"), 403),
        ("unknown package", "/v1/team-a/no-such-package/latest", bearer, 404),
        ("invalid name", "/v1/team-a/bad$name/latest", bearer, 400),
        ("invalid namespace", "/v1/-team/pkg-000/latest", bearer, 400),
        ("backslash in name", "/v1/team-a/a%5Cb/latest", bearer, 400),
        ("dot-dot name", "/v1/team-a/../latest", bearer, 400),
        ("dot-dot inside name", "/v1/team-a/a..b/latest", bearer, 400),
        ("dot name", "/v1/team-a/./latest", bearer, 400),
        ("forbidden chars before auth", "/v1/team-a/a%5Cb/latest", None, 400),
    ]
    return cases


# --- profiling ----------------------------------------------------------------------------------------------

def profile(app, environs, requests):
    """cProfile ``requests`` requests: -> ({function: (calls, own us, cumulative us) per request}, us/request)."""
    rounds = max(1, requests // len(environs))
    run_batch(app, environs)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        run_batch(app, environs)
    profiler.disable()
    n = rounds * len(environs)
    per_request = {}
    for (filename, line, func), (_, calls, own, cum, _) in pstats.Stats(profiler).stats.items():
        if func == "run_batch":
            continue
        short = re.sub(r".*site-packages" + re.escape(os.sep), "", filename.replace(str(ROOT) + os.sep, ""))
        per_request["%s:%d(%s)" % (short, line, func)] = (calls / n, own / n * 1e6, cum / n * 1e6)
    return per_request, sum(v[1] for v in per_request.values())


def print_profiles(apps, environs, requests, top):
    """Where the compiled path spends time the hand-written one does not: a differential cProfile."""
    compiled, c_total = profile(apps["compiled"], environs["compiled"], requests)
    hand, h_total = profile(apps["handwritten"], environs["handwritten"], requests)
    zero = (0.0, 0.0, 0.0)
    print("\n== cProfile, %d requests each: compiled %.0f us/request, handwritten %.0f us/request (profiler "
          "overhead inflates both, call-heavy code most) ==" % (requests, c_total, h_total))
    print("\nextra own time per request, compiled minus handwritten (top %d):" % top)
    print("%9s %9s %9s %9s  %s" % ("extra us", "own us", "cum us", "calls", "function (compiled path)"))
    rows = sorted(compiled, key=lambda k: compiled[k][1] - hand.get(k, zero)[1], reverse=True)[:top]
    for key in rows:
        calls, own, cum = compiled[key]
        print("%9.2f %9.2f %9.2f %9.2f  %s" % (own - hand.get(key, zero)[1], own, cum, calls, key))
    print("\nfunctions only the compiled path calls, by cumulative time per request (top %d):" % top)
    only = sorted((k for k in compiled if k not in hand), key=lambda k: compiled[k][2], reverse=True)[:top]
    for key in only:
        calls, own, cum = compiled[key]
        print("%9.2f us cum %6.2f calls  %s" % (cum, calls, key))


def report(names, rps, rounds, slot, distinct):
    """The table, then the ratio; returns the ratio compiled/handwritten (median of the per-round ratios)."""
    med = {name: statistics.median(rps[name]) for name in names}
    print("\n%d rounds of %.2f s, variants interleaved batch by batch; %d distinct requests cycled; Python %s"
          % (rounds, slot, distinct, sys.version.split()[0]))
    print("%-12s %13s %10s %10s %10s" % ("variant", "median req/s", "min", "max", "us/req"))
    for name in names:
        print("%-12s %13.0f %10.0f %10.0f %10.1f" % (name, med[name], min(rps[name]), max(rps[name]),
                                                      1e6 / med[name]))
    paired = sorted(c / h for c, h in zip(rps["compiled"], rps["handwritten"]))
    ratio = statistics.median(paired)
    print("\nratio compiled/handwritten = %.3f  (median of per-round ratios, range %.3f..%.3f; ratio of the "
          "medians %.3f)" % (ratio, paired[0], paired[-1], med["compiled"] / med["handwritten"]))
    print("goal >= 0.90: %s; the compiled route costs %.1f us more per request"
          % ("met" if ratio >= 0.9 else "NOT met", 1e6 / med["compiled"] - 1e6 / med["handwritten"]))
    if "hand-plain" in med:
        plain = statistics.median(sorted(c / h for c, h in zip(rps["compiled"], rps["hand-plain"])))
        print("ratio compiled/hand-plain  = %.3f  (the view on a plain Flask app, without Depot's request-id "
              "hooks)" % plain)
    return ratio


# --- main ---------------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="total timed seconds, all variants (30)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per variant (10)")
    parser.add_argument("--packages", type=int, default=50, help="packages to publish (50)")
    parser.add_argument("--versions", type=int, default=20, help="versions per package (20, at most 20)")
    parser.add_argument("--schema", default=str(SHARED_SCHEMA if SHARED_SCHEMA.exists() else FIXTURE_SCHEMA),
                        help="schema to serve (the reference schema)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-Flask hand-written variant")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, cProfile the compiled and hand-written paths")
    parser.add_argument("--profile-requests", type=int, default=10000, help="requests per profiled path (10000)")
    parser.add_argument("--top", type=int, default=25, help="rows of each profile table (25)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)
    if not 1 <= args.versions <= len(VERSIONS):
        parser.error("--versions must be 1..%d" % len(VERSIONS))
    versions = VERSIONS[:args.versions]

    data_dir = tempfile.mkdtemp(prefix="depot-bench-")
    depot = None
    try:
        from flask import Flask

        doc, depot = start_depot(data_dir, args.schema)
        service, depot_app = depot.service, depot.app
        check_view_matches_schema(service, doc)
        view = make_handwritten_view(service)
        depot_app.add_url_rule("/v1/<namespace>/<name>/latest" + HAND_SUFFIX, "bench_handwritten", view,
                               methods=["GET"])
        plain_app = Flask("bench-plain")
        plain_app.add_url_rule("/v1/<namespace>/<name>/latest", "resolve_latest", view, methods=["GET"])

        packages = [("team-%s" % "ab"[i % 2], "pkg-%03d" % i) for i in range(args.packages)]
        writer = depot.token(["read", "write"], "bench-writer")
        count, took = publish(depot_app, writer, packages, versions)
        print("published %d artifacts (%d packages x %d versions) in %.1f s; data dir %s"
              % (count, len(packages), len(versions), took, data_dir))

        variants = {"compiled": (depot_app, ""), "handwritten": (depot_app, HAND_SUFFIX)}
        if not args.no_plain:
            variants["hand-plain"] = (plain_app, "")
        token = depot.token(["read"], "bench-reader")
        paths = request_paths(packages)
        cases = correctness_cases(depot, paths, token)
        problems = check_identical(variants, cases, highest(versions))
        if problems:
            print("MISMATCH between variants; not timing:\n  " + "\n  ".join(problems))
            return 1
        print("status and body byte-identical across variants on %d requests (%d timed paths + %d edge cases)"
              % (len(cases), len(paths), len(cases) - len(paths)))

        environs = {name: [prepare(p + suffix, "Bearer " + token) for p in paths]
                    for name, (_, suffix) in variants.items()}
        apps = {name: app for name, (app, _) in variants.items()}
        names = list(variants)
        slot = args.seconds / args.rounds
        run_round(apps, environs, min(1.0, slot))  # warm-up, not counted
        rps = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, value in run_round(apps, environs, slot).items():
                rps[name].append(value)
        report(names, rps, args.rounds, slot, len(paths))

        if args.profile:
            print_profiles(apps, environs, args.profile_requests, args.top)
        return 0
    finally:
        if depot is not None:
            depot.close()
        if args.keep:
            print("kept data dir %s" % data_dir)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
