#!/usr/bin/env python3
"""Upload and download throughput of a real server, and how much memory its worker needs for them.

Starts `python -m app serve` on a temporary data dir, publishes one artifact of --mib MiB (default 1024)
through the publish route as a chunked stream generated on the fly (the client never holds it either), then
downloads it, checking the digest both ways. Prints MiB/s each way and the server process's peak resident
memory (VmHWM) before and after: streaming means the peak does not grow with the body.

    python3 bench/bench_streaming.py [--mib 1024]
"""
import argparse
import hashlib
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server import BenchServer  # noqa: E402

CHUNK = 1024 * 1024


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
    with BenchServer() as server:
        before = server.memory_kib()[1]
        sent = hashlib.sha256()
        started = time.perf_counter()
        response = requests.put(server.url + "/v1/bench/big/1.0.0/any/blob", data=body(args.mib, sent),
                                headers=server.auth, timeout=3600)
        upload = time.perf_counter() - started
        assert response.status_code == 201, response.text
        assert response.json()["blob_digest"] == "sha256:" + sent.hexdigest()
        after_upload = server.memory_kib()[1]

        received = hashlib.sha256()
        started = time.perf_counter()
        with requests.get(server.url + "/v1/bench/big/1.0.0/any/blob", headers=server.auth, stream=True,
                          timeout=3600) as down:
            assert down.status_code == 200
            for chunk in down.iter_content(CHUNK):
                received.update(chunk)
        download = time.perf_counter() - started
        assert received.hexdigest() == sent.hexdigest()
        after_download = server.memory_kib()[1]

    print("%d MiB through one server (spooled by the front end, then hashed into the store's .tmp and renamed "
          "into place)" % args.mib)
    print("upload    %7.1f MiB/s  (first byte sent to 201, fsynced)" % (args.mib / upload))
    print("download  %7.1f MiB/s  (sent from the file by the server's I/O thread)" % (args.mib / download))
    print("server peak RSS: %.1f MiB at start, %.1f MiB after the upload, %.1f MiB after the download"
          % (before / 1024, after_upload / 1024, after_download / 1024))
    growth = (after_download - before) / 1024
    print("peak grew by %.1f MiB for a %d MiB body: %s" % (growth, args.mib, "bounded" if growth < 64 else
                                                          "NOT bounded"))
    return 0 if growth < 64 else 1


if __name__ == "__main__":
    sys.exit(main())
