"""`serve --workers N`: N server processes on one listening socket, over stores every process shares.

The embedded stores belong to one process (RocksDB's lock is the data dir's lease; a blob store's leftover uploads
are removed when it opens; caches, login limits and revocations live in the process), so several processes need
the shared ones: DEPOT_STATE_URL (PostgreSQL), DEPOT_BLOB_URL (S3) and DEPOT_CACHE_URL (Redis). The supervisor
(this module) opens the data dir once, so that the first start (migrations, the schema's first version, the
admin, the signing key) happens once, then holds the data dir's lease and binds the socket; each worker is
`python -m app serve` on that socket (inherited: the kernel hands each connection to one of them), with a data dir
of its own under <data-dir>/workers/ (its lease and temporary files) and the signing key and SQL database of the
main one. A worker that dies is started again; SIGTERM or SIGINT stops them all.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

SHARED_STORES = {"DEPOT_STATE_URL": "the state (documents, indexes, event log) in PostgreSQL",
                 "DEPOT_BLOB_URL": "the blobs in a bucket",
                 "DEPOT_CACHE_URL": "caches, login limits and revocations in Redis"}
WORKERS_DIR = "workers"
BACKLOG = 1024
QUICK_DEATH_SECONDS = 10.0  # a worker dying sooner after its start counts towards giving up
QUICK_DEATHS = 3


def missing_shared_stores(environ: "os._Environ[str] | dict[str, str]") -> list[str]:
    """The settings naming shared stores that are not set (several workers need all of them)."""
    return [name for name in SHARED_STORES if not environ.get(name)]


def refusal(workers: int, missing: list[str]) -> str:
    return ("--workers %d: the data dir's embedded stores (RocksDB, files, in-process caches) serve one process; "
            "several need every store shared. Set %s" % (workers, "; ".join(
                "%s (%s)" % (name, SHARED_STORES[name]) for name in missing)))


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening, inheritable by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.set_inheritable(True)
    return sock


@dataclass
class Worker:
    number: int
    argv: list[str]
    process: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
    started: float = 0.0
    quick_deaths: int = 0

    def start(self, env: dict[str, str], fd: int) -> None:
        self.process = subprocess.Popen(self.argv, env=env, pass_fds=(fd,))
        self.started = time.monotonic()


class _StopRequested(Exception):
    """SIGTERM or SIGINT: raised out of the wait (a retried system call would not return)."""


@dataclass
class Supervisor:
    """Starts the workers, starts again one that dies (giving up after QUICK_DEATHS deaths in a row each within
    QUICK_DEATH_SECONDS of its start), stops them all on SIGTERM/SIGINT."""
    workers: list[Worker]
    env: dict[str, str]
    sock: socket.socket
    stopping: bool = False
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for worker in self.workers:
            worker.start(self.env, self.sock.fileno())
        try:
            return self._watch()
        except _StopRequested:
            return 0
        finally:
            self._end_all()
            self.sock.close()

    def _stop(self, *_: object) -> None:
        if not self.stopping:
            self.stopping = True
            raise _StopRequested

    def _watch(self) -> int:
        while not self.stopping:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 1
            except InterruptedError:
                continue
            worker = next((w for w in self.workers if w.process is not None and w.process.pid == pid), None)
            if worker is None or self.stopping:
                continue
            worker.process.returncode = os.waitstatus_to_exitcode(status)  # type: ignore[union-attr]
            quick = time.monotonic() - worker.started < QUICK_DEATH_SECONDS
            worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
            if worker.quick_deaths >= QUICK_DEATHS:
                self.log("error: worker %d ended %d times right after starting; stopping" % (
                    worker.number, worker.quick_deaths))
                return 1
            self.log("worker %d ended (exit %s); starting it again" % (worker.number, worker.process.returncode))
            worker.start(self.env, self.sock.fileno())
        return 0

    def _end_all(self) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in running:
            try:
                process.terminate()
            except ProcessLookupError:
                pass
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
