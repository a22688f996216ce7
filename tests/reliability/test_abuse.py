"""Abuse: a thousand keep-alive connections at once, slow clients that trickle headers or bodies (or
send nothing), and more connections than MAX_CONNECTIONS.

What must hold: the read timeout (READ_TIMEOUT_SECONDS, the time to receive a whole request) closes every
slow client, without an answer (RESTinio closes, it sends no 408); the connection cap holds (the server
never holds more than MAX_CONNECTIONS accepted connections; more wait in the kernel's accept queue and
are served as slots free up, none is refused); a normal client is still answered, every time (its p50/p99
are reported, not asserted); the server's memory stays bounded (peak RSS reported, asserted < 1 GiB).

Each scenario prints one summary line (pytest -s).
"""

import resource
import threading
import time

import pytest
import requests

from conftest import FULL, Client, jpeg, logged_in_client, next_ip
from loadlib import (MIB, KeepAliveSwarm, SlowClients, accepted_connections,
                     connect_from, percentile, proc_memory, raise_nofile, read_response, request_bytes)

RSS_LIMIT = 1024 * MIB


def _summary(name, **fields):
    print(f"\n[abuse] {name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


class _Sampler(threading.Thread):
    """Samples accepted connections and RSS of the server every 0.2 s."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.accepted = []
        self.rss = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.accepted.append(accepted_connections(self.server.proc.pid, self.server.port))
                self.rss.append(proc_memory(self.server.proc.pid)["VmRSS"])
            except OSError:
                return
            self.stop_event.wait(0.2)

    def stop(self):
        self.stop_event.set()
        self.join(10)


def test_thousand_keepalive_connections_and_slow_clients(start_server):
    """1,000 keep-alive connections stay open and answered while 100 slow clients (header tricklers,
    body tricklers, silent ones) are cut off by the read timeout and a normal client's requests all
    succeed."""
    keepalive = 1000
    slow = {"header": 40, "body": 40, "silent": 20}
    read_timeout = 5
    measured_requests = 1000 if FULL else 500
    if not raise_nofile(keepalive + sum(slow.values()) + 500):
        pytest.skip("RLIMIT_NOFILE too low for 1,000 connections")
    server = start_server(MAX_CONNECTIONS="1200", READ_TIMEOUT_SECONDS=str(read_timeout))
    user = logged_in_client(server)
    r = user.upload(jpeg(32, 24))
    assert r.status_code == 200, r.text
    user.wait_status(r.json()["id"])
    rss_before = proc_memory(server.proc.pid)["VmRSS"]
    t_start = time.monotonic()

    auth = {"Authorization": f"Bearer {user.token}"}
    swarm_requests = [request_bytes("GET", "/health")] * 9 + [request_bytes("GET", "/photos?limit=10", auth)]
    ips = [next_ip() for _ in range(10)]
    sampler = _Sampler(server)
    sampler.start()
    swarm = KeepAliveSwarm(server.port, ips, keepalive, swarm_requests, period=(2.0, 3.0),
                           idle_timeout=read_timeout)
    slow_clients = None
    try:
        swarm.open()
        assert swarm.first_round_done.wait(60), \
            f"not every keep-alive connection answered within 60 s ({swarm.answered} answers)"
        opened_s = time.monotonic() - t_start
        held = accepted_connections(server.proc.pid, server.port)
        assert held >= keepalive, f"the server holds {held} connections, expected >= {keepalive}"

        boundary = "slowbody"
        upload_head = (
            f"POST /upscale HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {user.token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 2000000\r\n\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg(32, 24)[:200]
        slow_clients = SlowClients(server.port, [next_ip() for _ in range(4)], {
            "header": (slow["header"], b"GET /photos HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a"),
            "body": (slow["body"], upload_head, b"\x00" * 100),
            "silent": (slow["silent"], b"", b""),
        }).start()

        # The normal client: one keep-alive session, GET /photos at about 50 per second.
        latencies, failures = [], []
        measurer = Client(server)
        measurer.token = user.token
        for i in range(measured_requests):
            t0 = time.monotonic()
            try:
                resp = measurer.get("/photos", timeout=20)
                if resp.status_code != 200:
                    failures.append((i, resp.status_code, resp.text[:200]))
            except requests.RequestException as e:
                failures.append((i, "exception", repr(e)))
            latencies.append(time.monotonic() - t0)
            time.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))

        slow_clients.wait(read_timeout + 10)
        still_open = swarm.open_count()
        peak_accepted = max(sampler.accepted)
    finally:
        swarm.stop()
        if slow_clients:
            slow_clients.stop()
        sampler.stop()
    time.sleep(2)
    mem = proc_memory(server.proc.pid)
    elapsed = time.monotonic() - t_start
    slow_closed = [c["closed_after"] for c in slow_clients.clients if c["closed_after"] is not None]

    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    _summary("keep-alive+slow", connections=keepalive, slow_clients=len(slow_clients.clients),
             swarm_answers=swarm.answered, swarm_errors=len(swarm.errors), idle_closed=swarm.idle_closed,
             requests=len(latencies), p50_ms=f"{p50:.1f}", p99_ms=f"{p99:.1f}",
             max_ms=f"{max(latencies) * 1000:.1f}", errors=len(failures),
             slow_closed_s=f"{min(slow_closed, default=0):.1f}..{max(slow_closed, default=0):.1f}",
             peak_accepted=peak_accepted,
             rss_before_MiB=f"{rss_before / MIB:.0f}", rss_peak_MiB=f"{mem['VmHWM'] / MIB:.0f}",
             rss_after_MiB=f"{mem['VmRSS'] / MIB:.0f}", open_s=f"{opened_s:.1f}", seconds=f"{elapsed:.1f}")

    assert not failures, f"{len(failures)} of {measured_requests} requests failed: {failures[:5]}"
    assert not swarm.errors, f"{len(swarm.errors)} keep-alive errors: {swarm.errors[:5]}"
    assert still_open + swarm.idle_closed == keepalive
    assert still_open >= keepalive * 0.95, \
        f"only {still_open} of {keepalive} keep-alive connections still open ({swarm.idle_closed} idle-closed)"
    assert peak_accepted <= 1200, peak_accepted
    for c in slow_clients.clients:
        assert c["closed_after"] is not None, f"{c['kind']} slow client still open after the read timeout"
        assert read_timeout - 0.3 <= c["closed_after"] <= read_timeout + 5, \
            (c["kind"], c["closed_after"], c["how"])
        assert c["received"] == b"", (c["kind"], c["received"][:200])
    assert mem["VmHWM"] < RSS_LIMIT, f"peak RSS {mem['VmHWM'] / MIB:.0f} MiB"
    # Still healthy afterwards, and nothing was stored by the cut-off uploads.
    assert Client(server).get("/health").status_code == 200
    assert len(user.photos()) == 1


def test_connections_beyond_the_cap_wait_and_are_served(start_server):
    """MAX_CONNECTIONS=50: 50 keep-alive connections are held; 150 more connect (the kernel completes
    the handshake), send a request and wait, unanswered, while the 50 stay served; as the 50 close,
    the waiting ones are all answered, never more than 50 accepted at a time."""
    cap, extra = 50, 150
    if not raise_nofile(cap + extra + 500):
        pytest.skip("RLIMIT_NOFILE too low")
    server = start_server(MAX_CONNECTIONS=str(cap), READ_TIMEOUT_SECONDS="30")
    t_start = time.monotonic()
    ips = [next_ip() for _ in range(4)]
    health = request_bytes("GET", "/health")
    sampler = _Sampler(server)
    sampler.start()
    held, waiting = [], []
    try:
        for i in range(cap):
            s = connect_from(ips[i % 4], server.port)
            s.sendall(health)
            resp = read_response(s, 10)
            assert resp is not None and resp[0] == 200, (i, resp)
            held.append(s)
        assert accepted_connections(server.proc.pid, server.port) == cap

        for i in range(extra):
            s = connect_from(ips[i % 4], server.port)  # the kernel accepts it into the queue
            s.sendall(request_bytes("GET", "/health", {"Connection": "close"}))
            waiting.append(s)
        time.sleep(1.5)
        for s in waiting:
            s.settimeout(0.01)
            try:
                early = s.recv(100)
            except OSError:
                early = None  # nothing yet: it waits
            assert early is None, f"a connection beyond the cap got {early!r}"
        assert accepted_connections(server.proc.pid, server.port) == cap
        # The held connections are still served meanwhile.
        for s in held:
            s.sendall(health)
            resp = read_response(s, 10)
            assert resp is not None and resp[0] == 200, resp

        t_release = time.monotonic()
        for s in held:
            s.close()
        held = []
        answered = []
        for s in waiting:
            resp = read_response(s, 30)
            assert resp is not None, "a waiting connection was not answered after slots freed"
            assert resp[0] == 200, resp
            answered.append(time.monotonic() - t_release)
        drained_s = max(answered)
    finally:
        for s in held + waiting:
            s.close()
        sampler.stop()
    peak = max(sampler.accepted)
    mem = proc_memory(server.proc.pid)
    _summary("connection cap", max_connections=cap, held=cap, beyond_cap=extra, answered=len(answered),
             peak_accepted=peak, drained_s=f"{drained_s:.2f}", errors=0,
             rss_peak_MiB=f"{mem['VmHWM'] / MIB:.0f}", seconds=f"{time.monotonic() - t_start:.1f}")
    assert peak <= cap, f"the server held {peak} connections with MAX_CONNECTIONS={cap}"
    assert len(answered) == extra
    assert Client(server).get("/health").status_code == 200


def test_slowloris_at_the_cap_is_bounded_by_the_read_timeout(start_server):
    """Silent and trickling connections fill every slot (MAX_CONNECTIONS=40): a normal client waits in
    the accept queue until the read timeout frees slots, then is answered; the attack delays it by at
    most about READ_TIMEOUT_SECONDS, it never locks it out."""
    cap, read_timeout = 40, 3
    if not raise_nofile(cap + 500):
        pytest.skip("RLIMIT_NOFILE too low")
    server = start_server(MAX_CONNECTIONS=str(cap), READ_TIMEOUT_SECONDS=str(read_timeout))
    t_start = time.monotonic()
    slow = SlowClients(server.port, [next_ip() for _ in range(2)], {
        "silent": (cap // 2, b"", b""),
        "header": (cap // 2, b"GET /health HTTP/1.1\r\nX-Slow: ", b"b"),
    }).start()
    try:
        time.sleep(0.5)
        assert accepted_connections(server.proc.pid, server.port) == cap
        victim = connect_from(next_ip(), server.port)
        t0 = time.monotonic()
        victim.sendall(request_bytes("GET", "/health", {"Connection": "close"}))
        resp = read_response(victim, read_timeout + 10)
        waited = time.monotonic() - t0
        victim.close()
        slow.wait(read_timeout + 10)
    finally:
        slow.stop()
    closed = [c["closed_after"] for c in slow.clients]
    _summary("slowloris at cap", max_connections=cap, slow_clients=len(slow.clients),
             victim_status=resp and resp[0], victim_wait_s=f"{waited:.2f}",
             slow_closed_s=f"{min(c for c in closed if c is not None):.1f}.."
                           f"{max(c for c in closed if c is not None):.1f}",
             seconds=f"{time.monotonic() - t_start:.1f}")
    assert resp is not None and resp[0] == 200, resp
    assert waited <= read_timeout + 5, f"the normal client waited {waited:.1f} s"
    for c in slow.clients:
        assert c["closed_after"] is not None and c["closed_after"] <= read_timeout + 5, c
        assert c["received"] == b"", c["received"][:200]


def test_open_file_limit_is_raised_for_the_connection_cap(start_server):
    """A soft `ulimit -n` of 512 (the hard limit higher) would leave a server with MAX_CONNECTIONS=1000 unable to
    accept: it raises its own soft limit to cover the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1256:
        pytest.skip(f"the hard open-file limit ({hard}) is below what the test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        server = start_server(MAX_CONNECTIONS="1000")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open(f"/proc/{server.proc.pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    assert int(line.split()[3]) >= 1000 + 256, line
    assert "open files limited" not in server.log_text()
