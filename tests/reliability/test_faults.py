"""Fault injection: PostgreSQL stopped and restarted under load, a full disk under the photo store, SIGTERM
under load.  Each test prints one `FAULT ...` summary line (run pytest with -s to see them).

  test_postgres_outage_under_load   PostgreSQL run only (it starts a PostgreSQL of its own that it can stop)
  test_disk_full                    needs root (mounts a 2 MiB tmpfs as STORAGE_DIR); skipped otherwise
  test_sigterm_under_load           both backends
"""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests

from conftest import (FULL, PG_BIN, PHOTO_KEYS, REPO_ROOT, TEST_DATABASE, UUID_RE, Server,
                      assert_detail, assert_upscaled_of, jpeg, logged_in_client, wait_until)

PG_SCRIPT = os.path.join(REPO_ROOT, "scripts", "test-postgres.sh")
UPLOAD_OK = "Upload successful, processing in background"
NAMES = ("chelsea", "coffee", "grace_hopper", "astronaut")
FILE_RE = re.compile(r"^(?:originals|upscaled|previews)/([0-9a-f-]{36})\.(?:jpg|thumbnail\.jpg|preview\.jpg)$")


# ---------------------------------------------------------------- helpers

def padded_jpeg(base, size):
    """`base` (a JPEG) grown to about `size` bytes with COM segments right after SOI: a valid JPEG that is
    big on the wire and on disk but cheap to upscale."""
    assert base[:2] == b"\xff\xd8"
    out = [base[:2]]
    left = size - len(base)
    fill = 0
    while left >= 5:
        n = min(65533, left - 4)
        out.append(b"\xff\xfe" + (n + 2).to_bytes(2, "big") + bytes([0x50 + fill % 16]) * n)
        left -= n + 4
        fill += 1
    out.append(base[2:])
    return b"".join(out)


def all_files(root):
    """Every file under root (hidden and temporary ones included), relative to root."""
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def expected_files(completed_ids, pending_ids=()):
    files = set()
    for i in completed_ids:
        files |= {f"originals/{i}.jpg", f"previews/{i}.thumbnail.jpg", f"upscaled/{i}.jpg", f"previews/{i}.preview.jpg"}
    for i in pending_ids:
        files |= {f"originals/{i}.jpg", f"previews/{i}.thumbnail.jpg"}
    return files


def log_lines(server, offset, pattern):
    return [line for line in server.log_text(offset).splitlines() if re.search(pattern, line)]


class Recorder:
    """Every request the load threads make: kind, start and end (monotonic), status or exception."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def add(self, rec):
        with self.lock:
            self.records.append(rec)

    def snapshot(self):
        with self.lock:
            return list(self.records)


def timed(client, method, path, *, timeout, **kw):
    """One request from `client`'s own address; never raises: returns a record."""
    rec = {"kind": f"{method} {path.split('?')[0]}", "client": client, "t0": time.monotonic(),
           "status": None, "error": None, "body_ok": False, "id": None}
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    try:
        r = client.session.request(method, client.server.url + path, headers=headers, timeout=timeout, **kw)
        rec["response"] = r
        rec["status"] = r.status_code
    except requests.Timeout as e:
        rec["error"] = f"timeout: {e!r}"[:300]
    except requests.ConnectionError as e:
        rec["error"] = f"connection: {e!r}"[:300]
    except requests.RequestException as e:
        rec["error"] = f"other: {e!r}"[:300]
    rec["t1"] = time.monotonic()
    rec["latency"] = rec["t1"] - rec["t0"]
    return rec


def check_body(rec, expect_original=None):
    """Sets rec['body_ok'] (and rec['id'] for an upload): a 200 with the whole, valid body, or an error
    with FastAPI's {"detail": ...} (and Retry-After on a 503)."""
    r = rec.get("response")
    if r is None:
        return rec
    try:
        if r.status_code == 200:
            if rec["kind"] == "POST /upscale":
                body = r.json()
                rec["body_ok"] = body.get("message") == UPLOAD_OK and bool(UUID_RE.match(body.get("id", "")))
                rec["id"] = body.get("id")
            elif rec["kind"] == "GET /photos":
                body = r.json()
                rec["body_ok"] = isinstance(body, list) and all(set(e) == PHOTO_KEYS for e in body)
            elif rec["kind"].startswith("GET /photos/"):
                rec["body_ok"] = (r.headers.get("Content-Type") == "image/jpeg" and
                                  (expect_original is None or r.content == expect_original))
            elif rec["kind"] == "GET /openapi.json":
                rec["body_ok"] = "paths" in r.json()
            else:
                rec["body_ok"] = True
        else:
            body = r.json()
            rec["body_ok"] = (r.headers.get("Content-Type", "").startswith("application/json") and
                              isinstance(body, dict) and isinstance(body.get("detail"), str) and
                              (r.status_code != 503 or r.headers.get("Retry-After", "").isdigit()))
            rec["detail"] = body.get("detail") if isinstance(body, dict) else None
    except (ValueError, AttributeError):
        rec["body_ok"] = False
    return rec


def describe(rec, t_ref=0.0):
    what = rec["status"] if rec["status"] is not None else rec["error"]
    return (f"{rec['kind']} from {rec['client'].ip} at {rec['t0'] - t_ref:+.2f} s, "
            f"{rec['latency']:.2f} s: {what} {rec.get('detail') or ''}".rstrip())


def load_thread(client, ops, stop, recorder, pause, timeout, stop_on_connection_error=None):
    """Runs `ops` (functions client -> record) round-robin until `stop` is set."""
    def run():
        i = 0
        while not stop.is_set():
            rec = ops[i % len(ops)](client, timeout)
            recorder.add(rec)
            i += 1
            if rec["error"] and stop_on_connection_error is not None and stop_on_connection_error.is_set():
                return  # the server is going away: it refused us, we are done
            stop.wait(pause)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def op_upload(data_for):
    def op(client, timeout):
        data = data_for(client)
        rec = timed(client, "POST", "/upscale", timeout=timeout,
                    files={"file": ("load.jpg", data, "image/jpeg")})
        rec["data"] = data
        return check_body(rec)
    return op


def op_list(client, timeout):
    return check_body(timed(client, "GET", "/photos?limit=1000", timeout=timeout))


def op_download_seed(client, timeout):
    rec = timed(client, "GET", f"/photos/{client.seed_id}?type=original", timeout=timeout)
    rec["kind"] = "GET /photos/{id}"
    return check_body(rec, expect_original=client.seed_data)


def op_openapi(client, timeout):
    return check_body(timed(client, "GET", "/openapi.json", timeout=timeout))


def seeded_client(server, name):
    c = logged_in_client(server)
    c.seed_data = jpeg(64, 48, name)
    r = c.upload(c.seed_data)
    assert r.status_code == 200, (r.status_code, r.text)
    c.seed_id = r.json()["id"]
    c.accepted = {c.seed_id: c.seed_data}
    return c


_upload_counter = iter(range(10**9))


def small_photo(client):
    """A distinct small photo per upload (so every stored file has its own bytes)."""
    n = next(_upload_counter)
    return jpeg(64 + n % 16, 48, NAMES[n % len(NAMES)])


# ---------------------------------------------------------------- 1. PostgreSQL stopped and restarted

class OwnPostgres:
    """A PostgreSQL of this test's own (scripts/test-postgres.sh), which it stops and starts again on the
    same port and data directory with pg_ctl.  Restarted with synchronous_commit=on (the script's
    throwaway setting `off` may lose the last commits in an immediate shutdown, which would be a fault of
    the test's database, not of petcam)."""

    def __init__(self, workdir):
        self.dir = os.path.join(str(workdir), "pg")
        out = subprocess.run([PG_SCRIPT, "start", self.dir], check=True, capture_output=True, text=True,
                             timeout=120)
        url = out.stdout.strip().splitlines()[-1].strip()
        m = re.match(r"^postgresql://([^@/]+)@([^:/]+):(\d+)/(\w+)$", url)
        assert m, url
        self.user, self.host, self.port, _ = m.groups()
        with open(os.path.join(self.dir, "location")) as f:
            self.base = f.read().strip()
        self.data = os.path.join(self.base, "data")
        self.stop("fast")
        self.start()

    def _run(self, *cmd, timeout=120):
        cmd = list(cmd)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def log_tail(self):
        try:
            with open(os.path.join(self.base, "server.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self, mode):
        r = self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")
        assert r.returncode == 0, f"pg_ctl stop -m {mode}: {r.stdout}{r.stderr}\n{self.log_tail()}"

    def start(self):
        opts = (f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=on -c full_page_writes=off")
        r = self._run(os.path.join(PG_BIN, "pg_ctl"), "-w", "-t", "60", "-D", self.data,
                      "-l", os.path.join(self.base, "server.log"), "-o", opts, "start")
        assert r.returncode == 0, \
            f"pg_ctl start on port {self.port}: {r.stdout}{r.stderr}\n{self.log_tail()}"

    def createdb(self, name):
        subprocess.run([os.path.join(PG_BIN, "createdb"), "-h", self.host, "-p", self.port, "-U", self.user,
                        name], check=True, capture_output=True, timeout=60)
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"

    def destroy(self):
        subprocess.run([PG_SCRIPT, "stop", self.dir], capture_output=True, timeout=120)


@pytest.fixture
def own_postgres(tmp_path):
    pg = OwnPostgres(tmp_path)
    try:
        yield pg
    finally:
        pg.destroy()


DB_TIMEOUT_MS = 1000
# "Fails fast": DB_TIMEOUT_MS + 2 s, doubled for a loaded 2-core machine.
FAIL_FAST_BOUND_S = 2 * (DB_TIMEOUT_MS / 1000 + 2)
HEALTH_503_BOUND_S = 4.0     # ~2 s, doubled
HEALTH_RECOVER_BOUND_S = 15.0
SLOW = (960, 720)            # a job that runs for a few seconds (x4fast, 2 cores)


@pytest.mark.skipif(TEST_DATABASE != "postgres",
                    reason="runs once, in the PostgreSQL run (PETCAM_TEST_DATABASE=postgres): it stops and "
                           "restarts a PostgreSQL of its own")
def test_postgres_outage_under_load(own_postgres, start_server, tmp_path):
    pg = own_postgres
    url = pg.createdb("faults")
    workdir = tmp_path / "server"
    workdir.mkdir()
    # A job done during the outage keeps trying to record its result for up to a lease: the lease outlasts
    # the outage (4 s, 15 s in the full run), and is short enough that anything else left claimed is taken
    # back soon after the database returns (the default 60 s would only make the test wait).
    outage_s = 15 if FULL else 4
    server = Server(workdir, {"DB_TIMEOUT_MS": str(DB_TIMEOUT_MS), "JOB_LEASE_SECONDS": str(outage_s + 10),
                              "JOB_RETRY_BASE_SECONDS": "1"}, url)
    start_server.started.append(server)  # the fixture stops it with SIGTERM and requires exit code 0
    server.start()

    main = seeded_client(server, "coffee")
    clients = [seeded_client(server, NAMES[i % len(NAMES)]) for i in range(3)]
    for c in [main] + clients:
        c.wait_status(c.seed_id)

    recorder = Recorder()
    stop = threading.Event()
    ops = [op_upload(small_photo), op_list, op_download_seed, op_openapi]
    threads = [load_thread(c, ops, stop, recorder, pause=0.05, timeout=30) for c in clients]
    rounds = []
    problems = []
    try:
        time.sleep(1.0)
        # Round 1: a long job spans the outage.  Round 2: a short job finishes while the database is away,
        # so its result cannot be recorded; it must be taken back and completed once the database returns.
        for mode, size, name in (("fast", SLOW, "grace_hopper"), ("immediate", (480, 360), "astronaut")):
            rnd = {"mode": mode}
            slow_data = jpeg(*size, name)
            r = main.upload(slow_data)
            assert r.status_code == 200, (r.status_code, r.text)
            slow_id = r.json()["id"]
            main.accepted[slow_id] = slow_data
            rnd["slow_id"] = slow_id
            main.wait_status(slow_id, want="processing", interval=0.05)
            if mode == "fast":
                time.sleep(0.5)

            rnd["t_stop"] = time.monotonic()
            pg.stop(mode)
            rnd["t_stopped"] = time.monotonic()
            # /health says 503 soon.
            health = []
            deadline = time.monotonic() + 15
            while True:
                h = check_body(timed(main, "GET", "/health", timeout=30))
                health.append(h)
                if h["status"] == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            rnd["health_503_s"] = h["t1"] - rnd["t_stopped"]
            assert h["status"] == 503 and h["body_ok"], f"/health during the outage: {describe(h)}"
            if rnd["health_503_s"] > HEALTH_503_BOUND_S:
                problems.append(f"[{mode}] /health said 503 only {rnd['health_503_s']:.1f} s after PostgreSQL "
                                f"stopped (bound {HEALTH_503_BOUND_S:.0f} s)")
            # The load goes on for a while with the database away (round 2: at least until its job is done).
            # (A job done while the database is away keeps retrying to record its result: then it must end
            # completed on its first attempt once the database is back.)
            job_done = rf"photo {slow_id}: (failed|completed|done, but the database is unavailable)"
            while (time.monotonic() < rnd["t_stopped"] + outage_s or
                   (mode == "immediate" and not log_lines(server, 0, job_done) and
                    time.monotonic() < rnd["t_stopped"] + 60)):
                h = check_body(timed(main, "GET", "/health", timeout=30))
                health.append(h)
                if h["status"] != 503 or not h["body_ok"] or h["latency"] > FAIL_FAST_BOUND_S:
                    problems.append(f"[{mode}] /health during the outage: {describe(h, rnd['t_stopped'])}")
                time.sleep(0.2)

            if mode == "immediate":
                assert log_lines(server, 0, job_done), "the short job did not finish within 60 s of the outage"
            rnd["t_start"] = time.monotonic()
            pg.start()
            rnd["t_started"] = time.monotonic()
            deadline = rnd["t_started"] + HEALTH_RECOVER_BOUND_S
            while True:
                h = check_body(timed(main, "GET", "/health", timeout=30))
                if h["status"] == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert h["status"] == 200, \
                f"[{mode}] /health not 200 within {HEALTH_RECOVER_BOUND_S} s of PostgreSQL's return: {describe(h)}"
            rnd["t_healthy"] = h["t1"]
            rnd["recover_s"] = h["t1"] - rnd["t_started"]
            time.sleep(3.0 if not FULL else 8.0)  # load after the recovery
            rnd["t_end"] = time.monotonic()
            rounds.append(rnd)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert server.running(), f"petcam exited: {server.proc.returncode}"
    records = recorder.snapshot()

    # -- every answer, by phase
    for rec in records:
        if rec["status"] is None:
            problems.append(f"no answer: {describe(rec)}")
        elif rec["status"] not in (200, 503) or not rec["body_ok"]:
            problems.append(f"unexpected answer: {describe(rec)}")
    summaries = []
    for rnd in rounds:
        mode = rnd["mode"]
        # Requests that overlapped the outage: fail fast, with a 503 or, for what needs no database, a 200.
        during = [r for r in records if r["t1"] >= rnd["t_stop"] and r["t0"] <= rnd["t_started"]]
        down = [r for r in records if r["t0"] >= rnd["t_stopped"] and r["t1"] <= rnd["t_start"]]
        assert down, f"[{mode}] no request ran during the outage"
        for rec in during:
            if rec["status"] is not None and rec["latency"] > FAIL_FAST_BOUND_S:
                problems.append(f"[{mode}] slow answer during the outage (bound {FAIL_FAST_BOUND_S:.0f} s): "
                                f"{describe(rec, rnd['t_stopped'])}")
        for rec in down:
            want = 200 if rec["kind"] == "GET /openapi.json" else 503
            if rec["status"] != want:
                problems.append(f"[{mode}] during the outage, expected {want}: {describe(rec, rnd['t_stopped'])}")
        # After /health says 200 again, everything works.
        after = [r for r in records if r["t0"] >= rnd["t_healthy"] and r["t0"] <= rnd["t_end"]]
        assert after, f"[{mode}] no request after the recovery"
        for rec in after:
            if rec["status"] != 200:
                problems.append(f"[{mode}] after /health said 200 again: {describe(rec, rnd['t_healthy'])}")
        by_status = collections.Counter(str(r["status"]) for r in during)
        summaries.append(
            f"[{mode}] {len(during)} requests overlapping the outage "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(by_status.items()))}), "
            f"max latency {max(r['latency'] for r in during):.2f} s (bound {FAIL_FAST_BOUND_S:.0f} s), "
            f"/health 503 after {rnd['health_503_s']:.2f} s, 200 again {rnd['recover_s']:.2f} s after "
            f"PostgreSQL was back; {len(after)} requests after: all 200")

    # -- nothing accepted is lost: every upload answered 200 ends completed, and nothing else exists
    for rec in records:
        if rec["kind"] == "POST /upscale" and rec["status"] == 200 and rec["body_ok"]:
            rec["client"].accepted[rec["id"]] = rec["data"]
    t0 = time.monotonic()
    total = 0
    for c in [main] + clients:
        for photo_id in c.accepted:
            c.wait_status(photo_id, timeout=180)
            total += 1
        ids = {p["id"] for p in c.photos()}
        if ids != set(c.accepted):
            problems.append(f"photos of {c.username}: {len(ids - set(c.accepted))} not answered 200 "
                            f"(a 503 upload left a row?), {len(set(c.accepted) - ids)} accepted and missing")
    jobs_s = time.monotonic() - t0
    for rnd in rounds:
        r = main.get(f"/photos/{rnd['slow_id']}")
        assert r.status_code == 200, (r.status_code, r.text)
        assert_upscaled_of(r.content, main.accepted[rnd["slow_id"]])
    for c in clients:
        r = c.get(f"/photos/{c.seed_id}")
        assert r.status_code == 200
        assert_upscaled_of(r.content, c.seed_data)
    # No orphans: exactly the files of the accepted photos (a 503 upload removed its file).
    all_ids = set().union(*(set(c.accepted) for c in [main] + clients))
    files = set(all_files(os.path.join(server.data_dir, "storage")))
    extra = files - expected_files(all_ids)
    missing = expected_files(all_ids) - files
    if extra or missing:
        problems.append(f"storage: {len(extra)} files no accepted photo owns {sorted(extra)[:5]}, "
                        f"{len(missing)} missing {sorted(missing)[:5]}")
    for rnd in rounds:
        lines = log_lines(server, 0, rf"photo {rnd['slow_id']}:")
        rnd["slow_log"] = "; ".join(re.sub(r"^.*?photo [0-9a-f-]+: ", "", line)[:110] for line in lines)
        # Work finished while the database was away is recorded once it is back: no second attempt.
        if any("done, but the database is unavailable" in line for line in lines):
            started = [line for line in lines if ": started by" in line]
            if len(started) != 1:
                problems.append(f"[{rnd['mode']}] the job done during the outage ran again: {rnd['slow_log']}")
    failed_uploads = sum(1 for r in records if r["kind"] == "POST /upscale" and r["status"] == 503)

    rc, secs = server.terminate()
    assert rc == 0, f"exit code {rc} after SIGTERM"
    for s in summaries:
        print(f"\nFAULT postgres-outage {s}")
    print(f"FAULT postgres-outage: {total}/{total} accepted uploads completed ({len(rounds)} jobs were "
          f"mid-flight when PostgreSQL stopped), done {jobs_s:.1f} s after the load; {failed_uploads} uploads "
          f"answered 503 left no file and no row; {len(records)} requests in all; SIGTERM exit {rc} in "
          f"{secs:.1f} s")
    for rnd in rounds:
        print(f"FAULT postgres-outage [{rnd['mode']}] mid-flight job: {rnd['slow_log']}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])


# ---------------------------------------------------------------- 2. disk full under the photo store

@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "storage-tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs for STORAGE_DIR (needs root or CAP_SYS_ADMIN): "
                    f"{r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_disk_full(small_tmpfs, start_server):
    mnt = small_tmpfs
    # The database stays on the normal disk (DATA_DIR); only the photos go to the 2 MiB tmpfs.
    server = start_server(STORAGE_DIR=mnt, JOB_RETRY_BASE_SECONDS="4")
    try:
        c = logged_in_client(server)
        accepted = {}
        failed = None
        offset = server.log_size()
        for i in range(30):
            data = padded_jpeg(jpeg(64, 48, NAMES[i % len(NAMES)]), 300 * 1024 + i)
            r = c.upload(data)
            if r.status_code != 200:
                failed = r
                break
            photo_id = r.json()["id"]
            c.wait_status(photo_id)
            accepted[photo_id] = data
        assert failed is not None, "30 uploads of 300 KB fitted into a 2 MiB tmpfs"
        free_at_failure = free_bytes(mnt)
        # The upload that does not fit: 500 File save failed, nothing half-written, no row.
        assert_detail(failed, 500, "File save failed")
        assert log_lines(server, offset, r"saving storage/originals/.*No space left on device"), \
            "the log does not say why the save failed"
        files = all_files(mnt)
        assert set(files) == expected_files(accepted), f"stray files after a failed save: {files}"
        assert {p["id"] for p in c.photos()} == set(accepted), "a row for the upload that failed"
        # ... and the server keeps serving.
        r = c.get("/health")
        assert r.status_code == 200, (r.status_code, r.text)
        for photo_id, data in accepted.items():
            assert c.get(f"/photos/{photo_id}?type=original").content == data
            r = c.get(f"/photos/{photo_id}")
            assert r.status_code == 200
            assert_upscaled_of(r.content, data)

        # The worker writing its output into a full disk: an original that fits, an output that does not.
        victim = next(iter(accepted))
        assert c.delete(f"/photos/{victim}").status_code == 200
        del accepted[victim]
        free = free_bytes(mnt)
        base = jpeg(240, 180, "coffee")  # its 960x720 output is far over 24 KB
        data = padded_jpeg(base, free - 24 * 1024 - 4096)
        offset = server.log_size()
        r = c.upload(data)
        assert r.status_code == 200, (r.status_code, r.text)
        pid = r.json()["id"]
        line = wait_until(lambda: log_lines(server, offset, rf"photo {pid}: attempt 1/\d+ failed"), 60,
                          message="the job's first attempt failing on the full disk")[0]
        assert "No space left on device" in line, line
        assert server.running(), "petcam exited"
        assert c.get("/health").status_code == 200
        files = all_files(mnt)
        assert set(files) == expected_files(accepted, [pid]), f"partial output left behind: {files}"
        entry = c.photo_entry(pid)
        assert entry["status"] in ("queued", "processing"), entry  # back in the queue, for a retry
        # Free space (delete two photos): the retry completes, new uploads work.
        for victim in list(accepted)[:2]:
            assert c.delete(f"/photos/{victim}").status_code == 200
            del accepted[victim]
        t0 = time.monotonic()
        c.wait_status(pid, timeout=60)
        retry_s = time.monotonic() - t0
        r = c.get(f"/photos/{pid}")
        assert r.status_code == 200
        assert_upscaled_of(r.content, data)
        accepted[pid] = data
        attempts = log_lines(server, offset, rf"photo {pid}: (started|attempt|completed|failed)")
        new = padded_jpeg(jpeg(64, 48, "astronaut"), 200 * 1024)
        r = c.upload(new)
        assert r.status_code == 200, (r.status_code, r.text)
        c.wait_status(r.json()["id"])
        accepted[r.json()["id"]] = new
        assert set(all_files(mnt)) == expected_files(accepted)
        assert {p["id"] for p in c.photos()} == set(accepted)

        rc, secs = server.terminate()
        assert rc == 0, f"exit code {rc} after SIGTERM"
        started = sum(1 for a in attempts if ": started by" in a)
        print(f"\nFAULT disk-full [{TEST_DATABASE}]: {len(accepted) + 2} uploads of 300 KB fitted in the 2 MiB "
              f"STORAGE_DIR, the next one -> 500 'File save failed' ({free_at_failure // 1024} KB free), no "
              f"partial file, no row, server kept serving; upscale output on the full disk: attempt 1 failed "
              f"(ENOSPC), no partial file, completed {retry_s:.1f} s after freeing space ({started} attempts); "
              f"new upload OK; SIGTERM exit {rc}")
    finally:
        if server.running():
            server.terminate()  # before the unmount; the fixture checks the exit code


# ---------------------------------------------------------------- 3. SIGTERM under load

def raw_upload_start(server, token, data, ip):
    """Sends the headers and the first half of a multipart upload; returns (socket, rest of the body)."""
    b = uuid.uuid4().hex
    body = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    head = (f"POST /upscale HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={b}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=(ip, 0))
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def raw_upload_finish(sock, rest):
    """Sends the rest and reads the answer: (status, body) or (None, what went wrong)."""
    try:
        sock.sendall(rest)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None, f"connection closed without an answer ({len(buf)} bytes)"
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None, f"connection closed in the body ({len(body)}/{length} bytes)"
            body += chunk
        return status, body
    except OSError as e:
        return None, repr(e)
    finally:
        sock.close()


def test_sigterm_under_load(start_server):
    server = start_server()
    main = seeded_client(server, "chelsea")
    clients = [seeded_client(server, NAMES[(i + 1) % len(NAMES)]) for i in range(3)]
    raw_client = logged_in_client(server)
    big_base = jpeg(160, 120, "coffee")

    def big_photo(client):  # 3 MB on the wire, cheap to upscale: the upload itself takes a while
        n = next(_upload_counter)
        return padded_jpeg(jpeg(160 + n % 16, 120, NAMES[n % len(NAMES)]), 3 * 1024 * 1024)

    slow_data = jpeg(*SLOW, "grace_hopper")
    r = main.upload(slow_data)
    assert r.status_code == 200, (r.status_code, r.text)
    slow_id = r.json()["id"]
    main.accepted[slow_id] = slow_data
    main.wait_status(slow_id, want="processing", interval=0.05)

    recorder = Recorder()
    stop = threading.Event()
    signalled = threading.Event()
    ops = [op_upload(big_photo), op_list, op_download_seed, op_upload(small_photo)]
    threads = [load_thread(c, ops, stop, recorder, pause=0.02, timeout=60, stop_on_connection_error=signalled)
               for c in clients]
    # Not longer in the full run: the slow job (~5 s) must still be running when SIGTERM comes.
    time.sleep(1.5)
    assert not re.search(rf"photo {slow_id}: completed", server.log_text()), \
        "the slow job finished before SIGTERM: the test needs a job running at the signal"
    # An upload whose body is still arriving when SIGTERM comes: in flight, it must be answered.
    raw_data = padded_jpeg(big_base, 1024 * 1024)
    sock, rest = raw_upload_start(server, raw_client.token, raw_data, raw_client.ip)
    time.sleep(0.2)
    offset = server.log_size()
    t_sig = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    signalled.set()
    time.sleep(0.5)
    raw_status, raw_body = raw_upload_finish(sock, rest)
    try:
        rc = server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError("petcam did not exit within 30 s of SIGTERM")
    exit_s = time.monotonic() - t_sig
    stop.set()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a client thread hangs"
    assert rc == 0, f"exit code {rc} after SIGTERM"
    records = recorder.snapshot()

    problems = []
    grace = 1.0  # requests started this long before SIGTERM were in flight at the server
    before, racing = [], []
    for rec in records:
        (before if rec["t0"] < t_sig - grace else racing).append(rec)
        if rec["status"] is not None:
            if rec["status"] != 200 or not rec["body_ok"]:
                problems.append(f"answered, but not a complete 200: {describe(rec, t_sig)}")
        elif rec["t0"] < t_sig - grace:
            problems.append(f"in flight at SIGTERM, no answer: {describe(rec, t_sig)}")
        elif not rec["error"].startswith("connection"):
            problems.append(f"racing SIGTERM, neither an answer nor refused/reset: {describe(rec, t_sig)}")
    assert records and any(r["t1"] > t_sig for r in records), "no request overlapped SIGTERM"

    shutdown_log = server.log_text(offset)
    assert "received SIGTERM" in shutdown_log, shutdown_log[-3000:]
    slow_lines = [line for line in shutdown_log.splitlines()
                  if re.search(rf"photo {slow_id}: (returned to the queue|completed)", line)]
    assert slow_lines, f"the running job neither completed nor went back to the queue:\n{shutdown_log[-3000:]}"
    slow_fate = "returned to the queue" if "returned to the queue" in slow_lines[0] else "completed"

    raw_ok = raw_status == 200
    if raw_ok:
        body = json.loads(raw_body)
        raw_client.accepted = {body["id"]: raw_data}
    else:
        raw_client.accepted = {}

    # Files as the stopped server left them (before a restart's sweep could tidy anything).
    files_at_exit = set(all_files(os.path.join(server.data_dir, "storage")))

    # Restart: every upload answered 200 completes; nothing else exists.
    for rec in records:
        if rec["kind"] == "POST /upscale" and rec["status"] == 200 and rec["body_ok"]:
            rec["client"].accepted[rec["id"]] = rec["data"]
    lost_answers = collections.Counter(r["client"].ip for r in records
                                       if r["kind"] == "POST /upscale" and r["status"] is None)
    restart_offset = server.log_size()
    server.restart()
    swept = log_lines(server, restart_offset, r"storage: removed \d+ file")
    if swept:
        problems.append(f"orphan files after the SIGTERM exit, swept at the restart: {swept}")
    t0 = time.monotonic()
    everyone = [main, raw_client] + clients
    total = 0
    all_ids = set()
    for c in everyone:
        for photo_id in c.accepted:
            c.wait_status(photo_id, timeout=180)
            total += 1
        ids = {p["id"] for p in c.photos()}
        extra = ids - set(c.accepted)
        if set(c.accepted) - ids:
            problems.append(f"{c.username}: accepted uploads missing after the restart: {set(c.accepted) - ids}")
        if extra:
            problems.append(f"{c.username}: {len(extra)} photo(s) stored whose upload got no answer "
                            f"({lost_answers[c.ip]} uploads of this client had no answer)")
            for photo_id in extra:
                c.wait_status(photo_id, timeout=180)
        all_ids |= ids
    jobs_s = time.monotonic() - t0
    r = main.get(f"/photos/{slow_id}")
    assert r.status_code == 200
    assert_upscaled_of(r.content, slow_data)
    orphans = {f for f in files_at_exit
               if not (FILE_RE.match(f) and FILE_RE.match(f).group(1) in all_ids)}
    if orphans:
        problems.append(f"files left at exit that no photo owns: {sorted(orphans)[:10]}")
    files = set(all_files(os.path.join(server.data_dir, "storage")))
    if files != expected_files(all_ids):
        problems.append(f"storage after the restart: extra {sorted(files - expected_files(all_ids))[:5]}, "
                        f"missing {sorted(expected_files(all_ids) - files)[:5]}")
    if not raw_ok:
        problems.append(f"an upload whose body was still arriving at SIGTERM (headers and half of 1 MB sent "
                        f"0.2 s before, the rest 0.5 s after) was not answered: {raw_status} {raw_body!r:.300}")

    st_before = collections.Counter(str(r["status"] or "no answer") for r in before)
    st_racing = collections.Counter(
        str(r["status"]) if r["status"] else ("refused/reset" if r["error"].startswith("connection") else "other")
        for r in racing)
    print(f"\nFAULT sigterm [{TEST_DATABASE}]: {len(before)} requests started > {grace:.0f} s before SIGTERM "
          f"({dict(st_before)}), {len(racing)} racing it ({dict(st_racing)}); exit {rc} in {exit_s:.1f} s; "
          f"running job {slow_fate}; mid-body upload: {raw_status or 'no answer'}; after the restart "
          f"{total}/{total} accepted uploads completed in {jobs_s:.1f} s; orphan files: {len(orphans)}")
    for rec in racing:
        if rec["status"] is None:
            print(f"FAULT sigterm refused/reset: {describe(rec, t_sig)}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
