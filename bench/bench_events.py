#!/usr/bin/env python3
"""What open GET /events streams cost the normal traffic: GET /photos latency with and without 100 streams.

One `petcam serve` (SQLite, one job worker with one inference thread). Two phases of the same length, each with
the same load:
  - wrk (-t1, 32 connections) on GET /photos of a user with 100 photos (as in bench_http.py);
  - a producer uploading a tiny photo (32x24) for one of the stream users every 0.2 s, so photo events flow
    (queued, processing, progress, completed: 3 or 4 changes a photo, each to every stream of its user).
Phase "without": no stream open. Phase "with": 100 streams (10 users x 10, EVENTS_MAX_STREAMS_PER_USER raised)
read by one selector thread, which counts the events and times each photo's first event from the moment its
upload was sent (delivery delay: handling the upload, the commit, the write to every stream of the user).
The phases alternate (--rounds of each, "without" first), so drift shows as a difference between rounds.  wrk, the producer, the readers, the server and its job share the machine's cores.

  /usr/bin/python3 bench/bench_events.py [--petcam build/release/petcam] [--duration 10] [--streams 100]
                                         [--users 10] [--json FILE]
"""
import argparse
import io
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WRK_DIR = os.path.join(REPO, "bench", "wrk")
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
PHOTO = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png"
PASSWORD = "bench-password-1"
ID_RE = re.compile(rb'^data: \{"id":"([0-9a-f-]{36})"', re.M)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    m = re.search(r"^Model name:\s*(.+)$", out, re.M)
    return (m.group(1).strip() if m else "unknown") + f", {os.cpu_count()} CPUs"


def jpeg(w, h):
    with Image.open(PHOTO) as im:
        buf = io.BytesIO()
        im.convert("RGB").resize((w, h), Image.LANCZOS).save(buf, "JPEG", quality=90)
        return buf.getvalue()


def percentile(values, p):
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))] if s else float("nan")


class Server:
    def __init__(self, petcam, workdir, streams):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update({
            "HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": os.path.join(workdir, "data"),
            "PETCAM_MODELS_DIR": os.path.join(REPO, "models"), "SECRET_KEY": SECRET, "MODEL": "x4fast",
            "JOB_WORKERS": "1", "INFERENCE_THREADS": "1", "LOG_LEVEL": "warn", "RATE_LIMIT_REGISTER": "0",
            "RATE_LIMIT_TOKEN": "0", "RATE_LIMIT_UPSCALE": "0", "RATE_LIMIT_BESTCUT": "0", "POOL_QUEUE": "100000",
            "EVENTS_MAX_STREAMS_PER_USER": str(streams), "EVENTS_MAX_STREAMS": str(max(256, streams + 10)),
        })
        self.log = open(os.path.join(workdir, "server.log"), "w")
        self.proc = subprocess.Popen([petcam, "serve"], cwd=workdir, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("server did not start; see " + self.log.name)

    def user(self, name):
        s = requests.Session()
        r = s.post(self.base + "/register", json={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        r = s.post(self.base + "/token", data={"username": name, "password": PASSWORD})
        return r.json()["access_token"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.log.close()
        return rc


def wrk(url, duration, connections, headers=()):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
           os.path.join(WRK_DIR, "report.lua")]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"BENCH requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) max_us=(\d+) errors=(\d+) "
                  r"status_errors=(\d+)", out)
    if not m:
        raise RuntimeError("no figures from wrk:\n" + out)
    n, dur, p50, p99, mx, errors, status_errors = map(int, m.groups())
    return {"rps": n / (dur / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "max_ms": mx / 1000,
            "requests": n, "errors": errors, "non_2xx": status_errors}


class Streams:
    """n raw-socket GET /events streams, read by one selector thread: events and keep-alives counted, and the
    arrival of each photo's first event on each stream."""

    def __init__(self, port, tokens_per_stream):
        self.sel = selectors.DefaultSelector()
        self.socks = []
        self.events = 0
        self.keepalives = 0
        self.first_seen = {}  # (stream index, photo id) -> monotonic time
        self.bytes = 0
        self.closed = 0
        self._stop = threading.Event()
        for i, token in enumerate(tokens_per_stream):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
            s.setblocking(False)
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ, [i, b""])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                i, buf = key.data
                try:
                    d = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                now = time.monotonic()
                if not d:
                    self.sel.unregister(key.fileobj)
                    self.closed += 1
                    continue
                self.bytes += len(d)
                buf += d
                # Whole messages only (an event ends with a blank line; chunk framing lines do not matter).
                cut = buf.rfind(b"\n\n")
                if cut >= 0:
                    done, buf = buf[:cut + 2], buf[cut + 2:]
                    self.events += done.count(b"event: photo\n") + done.count(b"event: deleted\n")
                    self.keepalives += done.count(b": keep-alive\n")
                    for m in ID_RE.finditer(done):
                        self.first_seen.setdefault((i, m.group(1).decode()), now)
                key.data[1] = buf

    def opened(self, timeout=30):
        """Until every stream has its head (HTTP 200) and the opening comment."""
        deadline = time.monotonic() + timeout
        while self.bytes < len(self.socks) * 60 and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            s.close()


def producer(base, tokens, data, period, stop, uploaded):
    s = requests.Session()
    i = 0
    while not stop.is_set():
        t0 = time.monotonic()
        u = i % len(tokens)
        r = s.post(base + "/upscale", headers={"Authorization": f"Bearer {tokens[u]}"},
                   files={"file": ("p.jpg", data, "image/jpeg")})
        if r.status_code == 200:
            uploaded.append((u, r.json()["id"], t0))  # the event may come before the answer: timed from the send
        i += 1
        stop.wait(max(0.0, period - (time.monotonic() - t0)))


def phase(server, list_token, stream_tokens, n_streams, duration, period, tiny):
    streams = None
    if n_streams:
        per_stream = [stream_tokens[i % len(stream_tokens)] for i in range(n_streams)]
        streams = Streams(server.port, per_stream)
        streams.opened()
    stop, uploaded = threading.Event(), []
    prod = threading.Thread(target=producer, args=(server.base, stream_tokens, tiny, period, stop, uploaded),
                            daemon=True)
    prod.start()
    result = wrk(server.base + "/photos", duration, 32, headers=["Authorization: Bearer " + list_token])
    stop.set()
    prod.join(30)
    time.sleep(2)  # the last uploads' jobs finish and their events arrive
    result["uploads"] = len(uploaded)
    if streams:
        streams.stop()
        delays = []
        for i in range(n_streams):
            u = i % len(stream_tokens)
            for owner, pid, t in uploaded:
                if owner == u and (i, pid) in streams.first_seen:
                    delays.append(streams.first_seen[(i, pid)] - t)
        expected = sum(1 for i in range(n_streams) for owner, _, _ in uploaded if owner == i % len(stream_tokens))
        result.update(events=streams.events, keepalives=streams.keepalives, closed=streams.closed,
                      first_events=len(delays), first_events_expected=expected,
                      delay_p50_ms=percentile(delays, 50) * 1000, delay_p99_ms=percentile(delays, 99) * 1000)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--petcam", default=os.path.join(REPO, "build", "release", "petcam"))
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--period", type=float, default=0.2, help="seconds between the producer's uploads")
    ap.add_argument("--rounds", type=int, default=2, help="phases of each kind, alternating")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    print(f"# CPU: {cpu_model()}")
    print(f"# GET /photos (100 rows) with wrk -t1 -c32 for {args.duration} s per phase, SQLite, 1 job worker "
          f"(INFERENCE_THREADS=1); an upload (32x24) every {args.period} s for the stream users; "
          f"streams: {args.streams} over {args.users} users")
    with tempfile.TemporaryDirectory(prefix="petcam-bench-events-") as work:
        server = Server(os.path.abspath(args.petcam), work, args.streams)
        try:
            list_token = server.user("bench_lister")
            s = requests.Session()
            small = jpeg(64, 48)
            for i in range(100):
                r = s.post(server.base + "/upscale", headers={"Authorization": "Bearer " + list_token},
                           files={"file": (f"p{i}.jpg", small, "image/jpeg")})
                assert r.status_code == 200, r.text
            stream_tokens = [server.user(f"bench_streams{u}") for u in range(args.users)]
            tiny = jpeg(32, 24)
            # The 100 listed photos' jobs are done before the clock runs.
            deadline = time.monotonic() + 120
            while any(p["status"] != "completed" for p in
                      s.get(server.base + "/photos", headers={"Authorization": "Bearer " + list_token}).json()):
                assert time.monotonic() < deadline, "the listed photos' jobs did not finish"
                time.sleep(0.5)
            results = {"without": [], "with": []}
            for _ in range(args.rounds):
                results["without"].append(phase(server, list_token, stream_tokens, 0, args.duration, args.period,
                                                tiny))
                results["with"].append(phase(server, list_token, stream_tokens, args.streams, args.duration,
                                             args.period, tiny))
        finally:
            rc = server.stop()
    print(f"{'phase':<26} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7} {'non-2xx':>8} "
          f"{'uploads':>8}")
    for k in range(args.rounds):
        for name, label in (("without", "no streams"), ("with", f"{args.streams} streams open")):
            r = results[name][k]
            print(f"{label + f' (round {k + 1})':<26} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                  f"{r['max_ms']:>8.1f} {r['errors']:>7} {r['non_2xx']:>8} {r['uploads']:>8}")
    for k, w in enumerate(results["with"]):
        print(f"round {k + 1}, events delivered: {w['events']} photo/deleted events and {w['keepalives']} keep-alives "
              f"over {args.streams} streams; first event of a photo on its user's streams: {w['first_events']} of "
              f"{w['first_events_expected']}, delay from the upload's send p50 {w['delay_p50_ms']:.1f} ms, "
              f"p99 {w['delay_p99_ms']:.1f} ms; streams the server closed during the run: {w['closed']}")
    print(f"server exit code after SIGTERM: {rc}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "args": vars(args), **results}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
