"""The HTTP load clients the benchmarks drive (bench/run.py, bench_npm.py, bench_oci.py): wrk (Debian's `wrk`)
when it is installed, else Python threads.

Every client returns the same figures: requests/s over the whole run, p50 and p99 latency in seconds, the number
of requests, and the body bytes received per second. Any answer but the expected status is fatal (the run
stops with the answer), so a figure never counts refusals.

- ``rate``: back-to-back requests of one URL from ``connections`` keep-alive connections for ``seconds``.
- ``publishes``: back-to-back PUTs of distinct 1 KiB artifacts (each its own version, and its own bytes, so
  every publish stores a new blob) from ``connections`` connections; with wrk, by a generated Lua script.
- ``sequential``: one connection, one request at a time, until both ``min_requests`` and ``seconds`` are
  reached: the latencies themselves (for queries slow enough that a few dozen samples are all a round gets).
"""
import http.client
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.server import percentile

PUBLISH_BYTES = 1024
WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def wrk_installed():
    return shutil.which("wrk") is not None


def wrk_version():
    if not wrk_installed():
        return None
    answer = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    found = re.search(r"wrk ([\w.\-]+)", answer.stdout + answer.stderr)
    return found.group(1) if found else "unknown"


# ---------------------------------------------------------------------------------------------- wrk

def _run_wrk(url, connections, seconds, headers=(), script=None):
    argv = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", "%ds" % max(1, round(seconds)),
            "--latency", "--timeout", "60s"]
    for key, value in dict(headers).items():
        argv += ["-H", "%s: %s" % (key, value)]
    if script is not None:
        argv += ["-s", str(script)]
    output = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx or 3xx responses" in output or "Socket errors" in output:
        raise SystemExit("%s: wrk saw failures:\n%s" % (url, output))
    figures = {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
               "requests": int(re.search(r"(\d+) requests in", output).group(1))}
    found = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", output)
    figures["bytes_per_s"] = float(found.group(1)) * SIZE_UNITS[found.group(2)]
    for label, key in (("50%", "p50"), ("99%", "p99")):
        found = re.search(r"^\s+%s\s+([\d.]+)(us|ms|s|m)\s*$" % re.escape(label), output, re.MULTILINE)
        figures[key] = float(found.group(1)) * WRK_UNITS[found.group(2)]
    return figures


# Each wrk thread runs the script in its own Lua state, numbered by setup() (`id`): the versions "<id>.<n>.0" of
# two threads never collide, and each body starts with them, so no two publishes send the same bytes.
PUBLISH_LUA = """
local prefix = %(prefix)s
local headers = {%(headers)s}
local filler = string.rep("x", %(filler)d)
local counter = 0
local threads = {}
id = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function request()
  counter = counter + 1
  local body = string.format("%%08d-%%015d", id, counter) .. filler
  return wrk.format("PUT", prefix .. "/" .. id .. "." .. counter .. ".0/any/blob", headers, body)
end
"""


def _lua_string(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def wrk_publishes(base_url, prefix, headers, connections, seconds):
    headers = dict(headers, **{"Content-Type": "application/octet-stream"})
    script = PUBLISH_LUA % {"prefix": _lua_string(prefix), "filler": PUBLISH_BYTES - 24,
                            "headers": ", ".join("[%s] = %s" % (_lua_string(k), _lua_string(v))
                                                 for k, v in headers.items())}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        return _run_wrk(base_url, connections, seconds, script=handle.name)
    finally:
        Path(handle.name).unlink()


# ---------------------------------------------------------------------------------------------- Python

def _python_load(base_url, make_request, headers, connections, seconds, expect):
    """``connections`` threads, each on its own keep-alive connection, sending ``make_request(worker, n)`` ->
    (method, path, body) back to back for ``seconds``."""
    parts = urlsplit(base_url)
    latencies, received, failures = [], [], []
    start_together = threading.Barrier(connections)

    def client(worker):
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        buffer = memoryview(bytearray(1 << 20))
        mine, total, count = [], 0, 0
        start_together.wait()
        ends = time.monotonic() + seconds
        while time.monotonic() < ends and not failures:
            count += 1
            method, path, body = make_request(worker, count)
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            while True:
                read = answer.readinto(buffer)
                if not read:
                    break
                total += read
            mine.append(time.perf_counter() - started)
            if answer.status != expect:
                failures.append("%s %s answered %d" % (method, path, answer.status))
        connection.close()
        latencies.extend(mine)
        received.append(total)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(worker + 1,)) for worker in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(failures[0])
    return {"rate": len(latencies) / elapsed, "requests": len(latencies), "bytes_per_s": sum(received) / elapsed,
            "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)}


def publish_body(worker, count):
    head = b"%08d-%015d" % (worker, count)
    return head + b"x" * (PUBLISH_BYTES - len(head))


# ---------------------------------------------------------------------------------------------- the interface

def rate(client, url, headers, connections, seconds):
    """Requests/s, p50, p99 of GETs of ``url`` (each answered 200)."""
    if client == "wrk":
        return _run_wrk(url, connections, seconds, headers)
    parts = urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    return _python_load(url, lambda worker, count: ("GET", path, None), headers, connections, seconds, 200)


def publishes(client, base_url, prefix, headers, connections, seconds):
    """Publishes/s (each answered 201) of distinct 1 KiB artifacts ``<prefix>/<worker>.<n>.0/any/blob``."""
    if client == "wrk":
        return wrk_publishes(base_url, prefix, headers, connections, seconds)
    headers = dict(headers, **{"Content-Type": "application/octet-stream"})
    return _python_load(base_url, lambda worker, count: (
        "PUT", "%s/%d.%d.0/any/blob" % (prefix, worker, count), publish_body(worker, count)),
        headers, connections, seconds, 201)


def sequential(url, headers, seconds, min_requests):
    """Latencies (s) of GETs of ``url`` one at a time on one keep-alive connection (each answered 200)."""
    parts = urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    latencies, ends = [], time.monotonic() + seconds
    try:
        while len(latencies) < min_requests or time.monotonic() < ends:
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            answer.read()
            latencies.append(time.perf_counter() - started)
            if answer.status != 200:
                raise SystemExit("GET %s answered %d" % (url, answer.status))
    finally:
        connection.close()
    return latencies
