"""Slow clients, as the slow-client test and benchmark attack a server with them."""
import socket
import threading


class Trickler:
    """Connections that each send their next piece every half second, until the server closes them."""

    def __init__(self, port):
        self.port = port
        self.pieces = {}  # socket -> the pieces it has still to send
        self.closed = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def open(self, head, pieces=(), receive_buffer=None):
        sock = socket.socket()
        if receive_buffer:  # a reader that takes nothing: a small window fills at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(head)
        self.pieces[sock] = list(pieces)
        return sock

    def _run(self):
        while not self.stop.wait(0.5):  # the attack's own pace, not a synchronisation
            for sock, pieces in list(self.pieces.items()):
                if pieces and sock not in self.closed:
                    try:
                        sock.send(pieces.pop(0))
                    except OSError:
                        self.closed.add(sock)

    def closed_by_server(self, sock, wait):
        """Whether the server has closed ``sock`` (reading what it sent first), waiting up to ``wait`` s."""
        if sock in self.closed:
            return True
        sock.settimeout(wait)
        try:
            while sock.recv(65536):
                pass
        except socket.timeout:
            return False
        except OSError:
            pass
        return True


def open_slow_connections(trickler, token, blob_path, each=(70, 70, 60)):
    """Connections trickling a request head, trickling a 1 MiB body a byte at a time, and downloading
    ``blob_path`` without reading. -> (heads, bodies, readers), the sockets of each kind."""
    auth = ("Authorization: Bearer %s\r\n" % token).encode()
    heads = [trickler.open(b"GET /health HTTP/1.1\r\n", [b"X-Slow: header\r\n"] * 1000) for _ in range(each[0])]
    bodies = [trickler.open(b"PUT /v1/acme/slow/1.0.%d/x/blob HTTP/1.1\r\nHost: depot\r\n" % i + auth +
                            b"Content-Length: 1048576\r\n\r\n", [b"b"] * 1000) for i in range(each[1])]
    readers = [trickler.open(b"GET " + blob_path.encode() + b" HTTP/1.1\r\nHost: depot\r\n" + auth + b"\r\n",
                             receive_buffer=4096) for _ in range(each[2])]
    return heads, bodies, readers
