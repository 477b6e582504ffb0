"""The HTTP front end: waitress, with the limits slow and hostile clients need and Depot's JSON error envelope.

Why waitress (the measured comparison is in bench/serving-stacks.md): one I/O thread reads every connection's
request head and body and writes every file response, so a slow client costs no worker thread; a request reaches
the app only once its whole body has arrived (spooled to an anonymous temporary file past 512 KiB, so memory
stays flat and a crash leaves nothing behind), so a body cut short is never taken for a whole one; and its own
errors can carry Depot's envelope. What it lacks is added here, decided every ``cleanup_interval`` on its I/O
thread:

- a deadline for the request line and headers (``header_timeout``), however slowly they trickle;
- a minimum average body rate (``min_body_rate`` bytes/s, once ``header_timeout`` has passed), so a body sent a
  byte at a time is cut;
- closing a connection whose response has not moved for ``idle_timeout`` while its request is still running
  (waitress's own ``channel_timeout``, the same value, covers idle and stalled connections otherwise);
- the names of the headers waitress drops (an underscore in the name) in the WSGI environ, so the app can refuse
  a request whose header it would have read rather than act as if it was never sent.

These hooks use waitress's channel and server internals: waitress is pinned, and tests/test_slow_clients.py
fails if an upgrade breaks them.
"""
import ctypes
import errno
import os
import itertools
import json
import logging
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Optional

from waitress.adjustments import Adjustments
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import (BadRequest, RequestEntityTooLarge, RequestHeaderFieldsTooLarge,
                                ServerNotImplemented)

log = logging.getLogger("depot")

MAX_REQUEST_LINE = 8190  # bytes, as common servers allow
MAX_HEADER_LINE = 8190
MAX_HEADERS = 100
MAX_HEAD_BYTES = 64 * 1024
DROPPED_HEADERS_KEY = "depot.dropped_headers"  # WSGI environ: names of request headers waitress left out
SENDFILE_BYTES = 8 * 1024 * 1024  # at most one sendfile call sends, so other connections get their turn
DISCONNECTED = frozenset({errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE,
                          errno.EBADF})


def next_request_id(prefix="%s-" % secrets.token_hex(4), counter=itertools.count(1)):
    """An X-Request-Id for the app's answers and waitress's own refusals: unique per process (random prefix) and
    cheap (request ids need not be secret)."""
    return "%s%x" % (prefix, next(counter))


class UriTooLong(BadRequest):
    code, reason = 414, "URI Too Long"


class BodyIncomplete(BadRequest):
    """The client stopped sending before its body was complete."""


# waitress's errors in Depot's words, the most specific class first. A transfer coding waitress cannot read is
# answered 400, not RFC 9112's suggested 501: the request cannot be framed, and a 5xx would blame the server.
class TlsOnPlainPort(BadRequest):
    """A TLS handshake sent to this plain-HTTP port."""


TLS_HANDSHAKE = 0x16  # a TLS record's first byte: handshake; no HTTP request line begins with it

_ERRORS = [(BodyIncomplete, 400, "BODY_INCOMPLETE"), (TlsOnPlainPort, 400, "PLAIN_HTTP_ONLY"),
           (UriTooLong, 414, "URI_TOO_LONG"),
           (RequestEntityTooLarge, 413, "PAYLOAD_TOO_LARGE"), (RequestHeaderFieldsTooLarge, 431, "HEADERS_TOO_LARGE"),
           (ServerNotImplemented, 400, "UNSUPPORTED_TRANSFER_ENCODING"), (BadRequest, 400, "BAD_REQUEST")]


def framing_problem(head):
    """What makes a request head unsafe to serve though waitress would parse it: an oversized request line or
    header, too many headers, obsolete line folding, or Content-Length beside Transfer-Encoding (the two
    smuggling shapes a proxy in front might read differently). -> a waitress Error, or None."""
    lines = head.split(b"\r\n")
    if len(lines[0]) > MAX_REQUEST_LINE:
        return UriTooLong("the request line exceeds %d bytes" % MAX_REQUEST_LINE)
    if len(lines) - 1 > MAX_HEADERS or any(len(line) > MAX_HEADER_LINE for line in lines[1:]):
        return RequestHeaderFieldsTooLarge("more than %d headers, or one over %d bytes" % (MAX_HEADERS,
                                                                                          MAX_HEADER_LINE))
    if any(line[:1] in (b" ", b"\t") for line in lines[1:]):
        return BadRequest("obsolete header line folding")
    names = {line.partition(b":")[0].strip().lower() for line in lines[1:]}
    if b"content-length" in names and b"transfer-encoding" in names:
        return BadRequest("both Content-Length and Transfer-Encoding")
    return None


def dropped_headers(head):
    """The names of the request's headers waitress leaves out of the WSGI environ: those with an underscore,
    which WSGI's HTTP_<NAME> keys could not tell from a hyphen (a smuggling shape behind some proxies)."""
    headers = head[head.find(b"\r\n"):]
    if b"_" not in headers:
        return ()
    names = (line.partition(b":")[0].strip() for line in headers.split(b"\r\n"))
    return tuple(name.decode("latin-1") for name in names if b"_" in name)


class GuardedParser(HTTPRequestParser):
    dropped_headers = ()

    def parse_header(self, header_plus):
        problem = framing_problem(header_plus)
        if problem is None:
            self.dropped_headers = dropped_headers(header_plus)
            return super().parse_header(header_plus)
        super().parse_header(b"GET / HTTP/1.0\r\n")  # the fields an error answer needs
        self.error = problem


class DepotTask(WSGITask):
    """A request run by the app: its environ names the headers waitress dropped (DROPPED_HEADERS_KEY), so an op
    that would have read one can refuse the request rather than act as if it had not been sent."""

    def get_environment(self):
        environ = super().get_environment()
        if self.request.dropped_headers:
            environ[DROPPED_HEADERS_KEY] = self.request.dropped_headers
        return environ


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    threads: int = 16
    connection_limit: int = 1000
    header_timeout: float = 20.0
    idle_timeout: float = 60.0
    min_body_rate: int = 1024
    max_body_bytes: int = 2 ** 31
    cleanup_interval: float = 1.0
    listen_fd: Optional[int] = None  # a listening socket inherited (serve --workers): served instead of host:port

    def adjustments(self):
        return Adjustments(host=self.host, port=self.port, threads=self.threads,
                           connection_limit=self.connection_limit, channel_timeout=self.idle_timeout,
                           cleanup_interval=self.cleanup_interval, ident="depot", expose_tracebacks=False,
                           max_request_body_size=self.max_body_bytes + 1,  # waitress refuses sizes >= its limit
                           max_request_header_size=MAX_HEAD_BYTES,
                           # X-Forwarded-* reach the app, which believes them only from a trusted proxy's
                           # address (app/http/forwarding.py: networks, which waitress's one address cannot say)
                           clear_untrusted_proxy_headers=False,
                           asyncore_use_poll=True)  # select() stops at 1024 descriptors


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (malformed requests that never reach the app) in Depot's JSON envelope."""

    def execute(self):
        error = self.request.error
        status, code = next(((s, c) for kind, s, c in _ERRORS if isinstance(error, kind)), (500, "INTERNAL_ERROR"))
        message = "%s: %s" % (error.reason, error.body)
        if code == "PAYLOAD_TOO_LARGE":  # waitress's own limit is one byte over Depot's
            message = "request body exceeds max_request_body_bytes (%d)" % self.channel.server.settings.max_body_bytes
        body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
        self.status = "%d %s" % (status, error.reason if status == error.code else "Bad Request")
        self.response_headers.extend([("Content-Type", "application/json"), ("X-Request-Id", next_request_id())])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):
    """A connection that notes when the request it is receiving began and how many bytes it has brought, and
    answers 400 BODY_INCOMPLETE when the client stops sending (a half-close) before its body is complete."""

    task_class = DepotTask
    error_task_class = JsonErrorTask
    parser_class = GuardedParser
    request_began = 0.0
    request_bytes = 0
    sending_ended = False

    def readable(self):
        return not self.sending_ended and super().readable()

    def handle_read(self):
        try:
            data = self.socket.recv(self.adj.recv_bytes)
        except OSError:
            return super().handle_close()
        if data:
            self.last_activity = time.time()
            self.received(data)
        elif self.request is not None and self.request.headers_finished and not self.request.completed:
            self.sending_ended = True
            self._refuse_incomplete()
        else:
            self.handle_close()

    def _refuse_incomplete(self):
        self._refuse(self.request, BodyIncomplete("the client stopped sending after %d bytes of the body"
                                                  % self.request.body_bytes_received))

    def _refuse(self, request, error):
        """Answer ``request`` (the one being received, or a new one) with ``error``; the connection then closes."""
        with self.requests_lock:
            self.request = None
            request.error = error
            request.completed = True
            self.requests.append(request)
            if len(self.requests) == 1:
                self.server.add_task(self)

    def received(self, data):
        if self.request is None and data and data[0] == TLS_HANDSHAKE and not self.requests:
            # a client probing for TLS first (docker, skopeo, oras): refused at once, it falls back to plain HTTP
            # instead of waiting out its handshake timeout on a server that waits for a request line
            self.sending_ended = True
            self._refuse(self.parser_class(self.adj), TlsOnPlainPort("this port speaks plain HTTP, not TLS"))
            return len(data)
        if self.request is None and data:
            self.request_began, self.request_bytes = time.monotonic(), 0
        self.request_bytes += len(data)
        return super().received(data)

    def too_slow(self, settings, now):
        """Whether the request being received has missed its header deadline or its minimum body rate."""
        request = self.request
        if request is None or not self.request_began:
            return False
        age = now - self.request_began
        if not request.headers_finished:
            return age > settings.header_timeout
        return age > settings.header_timeout and self.request_bytes / age < settings.min_body_rate

    def _flush_some(self, do_close=True):
        """waitress's flush, except that a file response (a blob download, a range of one) is sent with
        ``os.sendfile``: the kernel copies it from the page cache to the socket, where waitress would read each
        block into Python twice (once to send it, once to step over what was sent)."""
        sent = 0
        while True:
            outbuf = self.outbufs[0]
            if isinstance(outbuf, ReadOnlyFileBasedBuffer) and _has_fileno(outbuf.file):
                num_sent, done = self._send_file(outbuf, do_close)
            else:
                num_sent, done = self._flush_buffer(outbuf, do_close)
            self.total_outbufs_len -= num_sent
            sent += num_sent
            if not done:
                break  # the socket is full (or gone): the I/O loop calls again when it is writable
            if len(self.outbufs) > 1:
                finished = self.outbufs.pop(0)
                try:
                    finished.close()
                except Exception:
                    self.logger.exception("Unexpected error when closing an outbuf")
            else:
                break  # caught up
        if sent:
            self.last_activity = time.time()
            return True
        return False

    def _flush_buffer(self, outbuf, do_close):
        """Send an in-memory (or spooled) buffer as waitress does: (bytes sent, whether all of it went)."""
        sent, remaining = 0, outbuf.__len__()
        while remaining > 0:
            num_sent = self.send(outbuf.get(self.sendbuf_len), do_close=do_close)
            if not num_sent:
                return sent, False
            outbuf.skip(num_sent, True)
            remaining -= num_sent
            sent += num_sent
        return sent, True

    def _send_file(self, outbuf, do_close):
        """Send a file buffer until the socket is full: (bytes sent, whether all of it went)."""
        sent = 0
        while outbuf.remain > 0:
            num_sent = self._sendfile(outbuf, do_close)
            if not num_sent:
                return sent, outbuf.remain <= 0
            sent += num_sent
        return sent, True

    def _sendfile(self, outbuf, do_close):
        """One ``os.sendfile`` of what is left of a file buffer: the bytes sent (0 when the socket takes none)."""
        handle = outbuf.file
        offset = handle.tell()
        try:
            num_sent = os.sendfile(self.socket.fileno(), handle.fileno(), offset, min(outbuf.remain, SENDFILE_BYTES))
        except BlockingIOError:
            return 0
        except OSError as why:
            if why.errno not in DISCONNECTED:
                raise
            if do_close:
                self.handle_close()
            return 0
        if num_sent == 0:  # the file ended before its announced length (it shrank): end the response here
            outbuf.remain = 0
            if do_close:
                self.handle_close()
            return 0
        handle.seek(offset + num_sent)
        outbuf.remain -= num_sent
        return num_sent

    def output_stalled(self, idle_timeout, now):
        """Whether a running request's response has waited ``idle_timeout`` for a reader who takes nothing."""
        return bool(self.requests) and self.total_outbufs_len > 0 and now - self.last_activity > idle_timeout


def _has_fileno(handle):
    try:
        handle.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


class GuardedServer(TcpWSGIServer):
    channel_class = GuardedChannel

    def __init__(self, app, settings):
        adjustments = settings.adjustments()
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adjustments.threads)
        inherited = None if settings.listen_fd is None else socket.socket(fileno=settings.listen_fd)
        super().__init__(app, {}, dispatcher=dispatcher, adj=adjustments, sockinfo=adjustments.listen[0],
                         _sock=inherited, bind_socket=inherited is None)
        self.settings = settings

    def maintenance(self, now):
        super().maintenance(now)
        monotonic = time.monotonic()
        for channel in list(self.active_channels.values()):
            if channel.too_slow(self.settings, monotonic):
                channel.will_close = True
            elif channel.output_stalled(self.settings.idle_timeout, now):
                channel.handle_close()  # also wakes the request's thread, blocked on the full output buffer


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas():
    """glibc gives threads their own allocation arenas (up to 8 per core), each keeping freed memory for itself;
    with 16 request threads that alone grew a long soak's memory by about 15 MiB (bench/bench_soak.py). Two
    arenas are plenty when the GIL lets one thread run Python at a time. Elsewhere than glibc: nothing to do."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass


def serve(app, settings, on_stop=None):
    """Serve ``app`` until SIGTERM or SIGINT, then stop accepting, let running requests finish (a few seconds)
    and call ``on_stop``."""
    limit_malloc_arenas()  # before the request threads exist
    server = GuardedServer(app, settings)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("Listening at http://%s:%s (%d threads, up to %d connections)"
          % (server.effective_host, server.effective_port, settings.threads, settings.connection_limit), flush=True)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
        if on_stop is not None:
            on_stop()
