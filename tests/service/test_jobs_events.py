"""SPEC "Version 2 > Jobs and accounts": job progress and errors in the photo JSON, live events (GET /events)
and Idempotency-Key on uploads.  (The account routes are tested elsewhere.)

- Progress: 0.0 while queued, rising while processing (several values for a job of many tiles), 1.0 once
  completed; started_at <= completed_at; a job that fails says why in `error`.
- GET /events: a text/event-stream of the caller's own photo changes (queued -> processing -> completed, then
  `deleted`), ids rising from 1 per stream, keep-alive comments, 401 before the stream, per-user (429) and
  per-server (503) limits, a reader that never reads is dropped without holding anyone up, SIGTERM ends every
  stream cleanly, and a stream outlives HANDLE_TIMEOUT_SECONDS.
- Idempotency-Key: a replay answers the first answer again (status, body, `Idempotent-Replayed: true`) and makes
  no second photo, also after a connection cut before the answer and after a restart; 409 while the first is
  still being handled; 422 for another request under the same key and for a malformed key; keys are per user;
  4xx answers are replayed, 429 is not.
"""

import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
import uuid

import pytest

from conftest import (ISO_UTC_RE, PG_BIN, PHOTO_KEYS, UUID_RE, assert_422, assert_detail, encode_jpeg, jpeg,
                      logged_in_client, patch_jpeg_dimensions, photo_image, session_from, wait_until)

JOB_KEYS = {"progress", "error", "started_at", "completed_at"}
KEEPALIVE_ENV = {"EVENTS_KEEPALIVE_SECONDS": "1"}
# 960x720 in tiles of 256 px: 4 x 3 = 12 tiles, a few seconds of x4fast on two cores, so progress is written
# many times (at most every 250 ms); the tile is set so that the count does not hang on the model's default.
MULTI_TILE = (960, 720)
MULTI_TILE_ENV = {"TILE": "256"}
# 4 tiles of 256 px: `processing` for over half a second, with progress between.
MEDIUM = (480, 360)
UPLOAD_MESSAGE = "Upload successful, processing in background"


# ---------------------------------------------------------------- helpers

def upload(c, data, key=None, filename="x.jpg", **fields):
    headers = {"Idempotency-Key": key} if key is not None else None
    return c.post("/upscale", files={"file": (filename, data, "image/jpeg")},
                  data={k: str(v) for k, v in fields.items()}, headers=headers)


def upload_ok(c, data, **kw):
    r = upload(c, data, **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["id"]


def bestcut(c, shots, key=None, **fields):
    parts = [("files", (f"shot{i}.jpg", d, "image/jpeg")) for i, d in enumerate(shots)]
    parts += [(k, (None, str(v))) for k, v in fields.items()]
    headers = {"Idempotency-Key": key} if key is not None else None
    return c.post("/bestcut", files=parts, headers=headers)


def info(c, photo_id):
    r = c.get(f"/photos/{photo_id}/info")
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def iso_ms(text):
    """ISO 8601 UTC 'Z' as a comparable string of fixed width (milliseconds, padded)."""
    assert isinstance(text, str) and ISO_UTC_RE.match(text), text
    head, _, frac = text[:-1].partition(".")
    return head + "." + (frac + "000")[:3]


def check_job_fields(entry, what=""):
    assert JOB_KEYS <= set(entry), (what, sorted(entry))
    p = entry["progress"]
    assert isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0, (what, entry)
    status = entry["status"]
    if status == "queued":
        assert p == 0.0, (what, entry)
        assert entry["completed_at"] is None and entry["error"] is None, (what, entry)
    elif status == "processing":
        assert p < 1.0, (what, entry)
        assert entry["started_at"] is not None and entry["completed_at"] is None, (what, entry)
        assert entry["error"] is None, (what, entry)
    elif status == "completed":
        assert p == 1.0, (what, entry)
        assert entry["error"] is None, (what, entry)
        assert iso_ms(entry["started_at"]) <= iso_ms(entry["completed_at"]), (what, entry)
    elif status == "failed":
        assert isinstance(entry["error"], str) and entry["error"], (what, entry)
        assert entry["completed_at"] is not None, (what, entry)
    for k in ("started_at", "completed_at"):
        assert entry[k] is None or ISO_UTC_RE.match(entry[k]), (what, k, entry)


def key():
    return f"key-{uuid.uuid4()}"


# ---------------------------------------------------------------- an event stream, read in a thread

class EventStream:
    """GET /events for a client, read in a thread: every message (event, id, data) and comment with its arrival
    time. The stream has its own connection (and the client's source address)."""

    def __init__(self, client, token=None, connect_timeout=10):
        self.session = session_from(client.ip)
        token = token if token is not None else client.token
        self.response = self.session.get(client.server.url + "/events", stream=True, timeout=(connect_timeout, 120),
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        self.status_code = self.response.status_code
        self.items = []  # {"t", "comment"} or {"t", "event", "id", "data", "retry"}
        self.lock = threading.Lock()
        self.ended = threading.Event()  # the response ended (cleanly or not)
        self.clean_end = False  # the chunked body completed (its zero chunk arrived)
        self.error = None
        self.head = b""  # the first bytes of the body
        self.leftover = None
        self._closing = False
        self._thread = None
        if self.status_code == 200:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        else:
            self.body = self.response.content
            self.response.close()
            self.ended.set()

    def _read(self):
        buf = b""
        msg = {}
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                if len(self.head) < 64:
                    self.head += chunk[:64]
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.decode("utf-8").rstrip("\r")
                    now = time.monotonic()
                    if line == "":
                        if msg:
                            msg["t"] = now
                            with self.lock:
                                self.items.append(msg)
                            msg = {}
                    elif line.startswith(":"):
                        with self.lock:
                            self.items.append({"t": now, "comment": line[1:].strip()})
                    else:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        assert field not in msg, f"field {field!r} twice in one message: {msg} {line!r}"
                        msg[field] = value
            self.clean_end = True
            self.leftover = buf + (b"" if not msg else repr(msg).encode())
        except Exception as e:  # noqa: BLE001 - inspected by the tests
            if not self._closing:
                self.error = e
        finally:
            self.ended.set()

    # -- views
    def snapshot(self):
        with self.lock:
            return list(self.items)

    def messages(self, event=None):
        """Messages with data (not the opening `retry:`), optionally of one event type."""
        return [m for m in self.snapshot() if "data" in m and (event is None or m.get("event") == event)]

    def comments(self, text=None):
        return [m for m in self.snapshot() if "comment" in m and (text is None or m["comment"] == text)]

    def photo_events(self, photo_id=None):
        out = []
        for m in self.messages("photo"):
            data = json.loads(m["data"])
            if photo_id is None or data["id"] == photo_id:
                out.append((m, data))
        return out

    def wait(self, predicate, timeout, message):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert self.error is None, f"{message}: the stream failed: {self.error!r}"
            assert not self.ended.is_set(), f"{message}: the stream ended; items: {self.snapshot()[-10:]}"
            assert time.monotonic() < deadline, f"{message}: not within {timeout} s; last items: {self.snapshot()[-10:]}"
            time.sleep(0.05)

    def close(self):
        """Drops the connection (as a client that goes away)."""
        self._closing = True
        try:
            sock = self.response.raw._connection.sock  # urllib3 1.26: the stream's connection
            sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.response.close()
        self.session.close()
        self.ended.wait(10)


def open_stream(client, **kw):
    s = EventStream(client, **kw)
    assert s.status_code == 200, (s.status_code, getattr(s, "body", b"")[:300])
    return s


def check_stream_headers(stream):
    h = stream.response.headers
    assert h["Content-Type"] == "text/event-stream; charset=utf-8", h
    assert h.get("Transfer-Encoding", "").lower() == "chunked", h
    assert "Content-Length" not in h, h


def ids_rise_from_one(messages, what):
    ids = [m.get("id") for m in messages]
    assert all(i is not None and i.isdigit() for i in ids), (what, ids)
    ids = [int(i) for i in ids]
    assert ids and ids[0] == 1, (what, ids)
    assert all(b > a for a, b in zip(ids, ids[1:])), (what, ids)


def statuses_in_order(events):
    out = []
    for _, data in events:
        if not out or out[-1] != data["status"]:
            out.append(data["status"])
    return out


# ---------------------------------------------------------------- progress and errors

def test_progress_rises_to_one(start_server):
    """A job of 12 tiles: 0.0 while queued, then several values strictly between 0 and 1, never falling, written
    at most every 250 ms; 1.0 once completed. Seen through GET /photos/{id}/info every 50 ms and through events."""
    server = start_server(**MULTI_TILE_ENV)
    c = logged_in_client(server)
    stream = open_stream(c)
    slow = upload_ok(c, jpeg(*MULTI_TILE, "chelsea"))
    behind = upload_ok(c, jpeg(64, 48, "coffee"))  # waits behind it in the queue

    seen = []  # (t, info of the slow photo)
    queued_behind = None
    deadline = time.monotonic() + 120
    while True:
        e = info(c, slow)
        seen.append((time.monotonic(), e))
        check_job_fields(e, "slow photo")
        if queued_behind is None and e["status"] == "processing":
            queued_behind = info(c, behind)
        if e["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline, f"not completed within 120 s: {e}"
        time.sleep(0.05)
    final = seen[-1][1]
    assert final["status"] == "completed", final
    assert final["progress"] == 1.0 and final["error"] is None, final

    # The photo behind it, while the first ran: queued, 0.0, nothing started.
    assert queued_behind is not None, "the slow photo was never seen processing"
    assert queued_behind["status"] == "queued", queued_behind
    assert queued_behind["progress"] == 0.0, queued_behind
    assert queued_behind["started_at"] is None and queued_behind["completed_at"] is None, queued_behind
    assert queued_behind["error"] is None, queued_behind

    progress = [e["progress"] for _, e in seen]
    assert all(b >= a for a, b in zip(progress, progress[1:])), f"progress fell: {progress}"
    processing = [(t, e["progress"]) for t, e in seen if e["status"] == "processing"]
    between = sorted({p for _, p in processing if 0.0 < p < 1.0})
    assert len(between) >= 2, f"progress while processing took only {between} (polled {len(processing)} times)"
    # At most a few writes a second: no more distinct values than one per 250 ms (+ the first and last).
    span = processing[-1][0] - processing[0][0]
    assert len(between) <= span / 0.25 + 2, f"{len(between)} progress values in {span:.2f} s: {between}"

    print(f"\nprogress while processing ({span:.2f} s, {len(processing)} polls): {between}")
    assert iso_ms(final["created_at"]) <= iso_ms(final["started_at"]) <= iso_ms(final["completed_at"]), final
    statuses = [e["status"] for _, e in seen]
    assert statuses[0] in ("queued", "processing"), statuses

    # The events say the same: progress never falls, several values between, 1.0 at the end.
    stream.wait(lambda: any(d["status"] == "completed" for _, d in stream.photo_events(slow)), 10,
                "completed event of the slow photo")
    events = stream.photo_events(slow)
    ev_progress = [d["progress"] for _, d in events]
    assert all(b >= a for a, b in zip(ev_progress, ev_progress[1:])), f"progress fell in events: {ev_progress}"
    assert len({p for p in ev_progress if 0.0 < p < 1.0}) >= 2, ev_progress
    assert events[-1][1]["progress"] == 1.0 and events[-1][1]["status"] == "completed", events[-1][1]
    assert events[-1][1] == info(c, slow)

    done = c.wait_status(behind)
    assert done["progress"] == 1.0, done
    check_job_fields(done, "photo behind")
    stream.close()


def wait_final(c, photo_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        e = info(c, photo_id)
        if e["status"] in ("completed", "failed"):
            return e
        assert time.monotonic() < deadline, f"{photo_id} still {e['status']} after {timeout} s: {e}"
        time.sleep(0.1)


def test_failed_job_says_why(start_server):
    """A job whose original cannot be decoded ends `failed` with a short reason a person can act on.

    An upload that does not decode is refused at once (the upload decodes it for its thumbnail), so the failure
    is made by corrupting the stored original while the job waits: a server with no job workers takes the
    upload, its file is overwritten, and the same data dir then runs the job with a single attempt (a job keeps
    the JOB_MAX_ATTEMPTS it was queued with)."""
    server = start_server(JOB_WORKERS="0", JOB_MAX_ATTEMPTS="1")
    c = logged_in_client(server)
    original = jpeg(320, 240, "chelsea")
    truncated_id = upload_ok(c, original)
    garbage_id = upload_ok(c, jpeg(320, 240, "coffee"))
    ok_id = upload_ok(c, jpeg(48, 40, "grace_hopper"))
    for pid in (truncated_id, garbage_id, ok_id):
        e = info(c, pid)
        assert e["status"] == "queued" and e["progress"] == 0.0, e
        assert e["error"] is None and e["started_at"] is None and e["completed_at"] is None, e
        check_job_fields(e)
    rc, _ = server.terminate()
    assert rc == 0

    # Truncated right after the headers (no scan data), and the JPEG signature followed by noise.
    sos = original.index(b"\xff\xda")
    with open(server.path(f"storage/originals/{truncated_id}.jpg"), "wb") as f:
        f.write(original[:sos + 40])
    with open(server.path(f"storage/originals/{garbage_id}.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + os.urandom(4000))

    server.overrides.update(JOB_WORKERS="1", JOB_MAX_ATTEMPTS="1")
    server.restart()
    for pid in (truncated_id, garbage_id):
        e = wait_final(c, pid)
        assert e["status"] == "failed", e
        assert e["error"] == "Image could not be decoded", e
        assert e["upscaled_path"] is None and e["upscaled_width"] is None, e
        assert e["started_at"] is not None and e["completed_at"] is not None, e
        assert iso_ms(e["started_at"]) <= iso_ms(e["completed_at"]), e
        check_job_fields(e, "failed photo")
        # The list shows the same.
        assert c.photo_entry(pid)["error"] == "Image could not be decoded"
    e = wait_final(c, ok_id)
    assert e["status"] == "completed" and e["progress"] == 1.0 and e["error"] is None, e


# ---------------------------------------------------------------- GET /events

def test_events_follow_a_photo_and_nobody_else_sees_it(start_server):
    server = start_server(**KEEPALIVE_ENV, **MULTI_TILE_ENV)
    alice, bob = logged_in_client(server), logged_in_client(server)
    mine = open_stream(alice)
    theirs = open_stream(bob)
    check_stream_headers(mine)
    mine.wait(lambda: len(mine.head) >= 25, 5, "the stream's opening")
    assert mine.head.startswith(b"retry: 3000\n: connected\n\n"), mine.head

    # A photo ahead of it keeps the second one `queued` long enough for its first event to say so.
    ahead = upload_ok(alice, jpeg(*MEDIUM, "chelsea"))
    followed = upload_ok(alice, jpeg(*MEDIUM, "coffee"))
    mine.wait(lambda: any(d["status"] == "completed" for _, d in mine.photo_events(followed)), 120,
              "the followed photo's completed event")
    r = alice.delete(f"/photos/{followed}")
    assert r.status_code == 200, r.text
    mine.wait(lambda: mine.messages("deleted"), 10, "the deleted event")
    for s, who in ((mine, "alice"), (theirs, "bob")):  # a fast job can be over before a third keep-alive
        s.wait(lambda s=s: len(s.comments("keep-alive")) >= 3, 10, f"three keep-alives on {who}'s stream")

    events = mine.photo_events(followed)
    statuses = statuses_in_order(events)
    assert statuses == ["queued", "processing", "completed"], statuses
    for m, d in events:
        check_job_fields(d, f"event {m['id']}")
        assert PHOTO_KEYS | JOB_KEYS <= set(d), sorted(d)
        assert "\n" not in m["data"], m
    progress = [d["progress"] for _, d in events]
    assert all(b >= a for a, b in zip(progress, progress[1:])), progress
    assert events[-1][1]["upscaled_path"] == f"storage/upscaled/{followed}.jpg", events[-1][1]
    assert {d["status"] for _, d in mine.photo_events(ahead)} >= {"processing", "completed"}

    deleted = mine.messages("deleted")
    assert len(deleted) == 1 and json.loads(deleted[0]["data"]) == {"id": followed}, deleted
    messages = mine.messages()
    assert messages[-1] is deleted[0], "a message after the deleted event"
    assert {m.get("event") for m in messages} == {"photo", "deleted"}, messages
    ids_rise_from_one(messages, "alice's stream")
    assert all(UUID_RE.match(json.loads(m["data"])["id"]) for m in messages)

    # Bob's stream, open the whole time: only comments.
    assert theirs.messages() == [], theirs.messages()[:3]
    for s, who in ((mine, "alice"), (theirs, "bob")):
        assert s.error is None and not s.ended.is_set(), (who, s.error)
        keepalives = s.comments("keep-alive")
        assert len(keepalives) >= 3, (who, len(keepalives))
        gaps = [b["t"] - a["t"] for a, b in zip(keepalives, keepalives[1:])]
        assert max(gaps) < 2.5, f"{who}: keep-alive gaps {gaps} (EVENTS_KEEPALIVE_SECONDS=1)"
    # Bob's own photo does reach Bob's stream (it was open and working), and not Alice's.
    bobs = upload_ok(bob, jpeg(48, 40, "grace_hopper"))
    theirs.wait(lambda: theirs.photo_events(bobs), 10, "bob's own photo event")
    time.sleep(0.5)
    assert not mine.photo_events(bobs)
    mine.close()
    theirs.close()


def test_events_need_a_valid_token(start_server):
    server = start_server()
    c = logged_in_client(server)
    r = c.get("/events", auth=False, stream=True, timeout=10)
    assert_detail(r, 401, "Not authenticated")
    assert r.headers.get("WWW-Authenticate") == "Bearer", r.headers
    for token in ("nonsense", c.token[:-4] + "AAAA"):
        r = c.get("/events", headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=10)
        assert_detail(r, 401, "Could not validate credentials")
        assert r.headers.get("WWW-Authenticate") == "Bearer", r.headers
    r = c.get("/events", headers={"Authorization": f"Basic {c.token}"}, stream=True, timeout=10)
    assert_detail(r, 401, "Not authenticated")
    open_stream(c).close()  # the real token works


def test_events_per_user_limit(start_server):
    server = start_server(EVENTS_MAX_STREAMS_PER_USER="2", **KEEPALIVE_ENV)
    alice, bob = logged_in_client(server), logged_in_client(server)
    a1, a2 = open_stream(alice), open_stream(alice)
    third = EventStream(alice)
    assert third.status_code == 429, (third.status_code, third.body[:300])
    assert third.response.headers["Content-Type"].startswith("application/json"), third.response.headers
    assert isinstance(json.loads(third.body)["detail"], str)
    retry = third.response.headers.get("Retry-After")
    assert retry is not None and retry.isdigit() and int(retry) >= 1, third.response.headers
    b1 = open_stream(bob)  # another user is not affected
    # A client that goes away frees its slot (the server sees it at its next write: a keep-alive each second).
    a1.close()

    def reopened():
        s = EventStream(alice)
        if s.status_code == 200:
            return s
        assert s.status_code == 429, (s.status_code, s.body[:300])
        return None

    a3 = wait_until(reopened, timeout=15, interval=0.5, message="a slot freed after a stream was closed")
    for s in (a2, a3, b1):
        s.close()


def test_events_server_limit(start_server):
    server = start_server(EVENTS_MAX_STREAMS="3", **KEEPALIVE_ENV)
    users = [logged_in_client(server) for _ in range(4)]
    streams = [open_stream(users[0]), open_stream(users[0]), open_stream(users[1])]
    for c in (users[2], users[0]):
        s = EventStream(c)
        assert s.status_code == 503, (s.status_code, getattr(s, "body", b"")[:300])
        assert isinstance(json.loads(s.body)["detail"], str)
        retry = s.response.headers.get("Retry-After")
        assert retry is not None and retry.isdigit() and int(retry) >= 1, s.response.headers
    # Other requests are not refused meanwhile.
    assert users[3].get("/photos").status_code == 200
    streams[0].close()
    s = wait_until(lambda: (lambda s: s if s.status_code == 200 else None)(EventStream(users[3])), timeout=15,
                   interval=0.5, message="a stream slot freed")
    for x in streams[1:] + [s]:
        x.close()


def read_chunked_events(sock, timeout, data=b""):
    """Reads what a raw-socket stream has (after `data`, read before): (head, body bytes de-chunked, whether the
    zero chunk came, seconds)."""
    sock.settimeout(1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            if data.endswith(b"\r\n0\r\n\r\n"):
                break
            continue
        if not d:
            break
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    body, complete = b"", False
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            complete = True
            break
        body += rest[:size]
        rest = rest[size + 2:]
    return head.decode("latin-1"), body, complete, time.monotonic() - t0


def refused(client):
    """True when a new stream for the client is refused with 429; a stream that opens is closed at once."""
    s = EventStream(client)
    if s.status_code == 200:
        s.close()
        return False
    assert s.status_code == 429, (s.status_code, s.body[:300])
    return True


def test_slow_reader_is_dropped_and_holds_nobody_up(start_server):
    """A stream whose reader never reads, while its user's photos change many times: the server stops writing to
    it once EVENTS_BUFFER_BYTES are left unread (its slot is free again, its response ends), and another user's
    requests stay fast throughout."""
    server = start_server(EVENTS_BUFFER_BYTES="4096", EVENTS_MAX_STREAMS_PER_USER="1", READ_TIMEOUT_SECONDS="120",
                          **KEEPALIVE_ENV)
    slow, other = logged_in_client(server), logged_in_client(server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small window, and a small MSS: Linux sizes a connection's send buffer from the peer's MSS (on loopback
    # 64 KiB segments would let the kernel take megabytes before the server's own buffer fills at all).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.bind((slow.ip, 0))
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {slow.token}\r\n\r\n".encode())
    # Its answer's head (and maybe the opening chunk) is all this reader reads until the end of the test.
    opening = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in opening:
        d = sock.recv(4096)
        assert d, f"closed before the stream's head: {opening!r}"
        opening += d
    assert opening.startswith(b"HTTP/1.1 200"), opening
    # The stream is open: a second one for the same user is refused (one per user here).
    assert refused(slow)

    latencies = []
    stop = threading.Event()

    def normal_traffic():
        while not stop.is_set():
            for path in ("/photos", "/health"):
                t0 = time.monotonic()
                r = other.get(path, timeout=30)
                latencies.append(time.monotonic() - t0)
                assert r.status_code == 200, (path, r.status_code)
            time.sleep(0.02)

    others_stream = open_stream(other)
    traffic = threading.Thread(target=normal_traffic, daemon=True)
    traffic.start()
    others_photo = upload_ok(other, jpeg(48, 40, "coffee"))
    tiny = jpeg(32, 24, "chelsea")
    uploads, dropped_after = 0, None
    t_start = time.monotonic()
    deadline = t_start + 90
    try:
        # Each upload is 3 or 4 events of ~500 bytes; the slot is free once the server dropped the stream.
        while dropped_after is None:
            for _ in range(10):
                upload_ok(slow, tiny)
                uploads += 1
            probe = EventStream(slow)
            if probe.status_code == 200:
                probe.close()
                dropped_after = time.monotonic() - t_start
                break
            assert probe.status_code == 429, (probe.status_code, probe.body[:300])
            assert time.monotonic() < deadline and uploads < 500, f"the slow stream still open after {uploads} uploads"
        # Photos after the drop: the dropped stream must not carry them.
        after_drop = [upload_ok(slow, tiny) for _ in range(5)]
        # The jobs run meanwhile, and another user's requests are answered as quickly as ever.
        wait_until(lambda: all(p["status"] == "completed" for p in slow.photos()), 120, 0.5, "all jobs completed")
    finally:
        stop.set()
        traffic.join(35)
    assert not traffic.is_alive()
    assert latencies, "no normal request was made"
    latencies.sort()
    p50, worst = latencies[len(latencies) // 2], latencies[-1]
    print(f"\nslow reader dropped after {uploads} uploads ({dropped_after:.1f} s); other user's requests: "
          f"{len(latencies)}, p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms")
    assert worst < 2.0, f"another user's request took {worst:.2f} s while a reader stalled (p50 {p50:.3f} s)"
    assert p50 < 0.25, f"another user's requests: p50 {p50:.3f} s"

    # The reader finally reads: what was written before the drop, then the end of the response.
    head, body, complete, seconds = read_chunked_events(sock, timeout=20, data=opening)
    sock.close()
    assert head.startswith("HTTP/1.1 200"), head
    assert complete, f"the dropped stream's response did not end within 20 s ({len(body)} bytes read)"
    text = body.decode("utf-8")
    assert text.startswith("retry: 3000\n: connected\n\n"), text[:100]
    delivered = text.count("event: photo\n")
    total = len(slow.photos()) * 3  # at least queued, processing and completed per photo
    print(f"the slow reader got {delivered} photo events of at least {total}")
    late = [pid for pid in after_drop if pid in text]
    assert not late, f"photos uploaded after the drop reached the dropped stream: {late}"
    # Another user's stream, open the whole time, was served as usual.
    others_stream.wait(lambda: any(d["status"] == "completed" for _, d in others_stream.photo_events(others_photo)),
                       10, "the other user's own events")
    others_stream.close()


def test_sigterm_ends_streams_cleanly(start_server):
    server = start_server(**KEEPALIVE_ENV)
    alice, bob = logged_in_client(server), logged_in_client(server)
    streams = [open_stream(alice), open_stream(alice), open_stream(bob)]
    upload_ok(alice, jpeg(48, 40, "chelsea"))
    streams[0].wait(lambda: streams[0].messages(), 10, "an event before the stop")
    rc, seconds = server.terminate(timeout=30)
    assert rc == 0, f"exit code {rc} after SIGTERM with streams open"
    assert seconds < 5, f"{seconds:.1f} s to stop with 3 streams open"
    for i, s in enumerate(streams):
        assert s.ended.wait(5), f"stream {i} still open after the server exited"
        assert s.error is None, f"stream {i} ended with {s.error!r}, not the chunked body's end"
        assert s.clean_end, f"stream {i}"
        assert s.leftover == b"", f"stream {i}: half a message at the end: {s.leftover!r}"


def test_streams_outlive_handle_timeout(start_server):
    server = start_server(HANDLE_TIMEOUT_SECONDS="3", **KEEPALIVE_ENV)
    c = logged_in_client(server)
    s = open_stream(c)
    time.sleep(8)
    assert s.error is None and not s.ended.is_set(), f"the stream ended after 8 s: {s.error!r}"
    keepalives = s.comments("keep-alive")
    assert len(keepalives) >= 5, len(keepalives)
    pid = upload_ok(c, jpeg(48, 40, "coffee"))
    s.wait(lambda: any(d["status"] == "completed" for _, d in s.photo_events(pid)), 30, "events after 8 s")
    assert s.error is None and not s.ended.is_set()
    ids_rise_from_one(s.messages(), "the long stream")
    s.close()


# ---------------------------------------------------------------- Idempotency-Key

@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers()


def test_idempotent_replay(server):
    c = logged_in_client(server)
    data, k = jpeg(48, 40, "chelsea"), key()
    first = upload(c, data, key=k, lat=1.5, lng=2.5)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers, first.headers
    body = first.json()
    assert body["message"] == UPLOAD_MESSAGE and UUID_RE.match(body["id"]), body
    # requests picks a new multipart boundary for each request: the same form parts still match.
    for _ in range(2):
        again = upload(c, data, key=k, lat=1.5, lng=2.5)
        assert again.status_code == 200, again.text
        assert again.headers.get("Idempotent-Replayed") == "true", again.headers
        assert again.content == first.content
        assert again.headers["Content-Type"].startswith("application/json")
    assert [p["id"] for p in c.photos()] == [body["id"]]
    # No key: a new photo every time, as before.
    other = upload_ok(c, data, lat=1.5, lng=2.5)
    assert other != body["id"] and len(c.photos()) == 2

    shots = [jpeg(48, 40, "coffee"), jpeg(48, 40, "grace_hopper")]
    kb = key()
    b1 = bestcut(c, shots, key=kb)
    assert b1.status_code == 200, b1.text
    b2 = bestcut(c, shots, key=kb)
    assert b2.status_code == 200 and b2.headers.get("Idempotent-Replayed") == "true", (b2.status_code, b2.headers)
    assert b2.content == b1.content and isinstance(b2.json()["score"], float)
    assert len(c.photos()) == 3
    c.wait_status(body["id"])


def test_idempotent_replay_of_refusals(server):
    """400, 413 and 422 are the answer to that request: replayed as well, with nothing stored."""
    c = logged_in_client(server)
    cases = [
        (400, lambda k: upload(c, b"this is not an image at all", key=k)),
        (413, lambda k: upload(c, patch_jpeg_dimensions(jpeg(48, 40), 5000, 5000), key=k)),
        (422, lambda k: upload(c, jpeg(48, 40), key=k, outscale="9")),
        (422, lambda k: bestcut(c, [], key=k, lat="1")),
    ]
    for status, send in cases:
        k = key()
        r1 = send(k)
        assert r1.status_code == status, (status, r1.status_code, r1.text)
        assert "Idempotent-Replayed" not in r1.headers
        r2 = send(k)
        assert r2.status_code == status, (status, r2.status_code, r2.text)
        assert r2.headers.get("Idempotent-Replayed") == "true", (status, r2.headers)
        assert r2.content == r1.content, (r1.text, r2.text)
    assert c.photos() == []


def test_idempotency_key_with_another_request_is_422(server):
    c = logged_in_client(server)
    data, k = jpeg(48, 40, "chelsea"), key()
    first = upload(c, data, key=k, lat=1)
    assert first.status_code == 200, first.text
    variants = {
        "other bytes": lambda: upload(c, jpeg(48, 40, "coffee"), key=k, lat=1),
        "other field value": lambda: upload(c, data, key=k, lat=2),
        "a field more": lambda: upload(c, data, key=k, lat=1, lng=0),
        "other file name": lambda: upload(c, data, key=k, filename="y.jpg", lat=1),
        "other route": lambda: bestcut(c, [data], key=k, lat=1),
    }
    for what, send in variants.items():
        r = send()
        assert_detail(r, 422)
        assert isinstance(r.json()["detail"], str) and r.json()["detail"], (what, r.text)
        assert "Idempotent-Replayed" not in r.headers, (what, r.headers)
    # The key still answers its own request.
    again = upload(c, data, key=k, lat=1)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true", again.headers
    assert again.content == first.content
    assert len(c.photos()) == 1


BAD_KEYS = {
    "256 characters": "k" * 256,
    "non-ASCII": "caf\u00e9-key",
    "a tab": "a\tb",
}
# Not here: DEL and other control bytes, which the HTTP parser refuses before any route sees the request (the
# connection is closed without an answer).


def test_malformed_idempotency_key_is_422(server):
    c = logged_in_client(server)
    data = jpeg(48, 40, "chelsea")
    for what, k in BAD_KEYS.items():
        for route in ("/upscale", "/bestcut"):
            field = "file" if route == "/upscale" else "files"
            r = c.post(route, files={field: ("x.jpg", data, "image/jpeg")},
                       headers={"Idempotency-Key": k.encode("latin-1")})
            assert_422(r, ["header", "Idempotency-Key"])
    assert c.photos() == []
    # The longest and the widest alphabet that are fine.
    for k in ("k" * 255, "".join(chr(i) for i in range(0x21, 0x7F)), "with space", "1"):
        r = upload(c, data, key=k)
        assert r.status_code == 200, (k, r.status_code, r.text)
    assert len(c.photos()) == 4


def test_empty_idempotency_key_is_422(server):
    """SPEC: 1..255 characters; a header sent with no value is not a key (nor a missing header)."""
    c = logged_in_client(server)
    r = c.post("/upscale", files={"file": ("x.jpg", jpeg(48, 40), "image/jpeg")}, headers={"Idempotency-Key": ""})
    assert_422(r, ["header", "Idempotency-Key"])
    assert c.photos() == []


def test_idempotency_keys_are_per_user(server):
    alice, bob = logged_in_client(server), logged_in_client(server)
    data, k = jpeg(48, 40, "grace_hopper"), "shared-key-1"
    ra, rb = upload(alice, data, key=k), upload(bob, data, key=k)
    assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
    assert "Idempotent-Replayed" not in rb.headers, rb.headers
    assert ra.json()["id"] != rb.json()["id"]
    # Bob's other request under the same key is not "another request" for Alice's key.
    rb2 = upload(bob, jpeg(48, 40, "coffee"), key="shared-key-2")
    ra2 = upload(alice, data, key="shared-key-2")
    assert rb2.status_code == ra2.status_code == 200, (rb2.text, ra2.text)
    for c, r in ((alice, ra), (bob, rb)):
        again = upload(c, data, key=k)
        assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
        assert again.content == r.content
    assert len(alice.photos()) == 2 and len(bob.photos()) == 2


def multipart(parts, boundary):
    """parts: (name, filename or None, bytes). Returns the body."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: image/jpeg\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def raw_post(c, path, parts, k):
    boundary = uuid.uuid4().hex
    body = multipart(parts, boundary)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {c.token}\r\n"
            f"Idempotency-Key: {k}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def connect(c):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((c.ip, 0))
    s.settimeout(60)
    s.connect(("127.0.0.1", c.server.port))
    return s


def read_answer(sock):
    """One Content-Length framed response: (status, headers (lower-case names), body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        d = sock.recv(65536)
        assert d, f"connection closed before an answer: {data[:200]!r}"
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        d = sock.recv(65536)
        assert d, "connection closed mid-body"
        body += d
    return int(lines[0].split()[1]), headers, body[:length]


def test_replay_after_the_connection_dropped(server):
    """The client sends the upload and goes away before the answer (a mobile connection lost): the retry with
    the same key gets the answer it missed, and there is one photo."""
    c = logged_in_client(server)
    data, k = jpeg(160, 120, "coffee"), key()
    sock = connect(c)
    # Form fields first, then the file: the order requests sends them in below (the order is part of the request).
    sock.sendall(raw_post(c, "/upscale", [("lat", None, b"3.25"), ("file", "pet.jpg", data)], k))
    sock.close()
    # The client retries later (once it has noticed the loss); sent at once, the retry could reach the server
    # first and be the one handled, the other answering 409. The first request's photo appears when it commits.
    wait_until(lambda: c.photos(), 20, message="the photo of the request whose connection was closed")
    conflicts = 0
    deadline = time.monotonic() + 20
    while True:
        r = c.post("/upscale", files={"file": ("pet.jpg", data, "image/jpeg")}, data={"lat": "3.25"},
                   headers={"Idempotency-Key": k})
        if r.status_code != 409:
            break
        conflicts += 1  # the first is still being handled: as documented, try again shortly
        assert r.headers.get("Retry-After", "").isdigit(), r.headers
        assert time.monotonic() < deadline, "still 409 after 20 s"
        time.sleep(0.2)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers.get("Idempotent-Replayed") == "true", \
        f"the retry was handled anew: the first request (connection closed after sending) was lost? {r.headers}"
    photos = c.photos()
    assert [p["id"] for p in photos] == [r.json()["id"]], photos
    assert photos[0]["latitude"] == 3.25


def test_409_while_the_first_is_in_flight(server):
    """Two identical requests with one key at once: one is handled, the other answers 409 + Retry-After (it may
    not wait nor make a second photo); afterwards the key replays the first answer. A best cut of several large
    JPEGs takes long enough to decode that the second one arrives while the first is still being handled."""
    c = logged_in_client(server)
    big = encode_jpeg(photo_image(3000, 2250, "chelsea"), quality=92)
    shots = [("files", f"shot{i}.jpg", big) for i in range(8)]
    hit = None
    tries = []
    for attempt in range(6):
        k = key()
        request = raw_post(c, "/bestcut", shots, k)
        s1, s2 = connect(c), connect(c)
        t0 = time.monotonic()
        s1.sendall(request)
        s2.sendall(request)
        answers = sorted([read_answer(s1), read_answer(s2)], key=lambda a: a[0])
        took = time.monotonic() - t0
        s1.close()
        s2.close()
        tries.append((answers[0][0], answers[1][0], round(took, 2)))
        assert answers[0][0] == 200, answers[0]
        if answers[1][0] == 409:
            hit = (k, answers)
            break
        # Both 200: the second came after the first was done, so it must be its replay.
        assert answers[1][0] == 200 and answers[1][1].get("idempotent-replayed") == "true", answers[1][1]
        assert answers[1][2] == answers[0][2]
    if hit is None:
        pytest.skip(f"the second request never arrived while the first was in flight: {tries}")
    k, ((_, h200, b200), (_, h409, b409)) = hit
    assert "idempotent-replayed" not in h200, h200
    assert h409.get("retry-after", "").isdigit() and int(h409["retry-after"]) >= 1, h409
    assert h409["content-type"].startswith("application/json"), h409
    assert isinstance(json.loads(b409)["detail"], str)
    # Retried afterwards: the first answer.
    sock = connect(c)
    sock.sendall(raw_post(c, "/bestcut", shots, k))
    status, headers, body = read_answer(sock)
    sock.close()
    assert status == 200 and headers.get("idempotent-replayed") == "true" and body == b200, (status, headers)
    ids = [p["id"] for p in c.photos()]
    assert len(ids) == len(tries) and json.loads(b200)["id"] in ids, (ids, tries)
    print(f"\n409 hit on try {len(tries)}: {tries}")


def test_idempotency_key_survives_a_restart(start_server):
    server = start_server()
    c = logged_in_client(server)
    data, k = jpeg(48, 40, "chelsea"), key()
    first = upload(c, data, key=k)
    assert first.status_code == 200, first.text
    refused_key = key()
    refused = upload(c, data, key=refused_key, format="gif")
    assert refused.status_code == 422
    rc, _ = server.terminate()
    assert rc == 0
    server.restart()
    again = upload(c, data, key=k)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true", \
        (again.status_code, again.headers, again.text)
    assert again.content == first.content
    r = upload(c, data, key=refused_key, format="gif")
    assert r.status_code == 422 and r.headers.get("Idempotent-Replayed") == "true", (r.status_code, r.headers)
    assert r.content == refused.content
    assert [p["id"] for p in c.photos()] == [first.json()["id"]]


def test_rate_limited_upload_does_not_use_up_its_key(start_server):
    """A 429 is not the request's answer: the key is free, and the same request later is handled anew."""
    server = start_server(RATE_LIMIT_UPSCALE="2/second")
    c = logged_in_client(server)
    data = jpeg(48, 40, "coffee")
    for _ in range(5):
        k = key()
        statuses = [upload(c, data).status_code for _ in range(2)]
        r = upload(c, data, key=k)
        if r.status_code == 429:
            break
    assert r.status_code == 429, (statuses, r.status_code, r.text)
    time.sleep(int(r.headers.get("Retry-After", "1")) + 0.2)
    ok = upload(c, data, key=k)
    assert ok.status_code == 200, (ok.status_code, ok.text)
    assert "Idempotent-Replayed" not in ok.headers, ok.headers
    again = upload(c, data, key=k)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true", again.headers
    assert again.content == ok.content
    ids = [p["id"] for p in c.photos()]
    assert ok.json()["id"] in ids and ids.count(ok.json()["id"]) == 1


def key_status(server, user_id, k):
    """The key's record straight from the database: None (no record), 'in flight' or its stored status."""
    sql = f"SELECT coalesce(status, -1) FROM idempotency_keys WHERE user_id = '{user_id}' AND idem_key = '{k}'"
    if server.database_url is None:
        db = sqlite3.connect(f"file:{server.path('petcam.db')}?mode=ro", uri=True, timeout=30)
        try:
            rows = [r[0] for r in db.execute(sql)]
        finally:
            db.close()
    else:
        out = subprocess.run([os.path.join(PG_BIN, "psql"), server.database_url, "-At", "-c", sql], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        rows = [int(v) for v in out.split()]
    if not rows:
        return None
    return "in flight" if rows[0] == -1 else rows[0]


def test_key_of_a_request_cut_by_a_crash_is_free_after_the_restart(start_server):
    """kill -9 while the first request with a key is being handled (its record says so, nothing is committed):
    after the restart nobody handles it any more, so a retry is not told 409 for minutes; it is handled, once."""
    server = start_server()
    c = logged_in_client(server)
    big = encode_jpeg(photo_image(3000, 2250, "coffee"), quality=92)
    shots = [("files", f"shot{i}.jpg", big) for i in range(8)]
    caught = None
    for attempt in range(5):
        k = key()
        sock = connect(c)
        sock.sendall(raw_post(c, "/bestcut", shots, k))
        deadline = time.monotonic() + 10
        state = None
        while time.monotonic() < deadline:
            state = key_status(server, c.user_id, k)
            if state is not None:
                break
            time.sleep(0.005)
        if state == "in flight":
            server.kill()
            sock.close()
            caught = k
            break
        sock.close()  # handled before it was seen in flight: another try
    if caught is None:
        pytest.skip("the key was never seen in flight before its request finished")
    server.restart()
    assert c.photos() == [], "a photo from the request cut off by the kill"
    t0 = time.monotonic()
    while True:
        r = bestcut(c, [big] * 8, key=caught)
        if r.status_code != 409 or time.monotonic() - t0 > 10:
            break
        time.sleep(1)
    assert r.status_code == 200, (
        f"{r.status_code} {r.text} {time.monotonic() - t0:.0f} s after the restart: the key of a request that died "
        f"with the process stays 'in flight'")
    assert "Idempotent-Replayed" not in r.headers, r.headers
    assert [p["id"] for p in c.photos()] == [r.json()["id"]]
    again = bestcut(c, [big] * 8, key=caught)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true", again.headers
