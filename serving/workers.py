"""gunicorn's threaded worker, reading each request in full before a thread takes it.

gunicorn's `gthread` worker gives a connection to a thread as soon as its first byte arrives,
and the thread then blocks until the rest of the request is in. A client that sends one byte a
second holds a thread as long as it likes, and `threads` such clients stop a worker (a
"slowloris" attack; measured: four slow connections made a 1-worker, 4-thread server time out
every request). `BufferingThreadWorker` reads the request head and body on the worker's event
loop instead, and gives the connection to a thread only once the request is in memory:

- every request, on new and on kept-alive connections;
- bodies up to `buffer_limit()` bytes (the app's body limit plus 64 KiB); a request that
  declares a larger body goes to a thread after its head, and the app refuses it at once
  (413, `serving.errors` bounds how long it drains the body);
- a request not complete `RECSYS_READ_TIMEOUT` seconds (30) after its first byte, or after the
  connection opened, is answered 408 and closed; while it waits it holds a socket and its
  bytes, never a thread, within gunicorn's `worker_connections` (1000 per worker);
- a request that asks for `100 Continue` (curl does, for bodies over 1 KiB) gets it from the
  worker, which then reads the body;
- a kept-alive connection older than `RECSYS_KEEPALIVE_MAX_AGE` seconds (20) is closed after
  its current response (`Connection: close`). Workers share the listening socket, so while
  one is down (killed, restarting) every client connects to the others and, with keep-alive,
  would stay there for good; recycling connections spreads them over all workers again.

TLS and HTTP/2 prior-knowledge connections are left to `gthread` as they are. The worker
relies on gunicorn 27's `gthread` internals; `supported()` says whether the installed gunicorn
has them (`serving/gunicorn.conf.py` falls back to plain `gthread` when not).

>>> request_complete(b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", 100)
True
>>> request_complete(b"POST /v1/score HTTP/1.1\\r\\nContent-Length: 10\\r\\n\\r\\n{}", 100)
False
>>> request_complete(b"POST /v1/score HTTP/1.1\\r\\nContent-Length: 5000\\r\\n\\r\\n{}", 100)
True
"""

from __future__ import annotations

import errno
import functools
import json
import os
import selectors
import socket
import time
import weakref

HEAD_LIMIT = 64 * 1024  # a longer head goes to gunicorn's parser, which refuses it
_READ_TIMEOUT_DEFAULT = 30.0
_KEEPALIVE_MAX_AGE_DEFAULT = 20.0
LINGER_SECONDS = 2.0  # after a 408, how long the rest of the request is read and dropped


def keepalive_max_age() -> float:
    return float(os.environ.get("RECSYS_KEEPALIVE_MAX_AGE", _KEEPALIVE_MAX_AGE_DEFAULT))


def read_timeout() -> float:
    return float(os.environ.get("RECSYS_READ_TIMEOUT", _READ_TIMEOUT_DEFAULT))


def buffer_limit() -> int:
    from recsys.schema import MAX_BODY_BYTES

    return int(os.environ.get("RECSYS_MAX_CONTENT_LENGTH", MAX_BODY_BYTES)) + 64 * 1024


def _header(head: bytes, name: bytes):
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().lower()
    return None


def request_complete(buffer, limit) -> bool:
    """Whether `buffer` holds a whole request (or as much as will be buffered).

    A wrong "yes" only costs protection (the thread reads the rest from the socket, as
    `gthread` does); gunicorn's parser stays the judge of what the request says.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return len(buffer) > HEAD_LIMIT
    head, body = bytes(buffer[:end]), len(buffer) - end - 4
    encoding = _header(head, b"transfer-encoding")
    if encoding is not None:
        if body > limit:
            return True
        tail = bytes(buffer[-7:])
        return tail.endswith(b"0\r\n\r\n") or (
            tail.endswith(b"\r\n\r\n") and buffer.find(b"\r\n0\r\n", end) >= 0
        )
    length = _header(head, b"content-length")
    if length is None:
        return True
    try:
        expected = int(length)
    except ValueError:
        return True  # the parser refuses it
    return expected > limit or body >= expected


def expects_continue(buffer) -> bool:
    r"""Whether a complete request head asks for `100 Continue` before it sends its body.

    >>> expects_continue(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
    True
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = bytes(buffer[:end])
    return head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1") and _header(head, b"expect") == (
        b"100-continue"
    )


def without_expect(data: bytes) -> bytes:
    r"""The request with its `Expect` header removed (the worker has answered it).

    >>> without_expect(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nA: b\r\n\r\n{}")
    b'POST / HTTP/1.1\r\nA: b\r\n\r\n{}'
    """
    end = data.find(b"\r\n\r\n")
    lines = data[:end].split(b"\r\n")
    kept = [lines[0]] + [line for line in lines[1:] if not line.lower().startswith(b"expect:")]
    return b"\r\n".join(kept) + data[end:]


def _timeout_response(seconds) -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "request_timeout",
                "status": 408,
                "message": f"The request was not received in full within {seconds:g} s.",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def supported() -> bool:
    """True when the installed gunicorn's `gthread` has what this worker builds on."""
    try:
        from gunicorn.workers import gthread
    except ImportError:
        return False
    needed = ("accept", "enqueue_req", "on_client_socket_readable", "murder_pending")
    return all(hasattr(gthread.ThreadWorker, n) for n in needed) and hasattr(
        gthread.TConn,
        "wait_for_data",  # came with `data_ready`, which `handle()` reads
    )


def _worker_class():
    from gunicorn.http2 import negotiation
    from gunicorn.workers import gthread

    class BufferingThreadWorker(gthread.ThreadWorker):
        """`gthread`, with requests read on the event loop (see the module docstring)."""

        def init_process(self):
            self._reading, self._lingering = set(), set()
            self._limit = buffer_limit()
            self._read_timeout = read_timeout()
            self._opened = weakref.WeakKeyDictionary()  # socket -> when it was accepted
            super().init_process()

        def load_wsgi(self):
            super().load_wsgi()
            app, opened, max_age = self.wsgi, self._opened, keepalive_max_age()

            def recycling(environ, start_response):
                since = opened.get(environ.get("gunicorn.socket"))
                if since is not None and time.monotonic() - since > max_age:
                    response = getattr(start_response, "__self__", None)  # gunicorn's Response
                    if hasattr(response, "force_close"):
                        response.force_close()  # answered with `Connection: close`
                return app(environ, start_response)

            self.wsgi = recycling

        def _buffers(self, conn) -> bool:
            return not self.cfg.is_ssl and not negotiation.prior_knowledge_allowed(
                self.cfg, conn.client
            )

        def accept(self, listener):
            try:
                sock, client = listener.accept()
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return
            self.nr_conns += 1
            self._opened[sock] = time.monotonic()
            conn = gthread.TConn(self.cfg, sock, client, listener.getsockname())  # non-blocking
            if self._buffers(conn):
                self._start_reading(conn)
            else:  # as gthread does
                self.enqueue_req(conn)

        def on_client_socket_readable(self, conn, client):
            if not self._buffers(conn):
                return super().on_client_socket_readable(conn, client)
            self.poller.unregister(client)
            self.keepalived_conns.remove(conn)
            self._start_reading(conn)

        def _start_reading(self, conn):
            conn.recsys_buffer = bytearray()
            conn.recsys_continued = False
            conn.recsys_deadline = time.monotonic() + self._read_timeout
            self._reading.add(conn)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, functools.partial(self._on_readable, conn)
            )

        def _on_readable(self, conn, sock):
            try:
                data = sock.recv(256 * 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the client went away
                self._drop(conn)
                return
            conn.recsys_buffer += data
            if request_complete(conn.recsys_buffer, self._limit):
                self._hand_over(conn)
            elif not conn.recsys_continued and expects_continue(conn.recsys_buffer):
                conn.recsys_continued = True  # the client waits for this before its body
                try:
                    sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except OSError:
                    self._drop(conn)

        def _forget(self, conn):
            self._reading.discard(conn)
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass

        def _drop(self, conn, response=None):
            self._forget(conn)
            if response:
                try:  # answer, then linger: closing with unread bytes would reset the answer
                    conn.sock.send(response)
                    conn.sock.shutdown(socket.SHUT_WR)
                    conn.recsys_deadline = time.monotonic() + LINGER_SECONDS
                    self._lingering.add(conn)
                    self.poller.register(
                        conn.sock, selectors.EVENT_READ, functools.partial(self._on_linger, conn)
                    )
                    return
                except OSError:
                    pass
            self.nr_conns -= 1
            conn.close()

        def _on_linger(self, conn, sock):
            try:
                if sock.recv(64 * 1024):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self._end_linger(conn)

        def _end_linger(self, conn):
            self._lingering.discard(conn)
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            self.nr_conns -= 1
            conn.close()

        def _hand_over(self, conn):
            self._forget(conn)
            data, conn.recsys_buffer = bytes(conn.recsys_buffer), None
            if conn.recsys_continued:  # answered here: gunicorn must not answer it again
                data = without_expect(data)
            conn.init()  # the HTTP/1 parser; no I/O for plain connections
            conn.parser.unreader.unread(data)
            conn.data_ready = True
            self.enqueue_req(conn)

        def murder_pending(self):
            super().murder_pending()
            now = time.monotonic()
            for conn in [c for c in self._lingering if not self.alive or c.recsys_deadline < now]:
                self._end_linger(conn)
            for conn in [c for c in self._reading if not self.alive or c.recsys_deadline < now]:
                response = _timeout_response(self._read_timeout) if conn.recsys_buffer else None
                self._drop(conn, response if self.alive else None)

    return BufferingThreadWorker


def __getattr__(name):
    """`serving.workers.BufferingThreadWorker`, built on first use (gunicorn imported lazily)."""
    if name == "BufferingThreadWorker":
        cls = _worker_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
