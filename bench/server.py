"""A real Depot server for the benchmarks: `python -m app serve` on a temporary data dir, as it ships."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import json
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-admin-password"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchServer:
    """Started on entering, stopped (and its data dir removed) on leaving. ``args``: more `serve` options.
    ``data_dir``: serve this one (made beforehand, e.g. by bench/bulk_load.py) instead of a new temporary one;
    it is removed on leaving all the same."""

    def __init__(self, args=(), data_dir=None, env=None):
        self.args = list(args)
        self.given_data_dir = data_dir
        self.env = dict(env or {})  # more environment (DEPOT_STATE_URL ...)
        self.data_dir = self.proc = None

    def __enter__(self):
        self.data_dir = self.given_data_dir or tempfile.mkdtemp(prefix="depot-bench-")
        port = free_port()
        env = dict(os.environ, DEPOT_ADMIN_PASSWORD=PASSWORD, DEPOT_BCRYPT_ROUNDS="4")
        env.pop("DEPOT_DATABASE_URL", None)
        env.update(self.env)
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), "--data-dir",
                                      self.data_dir, *self.args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + 60
        while True:  # polling a child process's readiness: the one wait here, outside anything measured
            try:
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
        token = requests.post(self.url + "/auth/login", json={"username": "admin", "password": PASSWORD},
                              timeout=30).json()["token"]
        self.auth = {"Authorization": "Bearer " + token}
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def memory_kib(self):
        """(resident, peak resident) memory of the server process, in KiB."""
        return memory_kib(self.proc.pid)


def memory_kib(pid):
    """(resident, peak resident) memory of process ``pid``, in KiB (VmRSS and VmHWM from /proc)."""
    with open("/proc/%d/status" % pid) as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def write_results(results, name, path=None):
    """Write a benchmark's figures as JSON to ``path`` (default: bench/results/<name>-<time>.json); -> the path."""
    out = path or ROOT / "bench" / "results" / ("%s-%s.json" % (name, time.strftime("%Y%m%d-%H%M%S")))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print("\nresults written to %s" % out)
    return out


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class MemorySampler(threading.Thread):
    """The highest VmRSS of ``pid`` seen while running, sampled every ``interval`` seconds."""

    def __init__(self, pid, interval=0.005):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, memory_kib(pid)[0]
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, memory_kib(self.pid)[0])

    def stop(self):
        self.done.set()
        self.join()
        return self.peak
