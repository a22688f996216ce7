"""kill -9 chaos: a mixed workload from several users while the server is SIGKILLed at random moments.

Four users upload, ask for best cuts, delete their own photos and list them, each from its own thread and
source address, while the main thread kills the server with SIGKILL at random moments and restarts it
(>= 20 times; >= 50 with PETCAM_RELIABILITY=full). A request cut off by a kill has an unknown outcome:
the photo may or may not exist, but whatever exists must obey the invariants. Half the uploads carry an
Idempotency-Key and are sent again with the same key after a connection error, a 503 or a 409 (a kill between
the key's claim and the upload's commit leaves the key "in flight" until it goes stale); each keyed upload has
its own latitude, so the photos a key made can be counted. User 0 also holds a GET /events stream, opened again
after every kill. Afterwards, following one clean restart:

  1. every upload / best cut answered 200 (and never deleted) is listed, `completed`, and downloadable;
  2. every photo deleted with 200 answers 404 and has no file left;
  3. the files under storage are exactly the original_path / upscaled_path of the photos that exist;
  4. no job ran to completion twice (the server log: each job and photo `completed` at most once);
  5. the server never exited by itself (each exit was our SIGKILL; the harness checks the final SIGTERM);
  6. no Idempotency-Key made more than one photo, and every answer it got names the same photo; a key answered
     200 (and not deleted) has exactly its photo;
  7. every event stream's ids rise from 1, its events are of user 0's photos only, and it was opened again after
     the kills.

A summary line (backend, kills, requests by status, ...) is printed for docs/RELIABILITY.md; run with -s.
PETCAM_CHAOS_SEED=<n> replays the same random choices (the timing still differs).
"""

import collections
import concurrent.futures
import json
import os
import random
import re
import sqlite3
import subprocess
import threading
import time

import requests
from urllib3.exceptions import NewConnectionError

from conftest import (FULL, PG_BIN, TEST_DATABASE, decode, encode_jpeg, jpeg_size, logged_in_client,
                      photo_image, session_from)
from petcam_testlib import photo_files  # noqa: E402 (conftest puts tests/ on the path)

KILLS = 50 if FULL else 20
USERS = 4
WAIT_BEFORE_KILL_S = (0.2, 1.5)  # after each (re)start has answered /health
PAUSE_BETWEEN_REQUESTS_S = (0.0, 0.15)
REQUEST_TIMEOUT_S = 60
DRAIN_TIMEOUT_S = 300 if FULL else 120  # every photo `completed` after the last restart
SIZES = [(64, 48), (96, 72), (128, 96), (160, 120)]
NAMES = ["chelsea", "coffee", "astronaut", "grace_hopper"]
# upload (most), best cut of 2-4 shots, delete one of its own photos, list
OPS = [("upload", 50), ("bestcut", 20), ("delete", 18), ("list", 12)]

SERVER_ENV = {
    # A kill -9 leaves the running job `processing` under this instance's name; the restart takes it back at
    # once (recover by INSTANCE_ID prefix), so the lease only matters if a heartbeat is late: keep it short,
    # but long enough that two busy cores never let a live worker's lease run out.
    "JOB_LEASE_SECONDS": "10",
    # Each kill that lands while a job runs costs that job an attempt (a crash counts as a failed attempt, so
    # a photo that kills the server every time ends `failed`). With dozens of kills a job may be hit three
    # times (the default JOB_MAX_ATTEMPTS); this test is about crash consistency, not the poison-pill cap.
    "JOB_MAX_ATTEMPTS": "100",
    # One process owns the database here: the start-up sweep may remove an orphan file of any age.
    "ORPHAN_SWEEP_MIN_AGE_SECONDS": "0",
    # The event stream's reader wakes every second (and sees a stalled stream quickly).
    "EVENTS_KEEPALIVE_SECONDS": "1",
}
KEYED_SHARE = 0.5  # of the uploads
KEY_RETRY_PAUSE_S = 0.1
KEY_PENDING_RETRY_SHARE = 0.2  # of the loop iterations, while a key waits (409: its first claim died with a kill)
STREAM_SILENT_S = 10  # a stream with no byte for this long while the server is up: a problem

STARTED_RE = re.compile(r"job (\S+) photo (\S+): started by \S+ \(attempt (\d+)/\d+\)")
COMPLETED_RE = re.compile(r"job (\S+) photo (\S+): completed ")
RELEASED_RE = re.compile(r"job (\S+) photo (\S+): returned to the queue")
DELETED_WHILE_RE = re.compile(r"job (\S+) photo (\S+): photo was deleted while processing")
LEASE_LOST_RE = re.compile(r"job (\S+) photo (\S+): lease lost")
RETRY_RE = re.compile(r"job (\S+) photo (\S+): attempt \d+/\d+ failed")
FAILED_RE = re.compile(r"job (\S+) photo (\S+): failed ")
RECOVERED_RE = re.compile(r"jobs: recovered (\d+) job")
SWEPT_RE = re.compile(r"storage: removed (\d+) file")
ERROR_LINE_RE = re.compile(r"^\S+ (error|critical) (.*)$", re.M)


def _not_sent(exc):
    """True when the connection was never made (refused: the new server is not listening yet)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError) or isinstance(exc, requests.ConnectTimeout)


class Chaos:
    """Shared state of the run: the server generation (one per start), and what the clients saw."""

    def __init__(self, server, seed):
        self.server = server
        self.seed = seed
        self.generation = 0  # bumped just before each kill
        self.up = threading.Event()
        self.up.set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses = collections.Counter()  # (op, status or 'unknown' / 'refused') -> count
        self.accepted = {}  # photo id -> (user index, kind, original bytes or list of shots)
        self.deleted = set()  # deleted with 200
        self.delete_unknown = set()  # a DELETE whose answer never came
        self.unknown = collections.Counter()  # op -> requests cut off by a kill (outcome unknown)
        self.stray_errors = []  # connection errors with no kill in flight
        self.problems = []  # invariant violations seen by the client threads
        self.exceptions = []
        self.keys = {}  # Idempotency-Key -> {"user", "lat", "sent", "ids": set of ids answered, "tries", "replayed"}
        self.pending = collections.defaultdict(list)  # user -> keys not answered yet (cut off, 409, 503)
        self.streams = []  # per /events stream: {"generation", "ids": [event ids], "photos": set, "end"}

    def problem(self, text):
        with self.lock:
            self.problems.append(text)

    def send(self, client, op, method, path, headers=None, **kw):
        """One request. Returns the response, 'unknown' (cut off: may have happened) or 'refused' (did not)."""
        gen0, up0 = self.generation, self.up.is_set()
        try:
            r = client.session.request(method, self.server.url + path,
                                       headers={"Authorization": f"Bearer {client.token}", **(headers or {})},
                                       timeout=REQUEST_TIMEOUT_S, **kw)
        except requests.RequestException as e:
            outcome = "refused" if _not_sent(e) else "unknown"
            with self.lock:
                self.statuses[(op, outcome)] += 1
                if outcome == "unknown":
                    self.unknown[op] += 1
                    if up0 and gen0 == self.generation and self.up.is_set():
                        self.stray_errors.append(f"{method} {path}: {e!r} with no kill in flight")
            return outcome
        with self.lock:
            self.statuses[(op, r.status_code)] += 1
        spans_restart = not (up0 and gen0 == self.generation and self.up.is_set())
        if r.status_code == 503 and not spans_restart:
            self.problem(f"{method} {path}: 503 while the server was up: {r.text[:300]}")
        elif r.status_code >= 500 and r.status_code != 503:
            self.problem(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r


def send_keyed(chaos, index, client, k):
    """One try of a keyed upload: (photo id or None, outcome). The id comes with a 200; otherwise the outcome is
    'unknown' / 'refused' (a kill), 503 (restarting), 409 (an earlier try's claim, cut off by a kill, is not stale
    yet) or 'bad' (any other answer: a problem)."""
    entry = chaos.keys[k]
    r = chaos.send(client, "upload+key", "POST", "/upscale", headers={"Idempotency-Key": k},
                   files={"file": ("x.jpg", entry["sent"], "image/jpeg")}, data={"lat": entry["lat"], "lng": "127.0"})
    with chaos.lock:
        entry["tries"] += 1
    if isinstance(r, str):
        return None, r
    if r.status_code in (409, 503):
        return None, r.status_code
    if r.status_code != 200:
        chaos.problem(f"user {index} keyed upload {k}: {r.status_code} {r.text[:300]}")
        return None, "bad"
    pid = r.json()["id"]
    with chaos.lock:
        entry["ids"].add(pid)
        entry["replayed"] += r.headers.get("Idempotent-Replayed") == "true"
        chaos.accepted[pid] = (index, "upload", entry["sent"])
    return pid, 200


def keyed_upload(chaos, index, client, k, mine):
    """A keyed upload, sent again with its key while the outcome is unknown (a kill cut it off, or the server was
    down); a 409 leaves it pending, tried again now and then by the loop and once more at the end."""
    while True:
        pid, outcome = send_keyed(chaos, index, client, k)
        with chaos.lock:
            if k in chaos.pending[index]:
                chaos.pending[index].remove(k)
            if pid is None and outcome != "bad":
                chaos.pending[index].append(k)
        if pid is not None:
            if pid not in mine and pid not in chaos.deleted and pid not in chaos.delete_unknown:
                mine.append(pid)
            return pid
        if outcome in (409, "bad") or chaos.stop.is_set():
            return None
        time.sleep(KEY_RETRY_PAUSE_S)


def client_loop(chaos, index, client, pool):
    rng = random.Random(chaos.seed * 1000 + index)
    ops, weights = zip(*OPS)
    mine = []  # photo ids answered 200, never sent a DELETE
    keys_made = 0
    try:
        while not chaos.stop.is_set():
            with chaos.lock:
                pending = list(chaos.pending[index])
            if pending and rng.random() < KEY_PENDING_RETRY_SHARE:
                keyed_upload(chaos, index, client, pending[0], mine)
                time.sleep(rng.uniform(*PAUSE_BETWEEN_REQUESTS_S))
                continue
            op = rng.choices(ops, weights)[0]
            if op == "delete" and not mine:
                op = "upload"
            if op == "upload" and rng.random() < KEYED_SHARE:
                keys_made += 1
                k = f"chaos-{chaos.seed}-{index}-{keys_made}"
                # Its own latitude: the photos this key made are the user's photos at this latitude.
                lat = f"{10 + 10 * index + keys_made / 10000:.4f}"
                with chaos.lock:
                    chaos.keys[k] = {"user": index, "lat": lat, "sent": rng.choice(pool), "ids": set(), "tries": 0,
                                     "replayed": 0}
                keyed_upload(chaos, index, client, k, mine)
                time.sleep(rng.uniform(*PAUSE_BETWEEN_REQUESTS_S))
                continue
            if op in ("upload", "bestcut"):
                if op == "upload":
                    sent = rng.choice(pool)
                    r = chaos.send(client, op, "POST", "/upscale", files={"file": ("x.jpg", sent, "image/jpeg")},
                                   data={"lat": "37.5", "lng": "127.0"})
                else:
                    sent = rng.sample(pool, rng.randint(2, 4))
                    parts = [("files", (f"shot{i}.jpg", d, "image/jpeg")) for i, d in enumerate(sent)]
                    r = chaos.send(client, op, "POST", "/bestcut", files=parts)
                if not isinstance(r, str) and r.status_code == 200:
                    pid = r.json()["id"]
                    with chaos.lock:
                        chaos.accepted[pid] = (index, op, sent)
                    mine.append(pid)
                elif not isinstance(r, str) and r.status_code != 503:
                    chaos.problem(f"user {index} {op}: {r.status_code} {r.text[:300]}")
            elif op == "delete":
                pid = mine.pop(rng.randrange(len(mine)))
                r = chaos.send(client, op, "DELETE", f"/photos/{pid}")
                if r == "refused":
                    mine.append(pid)  # never reached the server: still ours to delete later
                elif r == "unknown" or r.status_code == 503:
                    with chaos.lock:
                        chaos.delete_unknown.add(pid)
                elif r.status_code == 200:
                    with chaos.lock:
                        chaos.deleted.add(pid)
                else:  # 404 for a photo it was told exists and never deleted before
                    chaos.problem(f"user {index} DELETE {pid}: {r.status_code} {r.text[:300]}")
            else:
                r = chaos.send(client, op, "GET", "/photos", params={"limit": 1000})
                if not isinstance(r, str) and r.status_code == 200:
                    listed = {p["id"] for p in r.json()}
                    with chaos.lock:
                        gone = listed & chaos.deleted
                        missing = set(mine) - listed
                    if gone:
                        chaos.problem(f"user {index}: deleted photos still listed: {sorted(gone)}")
                    if missing:
                        chaos.problem(f"user {index}: accepted photos not listed: {sorted(missing)}")
                elif not isinstance(r, str) and r.status_code != 503:
                    chaos.problem(f"user {index} list: {r.status_code} {r.text[:300]}")
            if isinstance(r, str):
                time.sleep(0.1)  # the server is down or restarting: the next try goes to server.url anew
            else:
                time.sleep(rng.uniform(*PAUSE_BETWEEN_REQUESTS_S))
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        with chaos.lock:
            chaos.exceptions.append(f"user {index}: {e!r}")


def events_loop(chaos, client):
    """User 0's GET /events, opened again whenever it breaks (a kill); every stream's ids and photos recorded."""
    session = session_from(client.ip)
    try:
        while not chaos.stop.is_set():
            gen = chaos.generation
            try:
                r = session.get(chaos.server.url + "/events", headers={"Authorization": f"Bearer {client.token}"},
                                stream=True, timeout=(5, STREAM_SILENT_S))
            except requests.RequestException:
                time.sleep(0.1)
                continue
            if r.status_code != 200:
                if r.status_code != 503:
                    chaos.problem(f"GET /events: {r.status_code} {r.text[:300]}")
                r.close()
                time.sleep(0.1)
                continue
            stream = {"generation": gen, "ids": [], "photos": set(), "deleted": set(), "end": None}
            with chaos.lock:
                chaos.streams.append(stream)
            buf, msg = b"", {}
            try:
                for chunk in r.iter_content(chunk_size=None):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        line = line.decode()
                        if line == "":
                            if "data" in msg:
                                stream["ids"].append(int(msg.get("id", "-1")))
                                data = json.loads(msg["data"])
                                (stream["deleted"] if msg.get("event") == "deleted" else stream["photos"]).add(data["id"])
                            msg = {}
                        elif not line.startswith(":"):
                            field, _, value = line.partition(":")
                            msg[field] = value.strip()
                    if chaos.stop.is_set():
                        break
                stream["end"] = "clean"
            except requests.RequestException as e:
                stream["end"] = "broken"
                if isinstance(e, requests.ConnectionError) and "Read timed out" in str(e) and \
                        gen == chaos.generation and chaos.up.is_set():
                    chaos.problem(f"an event stream was silent for {STREAM_SILENT_S} s with the server up")
            finally:
                r.close()
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        with chaos.lock:
            chaos.exceptions.append(f"events: {e!r}")


def all_photos(client):
    """Every photo of the user (paged), as the list endpoint returns them."""
    out, skip = [], 0
    while True:
        r = client.get("/photos", params={"skip": skip, "limit": 1000})
        assert r.status_code == 200, (r.status_code, r.text)
        page = r.json()
        out += page
        if len(page) < 1000:
            return out
        skip += len(page)


def job_rows(server):
    """(job id, photo id, state, attempts) of every job, straight from the database."""
    sql = "SELECT id, photo_id, state, attempts FROM jobs"
    if server.database_url is None:
        db = sqlite3.connect(f"file:{server.path('petcam.db')}?mode=ro", uri=True, timeout=30)
        try:
            return [tuple(row) for row in db.execute(sql)]
        finally:
            db.close()
    out = subprocess.run([os.path.join(PG_BIN, "psql"), server.database_url, "-At", "-F", "|", "-c", sql],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return [(a, b, c, int(d)) for a, b, c, d in (line.split("|") for line in out.splitlines() if line)]


def test_kill_9_chaos(start_server):
    seed = int(os.environ.get("PETCAM_CHAOS_SEED", str(int(time.time() * 1000) % 1_000_000)))
    rng = random.Random(seed)
    t0 = time.monotonic()
    server = start_server(**SERVER_ENV)
    clients = [logged_in_client(server) for _ in range(USERS)]
    pool = [encode_jpeg(photo_image(w, h, name), quality=85) for (w, h) in SIZES for name in NAMES]

    chaos = Chaos(server, seed)
    threads = [threading.Thread(target=client_loop, args=(chaos, i, c, pool), daemon=True, name=f"user{i}")
               for i, c in enumerate(clients)]
    threads.append(threading.Thread(target=events_loop, args=(chaos, clients[0]), daemon=True, name="events"))
    problems = []
    t_chaos = time.monotonic()
    for t in threads:
        t.start()
    try:
        for cycle in range(KILLS):
            time.sleep(rng.uniform(*WAIT_BEFORE_KILL_S))
            assert server.running(), (
                f"cycle {cycle}: the server exited by itself with {server.proc.returncode}; "
                f"log tail:\n{server.log_text()[-4000:]}")
            chaos.up.clear()
            chaos.generation += 1
            server.kill()
            assert server.proc.returncode == -9, f"cycle {cycle}: exit {server.proc.returncode}, not SIGKILL"
            server.restart()
            chaos.up.set()
    finally:
        chaos.stop.set()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 10)
    assert not any(t.is_alive() for t in threads), "a client thread did not stop"
    chaos_s = time.monotonic() - t_chaos

    # One clean restart (SIGTERM: a running job goes back to the queue), then let every job finish.
    assert server.running(), f"the server exited by itself with {server.proc.returncode}"
    rc, _ = server.terminate()
    assert rc == 0, f"exit code {rc} after SIGTERM"
    server.start()

    lists = {}
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        lists = {i: all_photos(c) for i, c in enumerate(clients)}
        statuses = collections.Counter(p["status"] for ps in lists.values() for p in ps)
        if set(statuses) <= {"completed"} or "failed" in statuses or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Keys still without an answer: one more try each, on the clean server (a 409 now means a claim a kill cut
    # off less than its stale age ago, 2 x max(30, HANDLE_TIMEOUT_SECONDS) s).
    late_keys = {}
    for index, ks in chaos.pending.items():
        for k in list(ks):
            late_keys[k] = send_keyed(chaos, index, clients[index], k)
    if late_keys:
        lists = {i: all_photos(c) for i, c in enumerate(clients)}
    t_drained = time.monotonic()
    drain_s = t_drained - t_chaos - chaos_s
    existing = {p["id"]: (i, p) for i, ps in lists.items() for p in ps}
    not_done = {pid: p["status"] for pid, (_, p) in existing.items() if p["status"] != "completed"}
    if not_done:
        problems.append(f"photos not completed {DRAIN_TIMEOUT_S} s after the last restart "
                        f"(or failed): {not_done}")

    # 1. Accepted and not deleted: listed for its owner, completed, its files downloadable and right.
    #    Accepted, then a DELETE with no answer: either gone entirely, or held to the same checks; and so
    #    is a photo from an upload whose answer never came.
    expected = {pid for pid in chaos.accepted if pid not in chaos.deleted and pid not in chaos.delete_unknown}

    def check_photo(pid):
        if pid in chaos.accepted:
            owner, kind, sent = chaos.accepted[pid]
        else:
            owner, kind, sent = existing[pid][0], "unanswered upload", None
        if pid not in existing:
            return [f"{kind} {pid} (user {owner}) answered 200 but is not listed"] if pid in expected else []
        if existing[pid][0] != owner:
            return [f"{kind} {pid} of user {owner} is listed for user {existing[pid][0]}"]
        c = clients[owner]
        original = c.get(f"/photos/{pid}?type=original")
        upscaled = c.get(f"/photos/{pid}?type=upscaled")
        if original.status_code != 200 or upscaled.status_code != 200:
            return [f"{kind} {pid}: downloads answered {original.status_code} (original), "
                    f"{upscaled.status_code} (upscaled)"]
        out = []
        if upscaled.headers.get("Content-Type") != "image/jpeg":
            out.append(f"{kind} {pid}: upscaled Content-Type {upscaled.headers.get('Content-Type')}")
        if kind == "upload" and original.content != sent:
            out.append(f"upload {pid}: the original differs from the bytes uploaded")
        if kind == "bestcut" and original.content not in sent:
            out.append(f"bestcut {pid}: the original is none of the shots sent")
        try:
            with decode(upscaled.content) as im:
                fmt, size = im.format, im.size
            w, h = jpeg_size(original.content)
            if fmt != "JPEG" or size != (4 * w, 4 * h):
                out.append(f"{kind} {pid}: upscaled is {fmt} {size}, original {w}x{h}")
        except Exception as e:  # noqa: BLE001
            out.append(f"{kind} {pid}: upscaled does not decode: {e!r}")
        return out

    def check_user(index):
        # One thread per user: each client's session is used by one thread only.
        mine = [pid for pid in sorted(set(chaos.accepted) | set(existing)) if pid not in chaos.deleted and
                (chaos.accepted[pid][0] if pid in chaos.accepted else existing[pid][0]) == index]
        return [text for pid in mine for text in check_photo(pid)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=USERS) as ex:
        for found in ex.map(check_user, range(USERS)):
            problems += found

    # 2. Deleted with 200: 404 and no file left.
    files = set(server.storage_files())
    for pid in sorted(chaos.deleted):
        owner = chaos.accepted[pid][0]
        for t in ("upscaled", "original"):
            r = clients[owner].get(f"/photos/{pid}?type={t}")
            if r.status_code != 404:
                problems.append(f"deleted {pid}: GET type={t} answered {r.status_code}")
        if pid in existing:
            problems.append(f"deleted {pid} is still listed")
        left = {f for f in files if pid in f}
        if left:
            problems.append(f"deleted {pid} left files: {sorted(left)}")

    # 3. Files on disk == the paths of the rows that exist.
    row_paths = set()
    for pid, (_, p) in existing.items():
        row_paths |= photo_files(p)
        if p["status"] == "completed" and p["upscaled_path"] != f"storage/upscaled/{pid}.jpg":
            problems.append(f"{pid}: completed with upscaled_path {p['upscaled_path']!r}")
    if files - row_paths:
        problems.append(f"files no row owns: {sorted(files - row_paths)}")
    if row_paths - files:
        problems.append(f"rows whose file is missing: {sorted(row_paths - files)}")

    # 4. No job completed twice (log), and the database's view of the same jobs.
    log = server.log_text()
    completed_jobs = collections.Counter(m.group(1) for m in COMPLETED_RE.finditer(log))
    completed_photos = collections.Counter(m.group(2) for m in COMPLETED_RE.finditer(log))
    twice = {j: n for j, n in completed_jobs.items() if n > 1}
    twice_photos = {p: n for p, n in completed_photos.items() if n > 1}
    if twice or twice_photos:
        problems.append(f"completed more than once: jobs {twice}, photos {twice_photos}")
    starts = collections.Counter(m.group(1) for m in STARTED_RE.finditer(log))
    attempts_logged = collections.defaultdict(set)  # job id -> attempt numbers of its `started by` lines
    for m in STARTED_RE.finditer(log):
        attempts_logged[m.group(1)].add(int(m.group(3)))
    releases = collections.Counter(m.group(1) for m in RELEASED_RE.finditer(log))
    retries = collections.Counter(m.group(1) for m in RETRY_RE.finditer(log))
    # A kill while a job runs costs it an attempt (a SIGTERM hand-back gives the attempt back, and no attempt
    # may fail here), so the highest attempt a job was started with, minus one, is how often it was started
    # again after a kill. A kill between the claim's commit and its log line loses that line but not the
    # attempt: counted as a start line lost.
    rerun = {j: max(a) - 1 for j, a in attempts_logged.items() if max(a) > 1}
    start_lines_lost = sum(max(a) - len(a) for a in attempts_logged.values())
    lease_lost = LEASE_LOST_RE.findall(log)
    failed = [m.group(0) for m in FAILED_RE.finditer(log)]
    if lease_lost:
        problems.append(f"lease lost (a live worker's job taken over): {lease_lost}")
    if retries or failed:
        problems.append(f"failed attempts: {dict(retries)}; failures: {failed}")
    recovered = sum(int(n) for n in RECOVERED_RE.findall(log))
    swept = sum(int(n) for n in SWEPT_RE.findall(log))
    error_lines = [m.group(0) for m in ERROR_LINE_RE.finditer(log)]
    harness_starts = log.count("=== harness: start #")
    if harness_starts != KILLS + 2:
        problems.append(f"{harness_starts} starts in the log, expected {KILLS + 2}")

    jobs = job_rows(server)
    job_photos = {pid for _, pid, _, _ in jobs}
    if job_photos != set(existing):
        problems.append(f"jobs without a listed photo: {sorted(job_photos - set(existing))}; "
                        f"photos without a job: {sorted(set(existing) - job_photos)}")
    bad_jobs = [j for j in jobs if j[2] != "completed"]
    if bad_jobs:
        problems.append(f"jobs not completed in the database: {bad_jobs}")
    db_rerun = {j: a - 1 for j, _, _, a in jobs if a > 1}
    # The log counts every job, the database only those whose photo still exists: compare like with like.
    live_rerun = {j: n for j, n in rerun.items() if j in {row[0] for row in jobs}}
    if live_rerun != db_rerun:
        print(f"  note: re-runs in the log {live_rerun} != attempts in the database {db_rerun}")
    # A kill between the commit and the log line loses the line; reported, not a failure.
    unlogged = [f"job {j} photo {pid}" for j, pid, state, _ in jobs if state == "completed" and not completed_jobs[j]]

    # 6. Idempotency-Keys: never a second photo. The photos a key made are its user's at its latitude.
    by_lat = collections.defaultdict(list)
    for pid, (i, p) in existing.items():
        by_lat[(i, f"{p['latitude']:.4f}")].append(pid)
    keys_answered = keys_multi_try = keys_stuck = 0
    for k, entry in chaos.keys.items():
        made = by_lat.get((entry["user"], entry["lat"]), [])
        if len(entry["ids"]) > 1:
            problems.append(f"key {k}: answered with {len(entry['ids'])} different photos {sorted(entry['ids'])}")
        if len(made) > 1:
            problems.append(f"key {k} ({entry['tries']} tries): {len(made)} photos {sorted(made)}")
        if entry["ids"]:
            keys_answered += 1
            (pid,) = list(entry["ids"])[:1]
            if pid not in chaos.deleted and pid not in chaos.delete_unknown and made != [pid]:
                problems.append(f"key {k}: answered {pid}, but its photos are {made}")
        else:
            keys_stuck += 1
        keys_multi_try += entry["tries"] > 1
    keys_replayed = sum(e["replayed"] for e in chaos.keys.values())

    # 7. Event streams: ids from 1, rising; only user 0's photos; opened again after the kills.
    others = {pid for pid, (i, _) in existing.items() if i != 0} | \
        {pid for pid, v in chaos.accepted.items() if v[0] != 0}
    for n, st in enumerate(chaos.streams):
        if st["ids"] and (st["ids"][0] != 1 or any(b <= a for a, b in zip(st["ids"], st["ids"][1:]))):
            problems.append(f"stream {n}: event ids {st['ids'][:20]}")
        foreign = (st["photos"] | st["deleted"]) & others
        if foreign:
            problems.append(f"stream {n} of user 0 carried other users' photos: {sorted(foreign)[:5]}")
    stream_generations = {st["generation"] for st in chaos.streams}
    events_seen = sum(len(st["ids"]) for st in chaos.streams)
    if len(stream_generations) < KILLS // 2:
        problems.append(f"the event stream was opened in only {len(stream_generations)} of {KILLS + 1} server runs")
    if not events_seen:
        problems.append("no event reached the event stream")

    # What the clients saw while it ran.
    problems += chaos.problems + chaos.exceptions
    accepted_uploads = sum(1 for v in chaos.accepted.values() if v[1] == "upload")
    accepted_bestcuts = len(chaos.accepted) - accepted_uploads
    by_status = collections.Counter()
    for (op, status), n in chaos.statuses.items():
        by_status[status] += n
    refused = by_status.pop("refused", 0)  # never reached a server: not counted as requests
    by_op = {k: n for k, n in chaos.statuses.items() if k[1] != "refused"}
    unknown_existing = len(set(existing) - set(chaos.accepted))
    summary = (
        f"chaos summary: backend={TEST_DATABASE} mode={'full' if FULL else 'short'} seed={seed} kills={KILLS} "
        f"requests={sum(by_status.values())} by_status={dict(sorted(by_status.items(), key=str))} "
        f"by_op={dict(sorted(by_op.items(), key=str))} refused_while_down={refused} "
        f"accepted={len(chaos.accepted)} (uploads={accepted_uploads} bestcuts={accepted_bestcuts}) "
        f"deleted={len(chaos.deleted)} delete_unknown={len(chaos.delete_unknown)} "
        f"unknown_outcome={sum(chaos.unknown.values())} {dict(chaos.unknown)} "
        f"unknown_that_exist={unknown_existing} stray_conn_errors={len(chaos.stray_errors)} "
        f"photos_at_end={len(existing)} files_at_end={len(files)} "
        f"job_start_lines={sum(starts.values())} (lost to a kill: {start_lines_lost}) "
        f"jobs_completed_log={sum(completed_jobs.values())} "
        f"jobs_rerun_after_kill={len(rerun)} (extra starts {sum(rerun.values())}; of photos that exist: "
        f"{len(live_rerun)} jobs, {sum(live_rerun.values())} extra starts; database: {len(db_rerun)} jobs, "
        f"{sum(db_rerun.values())} extra attempts) recovered_at_start={recovered} "
        f"sigterm_handbacks={sum(releases.values())} orphan_files_swept={swept} "
        f"deleted_while_processing={len(DELETED_WHILE_RE.findall(log))} error_log_lines={len(error_lines)} "
        f"completions_not_logged={len(unlogged)} "
        f"keys={len(chaos.keys)} (answered={keys_answered} retried={keys_multi_try} replayed_answers={keys_replayed} "
        f"unanswered_at_end={keys_stuck} late_tries={len(late_keys)}) "
        f"event_streams={len(chaos.streams)} (server runs covered {len(stream_generations)}, events {events_seen}) "
        f"seconds={time.monotonic() - t0:.1f} (setup {t_chaos - t0:.1f}, chaos {chaos_s:.1f}, "
        f"restart+drain {drain_s:.1f}, checks {time.monotonic() - t_drained:.1f})")
    print("\n" + summary)
    for line in error_lines[:20]:
        print("  log:", line)
    for line in unlogged[:20]:
        print("  completed, no log line:", line)
    for line in chaos.stray_errors[:20]:
        print("  stray:", line)
    assert not problems, f"{len(problems)} invariant violation(s):\n" + "\n".join(problems[:60])
