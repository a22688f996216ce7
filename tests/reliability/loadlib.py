"""Helpers of the reliability suite's load and abuse tests: raw HTTP/1.1 connections driven by one
selector loop (a thousand keep-alive connections cost one thread), slow clients, and what the server
process holds (memory from /proc/<pid>/status, accepted connections from /proc/<pid>/fd + /proc/net/tcp).
"""

import errno
import os
import random
import resource
import selectors
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from petcam_testlib import socket_inodes, tcp_sockets  # noqa: E402

MIB = 1024 * 1024


# ---------------------------------------------------------------- the server process, seen from /proc

def proc_memory(pid):
    """{"VmRSS": bytes, "VmHWM": bytes} of a live process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out


def rss(pid):
    return proc_memory(pid)["VmRSS"]


def accepted_connections(pid, port):
    """How many TCP connections to `port` process `pid` has accepted and holds open.

    Connections still waiting in the kernel's accept queue belong to no process yet, so they are not
    counted: this is the number the server's connection cap limits."""
    mine = socket_inodes(pid)
    return sum(1 for p, state, inode in tcp_sockets() if p == port and state != "0A" and inode in mine)


def raise_nofile(needed):
    """Raises this process's soft RLIMIT_NOFILE (the server started from it inherits it) to `needed`;
    returns False when the hard limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return True
    if hard != resource.RLIM_INFINITY and hard < needed:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return True


class MemorySampler:
    """Samples the server's RSS every `interval` seconds in a thread: [(seconds since start, bytes)]."""

    def __init__(self, pid, interval):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self._t0, rss(self.pid)))
            except OSError:
                return
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        return self.samples


# ---------------------------------------------------------------- statistics

def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def median(values):
    return statistics.median(values)


# ---------------------------------------------------------------- raw HTTP/1.1

def request_bytes(method, path, headers=None, body=b""):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ResponseParser:
    """Incremental parser of HTTP/1.1 responses framed by Content-Length (all the server sends)."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        """Adds bytes; returns the list of complete responses as (status, headers dict, body)."""
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = self.buf[:end].decode("latin-1").split("\r\n")
            status = int(head[0].split(" ", 2)[1])
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return out
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            out.append((status, headers, body))


def connect_from(ip, port, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((ip, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def read_response(sock, timeout):
    """Reads one response from a blocking socket; None when nothing complete came within `timeout`
    (the socket is left as it is); raises ConnectionError when the server closed it first."""
    parser = ResponseParser()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None
        if not data:
            raise ConnectionError("closed by the server")
        done = parser.feed(data)
        if done:
            return done[0]


# ---------------------------------------------------------------- a swarm of keep-alive connections

class _Conn:
    __slots__ = ("sock", "parser", "pending_since", "last_done", "next_at", "requests", "closed")

    def __init__(self, sock):
        self.sock = sock
        self.parser = ResponseParser()
        self.pending_since = None  # a request is out, its response not yet in
        self.last_done = None      # when the last response arrived (or the connection was made)
        self.next_at = 0.0
        self.requests = 0
        self.closed = False


class KeepAliveSwarm:
    """`count` keep-alive connections (from the given source IPs, round robin), driven by one thread:
    each sends a request, reads its response, waits `period` (a random value in the range) and sends
    the next one on the same connection.

    The server closes a connection idle for READ_TIMEOUT_SECONDS; a close after such an idle gap (when
    this loop lagged) is counted in `idle_closed`, not as an error. Anything else is an error: a status
    other than 200, a reset, a close while a request was out or before the idle timeout."""

    def __init__(self, port, ips, count, requests, period, idle_timeout):
        self.port = port
        self.ips = ips
        self.count = count
        self.requests = requests  # list of raw request bytes, picked at random
        self.period = period
        self.idle_timeout = idle_timeout
        self.conns = []
        self.statuses = {}
        self.errors = []
        self.idle_closed = 0
        self.answered = 0
        self.first_round_done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sel = selectors.DefaultSelector()

    def open(self, timeout=60):
        """Connects every connection (blocking connect, then non-blocking) and starts the loop."""
        deadline = time.monotonic() + timeout
        for i in range(self.count):
            ip = self.ips[i % len(self.ips)]
            s = connect_from(ip, self.port, timeout=max(1.0, deadline - time.monotonic()))
            s.setblocking(False)
            c = _Conn(s)
            c.next_at = 0.0
            self.conns.append(c)
            self._sel.register(s, selectors.EVENT_READ, c)
        self._thread.start()
        return self

    def open_count(self):
        return sum(1 for c in self.conns if not c.closed)

    def _close(self, c):
        if c.closed:
            return
        c.closed = True
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _server_closed(self, c, now, why):
        if c.pending_since is None and c.last_done is not None and \
                now - c.last_done >= self.idle_timeout - 0.5:
            self.idle_closed += 1
        else:
            self.errors.append(f"{why} (request out: {c.pending_since is not None}, "
                               f"idle {now - (c.last_done or now):.1f} s)")
        self._close(c)

    def _run(self):
        rng = random.Random(1)
        while not self._stop.is_set():
            now = time.monotonic()
            for c in self.conns:
                if c.closed or c.pending_since is not None or now < c.next_at:
                    continue
                try:
                    c.sock.send(rng.choice(self.requests))  # small: fits the socket buffer
                except OSError as e:
                    self._server_closed(c, now, f"send: {e}")
                    continue
                c.pending_since = now
            for key, _ in self._sel.select(timeout=0.05):
                c = key.data
                now = time.monotonic()
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self._server_closed(c, now, f"recv: {e}")
                    continue
                if not data:
                    self._server_closed(c, now, "closed by the server")
                    continue
                try:
                    responses = c.parser.feed(data)
                except (ValueError, IndexError) as e:
                    self.errors.append(f"unparsable response: {e}: {data[:100]!r}")
                    self._close(c)
                    continue
                for status, _, _ in responses:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    self.answered += 1
                    if status != 200:
                        self.errors.append(f"status {status}")
                    c.requests += 1
                    c.pending_since = None
                    c.last_done = now
                    c.next_at = now + rng.uniform(*self.period)
            if not self.first_round_done.is_set() and all(c.requests or c.closed for c in self.conns):
                self.first_round_done.set()

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        for c in self.conns:
            self._close(c)
        self._sel.close()


# ---------------------------------------------------------------- slow clients

class SlowClients:
    """Connections that never finish their request: each sends `prefix`, then `drip` every `every`
    seconds, forever. Records when the server closed each one (seconds after its connect) and any
    bytes it sent back."""

    def __init__(self, port, ips, kinds, every=1.0):
        """kinds: {name: (count, prefix bytes, drip bytes)}."""
        self.port = port
        self.ips = ips
        self.kinds = kinds
        self.every = every
        self.clients = []  # dicts: kind, sock, t0, closed_after, received, error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        i = 0
        for kind, (count, prefix, drip) in self.kinds.items():
            for _ in range(count):
                s = connect_from(self.ips[i % len(self.ips)], self.port)
                i += 1
                t0 = time.monotonic()
                if prefix:
                    s.sendall(prefix)
                s.setblocking(False)
                self.clients.append({"kind": kind, "sock": s, "t0": t0, "drip": drip,
                                     "closed_after": None, "received": b"", "how": None})
        self._thread.start()
        return self

    def _run(self):
        sel = selectors.DefaultSelector()
        for c in self.clients:
            sel.register(c["sock"], selectors.EVENT_READ, c)
        next_drip = time.monotonic() + self.every
        while not self._stop.is_set() and any(c["closed_after"] is None for c in self.clients):
            for key, _ in sel.select(timeout=0.05):
                c = key.data
                try:
                    data = c["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    data, c["how"] = b"", f"recv: {errno.errorcode.get(e.errno, e)}"
                if data:
                    c["received"] += data
                    continue
                c["closed_after"] = time.monotonic() - c["t0"]
                c["how"] = c["how"] or "EOF"
                sel.unregister(c["sock"])
                c["sock"].close()
            now = time.monotonic()
            if now >= next_drip:
                next_drip = now + self.every
                for c in self.clients:
                    if c["closed_after"] is None and c["drip"]:
                        try:
                            c["sock"].send(c["drip"])
                        except BlockingIOError:
                            pass
                        except OSError:
                            pass  # the close is seen (and timed) by recv
        sel.close()

    def wait(self, timeout):
        self._thread.join(timeout)

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        for c in self.clients:
            if c["closed_after"] is None:
                c["sock"].close()
