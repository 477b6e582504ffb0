#!/usr/bin/env python3
"""Upload and download throughput of a real server, and how much memory its worker needs for them.

Starts `python -m app serve` on a temporary data dir, publishes one artifact of --mib MiB (default 1024)
through the publish route as a chunked stream generated on the fly (the client never holds it either), then
downloads it, checking the digest both ways. Prints MiB/s each way and the worker process's peak resident
memory (VmHWM) before and after: streaming means the peak does not grow with the body.

    python3 bench/bench_streaming.py [--mib 1024]
"""
import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1024 * 1024
PASSWORD = "bench-admin-password"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir):
    port = free_port()
    env = dict(os.environ, DEPOT_ADMIN_PASSWORD=PASSWORD, DEPOT_BCRYPT_ROUNDS="4")
    env.pop("DEPOT_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), "--data-dir", data_dir],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 60
    while True:  # polling a child process's readiness: the one wait here, outside anything measured
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)


def worker_peak_rss_kib(master_pid):
    """VmHWM of the gunicorn worker (the master's child that serves requests), in KiB."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry) as handle:
                status = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        if status.get("PPid", "").strip() == str(master_pid):
            return int(status["VmHWM"].split()[0])
    raise SystemExit("no worker process found under %d" % master_pid)


def body(mib, hasher):
    """``mib`` MiB of varied bytes, made chunk by chunk and hashed as they go."""
    block = hashlib.sha256(b"depot").digest() * (CHUNK // 32)
    for i in range(mib):
        chunk = block[i % 251:] + block[:i % 251]
        hasher.update(chunk)
        yield chunk


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="body size in MiB (default 1024)")
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="depot-bench-stream-")
    proc = None
    try:
        proc, url = start_server(data_dir)
        token = requests.post(url + "/auth/login", json={"username": "admin", "password": PASSWORD},
                              timeout=30).json()["token"]
        headers = {"Authorization": "Bearer " + token}
        before = worker_peak_rss_kib(proc.pid)

        sent = hashlib.sha256()
        started = time.perf_counter()
        response = requests.put(url + "/v1/bench/big/1.0.0/any/blob", data=body(args.mib, sent), headers=headers,
                                timeout=3600)
        upload = time.perf_counter() - started
        assert response.status_code == 201, response.text
        assert response.json()["digest"] == "sha256:" + sent.hexdigest()
        after_upload = worker_peak_rss_kib(proc.pid)

        received = hashlib.sha256()
        started = time.perf_counter()
        with requests.get(url + "/v1/bench/big/1.0.0/any/blob", headers=headers, stream=True, timeout=3600) as down:
            assert down.status_code == 200
            for chunk in down.iter_content(CHUNK):
                received.update(chunk)
        download = time.perf_counter() - started
        assert received.hexdigest() == sent.hexdigest()
        after_download = worker_peak_rss_kib(proc.pid)

        print("%d MiB through one server (staged in the store's .tmp, renamed into place)" % args.mib)
        print("upload    %7.1f MiB/s  (hashed while written, fsynced)" % (args.mib / upload))
        print("download  %7.1f MiB/s  (served from the file)" % (args.mib / download))
        print("worker peak RSS: %.1f MiB at start, %.1f MiB after the upload, %.1f MiB after the download"
              % (before / 1024, after_upload / 1024, after_download / 1024))
        growth = (after_download - before) / 1024
        print("peak grew by %.1f MiB for a %d MiB body: %s" % (growth, args.mib,
                                                              "bounded" if growth < 64 else "NOT bounded"))
        return 0 if growth < 64 else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
