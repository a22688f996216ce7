"""Scale-out: API processes and worker processes on one PostgreSQL and one shared storage directory.

- 2 API processes (`--role api`) and 3 worker processes (`ROLE=worker`, w1..w3): 200 tiny photos uploaded
  alternately through both APIs are each upscaled exactly once, by workers of all three, to exactly 4x.
- A worker killed with SIGKILL mid-job: another worker takes the job over once its lease expires (attempt 2)
  and completes it; the lease is renewed while the first worker is alive, so nobody takes it over early.
- SIGTERM stops every process with exit code 0; cleanly stopped workers leave the `workers` table.
- Processes of every role started at once on a fresh database all come up (the migrations do not race).

The roles are given both ways the contract allows: APIs with `--role api`, workers with `ROLE=worker`.
"""

import collections
import concurrent.futures
import os
import re
import time

import scale_harness as h
from scale_harness import Api

N_JOBS = int(os.environ.get("PETCAM_SCALE_JOBS", "200"))
N_USERS = 4
LEASE_S = 4
SIZES = [(32, 24), (36, 27), (40, 30), (44, 33), (48, 36)]
# The crash photo must run for well over a lease on one core (x4fast fp32, 1 thread: ~18 s on the 2-core test
# machine), so that the lease is seen renewed before the kill, with room for a faster CPU. The workers run
# fp32 on every CPU: auto would pick bf16 where the CPU has it, and on AMX's direct convs the photo took 4.7 s.
CRASH_SIZE = tuple(int(v) for v in os.environ.get("PETCAM_SCALE_CRASH_SIZE", "1600x1200").split("x"))
KILL_AFTER_S = LEASE_S * 1.5
COMPLETE_TIMEOUT_S = 150
PASSWORD = "scale-password-1"

WORKER_ENV = {
    "JOB_LEASE_SECONDS": LEASE_S,
    "JOB_WORKERS": 1,
    "JOB_POLL_MS": 500,
    "INFERENCE_THREADS": 1,
    "PRECISION": "fp32",
}


def all_events(cluster):
    """Job log events of every process, in log order per process."""
    out = []
    for p in cluster.procs:
        out += h.job_events(p.log_text(), p.name)
    return out


def register_users(apis, n, prefix):
    """n users, each registered through one API and logged in through the other (one SECRET_KEY);
    returns per user a list of Api views, one per API process, all with the user's token."""
    users = []
    for u in range(n):
        name = f"{prefix}{u}_{os.getpid()}"
        reg, log = apis[u % len(apis)], apis[(u + 1) % len(apis)]
        r = Api(reg).register(name, PASSWORD)
        assert r.status_code == 200, (reg.name, r.status_code, r.text)
        r = Api(log).login(name, PASSWORD)
        assert r.status_code == 200, (log.name, r.status_code, r.text)
        token = r.json()["access_token"]
        users.append([Api(p, token) for p in apis])
    return users


def wait_all_completed(users, expected, timeout):
    """Polls GET /photos of every user, alternating the API, until every photo in `expected`
    ({photo_id: user index}) is completed. Each list must hold exactly that user's photos."""
    by_user = collections.defaultdict(set)
    for pid, u in expected.items():
        by_user[u].add(pid)
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        counts = collections.Counter()
        for u, views in enumerate(users):
            if u not in by_user:
                continue
            entries = views[rounds % len(views)].photos()
            ids = {e["id"] for e in entries}
            assert ids == by_user[u], (
                f"user {u} through {views[rounds % len(views)].proc.name}: the list has "
                f"{len(ids - by_user[u])} foreign/unknown and misses {len(by_user[u] - ids)} of its photos")
            for e in entries:
                counts[e["status"]] += 1
                assert e["status"] != "failed", f"photo {e['id']} failed"
        rounds += 1
        if counts["completed"] == len(expected):
            return entries_by_id(users, by_user)
        assert time.monotonic() < deadline, f"not all completed within {timeout} s: {dict(counts)}"
        time.sleep(0.5)


def entries_by_id(users, by_user):
    out = {}
    for u in by_user:
        for e in users[u][0].photos():
            out[e["id"]] = e
    return out


def gauges(proc):
    """petcam_jobs{state=...} and petcam_workers from GET /metrics, or None where there is no /metrics."""
    r = h.session().get(proc.url + "/metrics", timeout=30)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, (proc.name, r.status_code, r.text[:300])
    out = {}
    for line in r.text.splitlines():
        m = re.match(r'^petcam_jobs\{state="(\w+)"\} (\S+)$', line)
        if m:
            out[m.group(1)] = float(m.group(2))
        m = re.match(r"^petcam_workers (\S+)$", line)
        if m:
            out["workers"] = float(m.group(1))
    return out or None


def check_gauges(apis, want, timeout=10):
    """Where /metrics exists (optional in the contract): every API reports `want` (within `timeout`)."""
    for a in apis:
        deadline = time.monotonic() + timeout
        while True:
            got = gauges(a)
            if got is None:
                print(f"{a.name}: no petcam_jobs gauges on /metrics; not checked")
                break
            if {k: got[k] for k in want if k in got} == {k: v for k, v in want.items() if k in got}:
                missing = sorted(set(want) - set(got))
                if missing:
                    print(f"{a.name}: /metrics has no {missing}; not checked")
                break
            assert time.monotonic() < deadline, f"{a.name} /metrics: {got}, expected {want}"
            time.sleep(0.5)


def test_scale_out_two_apis_three_workers(cluster):
    t_begin = time.monotonic()
    apis = [cluster.api(f"api-{i}", role_via="flag", JOB_LEASE_SECONDS=LEASE_S) for i in (1, 2)]
    apis[0].start().wait_http()  # the first applies the migrations; the concurrent start is tested below
    apis[1].start().wait_http()
    workers = [cluster.worker(f"w{i}", role_via="env", **WORKER_ENV).start() for i in (1, 2, 3)]
    ids = cluster.wait_workers_registered([w.name for w in workers])
    print(f"\nworkers table: {ids}")

    # Roles: an API runs no job thread (no row), a worker serves no HTTP (its PORT is free).
    assert not [i for i in ids if i.startswith("api-")], f"API processes registered as workers: {ids}"
    for w in workers:
        ports = h.listening_ports(w.pid)
        assert w.port not in ports, f"{w.name} (ROLE=worker) listens on its PORT {w.port}"
    for a in apis:
        assert a.port in h.listening_ports(a.pid), f"{a.name} does not listen on {a.port}"

    users = register_users(apis, N_USERS, "scale")
    rng = h.make_rng()
    uploads = []  # (index, user, api index, size, bytes)
    for i in range(N_JOBS):
        size = SIZES[i % len(SIZES)]
        uploads.append((i, (i // 2) % N_USERS, i % 2, size, h.crop_jpeg(*size, rng)))

    def upload(item):
        i, u, a, size, data = item
        r = users[u][a].upload(data, filename=f"pet{i}.jpg")
        assert r.status_code == 200, (apis[a].name, r.status_code, r.text)
        return r.json()["id"]

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        photo_ids = list(pool.map(upload, uploads))
    t_uploaded = time.monotonic() - t0
    assert len(set(photo_ids)) == N_JOBS, "duplicate photo ids"
    meta = {pid: item for pid, item in zip(photo_ids, uploads)}

    entries = wait_all_completed(users, {pid: item[1] for pid, item in meta.items()}, COMPLETE_TIMEOUT_S)
    t_done = time.monotonic() - t0
    print(f"{N_JOBS} uploads through 2 APIs in {t_uploaded:.1f} s; all completed after {t_done:.1f} s")

    # -- the logs: every photo upscaled exactly once, by a worker, never by an API process
    events = all_events(cluster)
    api_events = [e for e in events if e["source"].startswith("api-")]
    assert not api_events, f"API processes ran jobs: {[e['line'] for e in api_events[:5]]}"
    started = [e for e in events if e["kind"] == "started"]
    completed = [e for e in events if e["kind"] == "completed"]
    troubles = [e for e in events if e["kind"] in ("lease_lost", "returned", "failed")]
    assert not troubles, "jobs lost their lease, failed or were returned:\n" + "\n".join(
        e["line"] for e in troubles[:10])

    per_job = collections.Counter(e["job"] for e in completed)
    twice = {j: n for j, n in per_job.items() if n != 1}
    assert not twice, f"jobs completed more than once: {twice}"
    per_photo = collections.Counter(e["photo"] for e in completed)
    assert set(per_photo) == set(photo_ids), (
        f"completed lines for {len(set(per_photo) - set(photo_ids))} unknown photos, none for "
        f"{len(set(photo_ids) - set(per_photo))} uploaded photos")
    assert all(n == 1 for n in per_photo.values()), \
        f"photos completed more than once: {[p for p, n in per_photo.items() if n > 1]}"
    for e in started:
        assert e["instance"] == e["source"], f"{e['source']} logged a job started by {e['instance']}: {e['line']}"
        assert e["attempt"] == "1", f"a job needed another attempt: {e['line']}"
    started_jobs = collections.Counter(e["job"] for e in started)
    assert set(started_jobs) == set(per_job), "a job completed without a started line, or started and vanished"
    assert all(n == 1 for n in started_jobs.values()), \
        f"jobs started more than once: {[j for j, n in started_jobs.items() if n > 1]}"
    for e in completed:
        size = meta[e["photo"]][3]
        got = (int(e["w"]), int(e["h"]), int(e["w4"]), int(e["h4"]))
        assert got == (size[0], size[1], 4 * size[0], 4 * size[1]), f"{e['line']} (uploaded {size})"

    # -- the work spread over the three workers
    per_worker = collections.Counter(e["source"] for e in completed)
    print("completed per worker: " + ", ".join(f"{w.name}={per_worker[w.name]}" for w in workers))
    for w in workers:
        assert per_worker[w.name] >= max(1, N_JOBS // 20), \
            f"{w.name} completed only {per_worker[w.name]} of {N_JOBS} jobs: {dict(per_worker)}"

    check_gauges(apis, {"queued": 0, "processing": 0, "completed": N_JOBS, "failed": 0, "workers": 3})

    # -- the files: every one there, exactly 4x, the same through either API, nothing else in storage
    for pid, (i, u, a, size, data) in meta.items():
        e = entries[pid]
        assert e["status"] == "completed", e
        assert e["upscaled_path"] == f"storage/upscaled/{pid}.jpg", e
        path = cluster.upscaled_file(pid)
        assert os.path.isfile(path), f"no upscaled file for {pid}"
        got, fmt = h.image_size(path)
        assert fmt == "JPEG" and got == (4 * size[0], 4 * size[1]), (pid, got, fmt, size)
        with open(cluster.original_file(pid), "rb") as f:
            assert f.read() == data, f"original of {pid} differs from the upload"
    upscaled_dir = os.listdir(os.path.join(cluster.storage_dir, "upscaled"))
    assert sorted(upscaled_dir) == sorted(f"{pid}.jpg" for pid in photo_ids), \
        f"stray files in storage/upscaled: {sorted(set(upscaled_dir) - {f'{p}.jpg' for p in photo_ids})[:10]}"
    for pid in photo_ids[:10]:
        i, u, a, size, data = meta[pid]
        r = users[u][1 - a].download(pid)  # through the API that did not take the upload
        assert r.status_code == 200, (r.status_code, r.text)
        with open(cluster.upscaled_file(pid), "rb") as f:
            assert r.content == f.read()

    # -- a worker killed mid-job: the job is taken over after its lease expires, and completed once
    big = h.whole_jpeg(*CRASH_SIZE, "chelsea")
    owner = users[0][0]
    r = owner.upload(big, filename="big.jpg")
    assert r.status_code == 200, (r.status_code, r.text)
    crash_id = r.json()["id"]
    deadline = time.monotonic() + 30
    while True:
        first = [e for e in all_events(cluster) if e["kind"] == "started" and e["photo"] == crash_id]
        if first:
            break
        assert time.monotonic() < deadline, "nobody started the big photo within 30 s"
        time.sleep(0.05)
    t_started = time.monotonic()
    assert len(first) == 1, [e["line"] for e in first]
    victim = next(w for w in workers if w.name == first[0]["source"])
    job_id = first[0]["job"]
    print(f"big photo {CRASH_SIZE[0]}x{CRASH_SIZE[1]}: job {job_id} started by {first[0]['instance']}; "
          f"killing {victim.name} after {KILL_AFTER_S:.1f} s")

    # While the victim lives, its heartbeat keeps the lease: nobody else starts the job, though the run
    # outlasts a lease.
    while time.monotonic() - t_started < KILL_AFTER_S:
        evs = [e for e in all_events(cluster) if e.get("job") == job_id]
        assert not [e for e in evs if e["kind"] == "completed"], \
            (f"the big photo completed within {time.monotonic() - t_started:.1f} s, before the kill: "
             f"set PETCAM_SCALE_CRASH_SIZE larger")
        others = [e for e in evs if e["kind"] == "started" and e["source"] != victim.name]
        assert not others, f"job taken over while its worker was alive (lease not renewed?): {others[0]['line']}"
        time.sleep(0.1)
    status = next(e["status"] for e in owner.photos() if e["id"] == crash_id)
    assert status == "processing", f"big photo is {status!r} just before the kill"
    victim.proc.kill()
    t_kill = time.monotonic()
    assert victim.proc.wait(timeout=10) == -9

    deadline = t_kill + LEASE_S + 10
    while True:
        again = [e for e in all_events(cluster) if e["kind"] == "started" and e["job"] == job_id
                 and e["source"] != victim.name]
        if again:
            break
        if time.monotonic() > deadline:
            row = h.psql(cluster.database_url, "SELECT state, attempts, lease_owner, lease_expires_at,"
                         f" (extract(epoch FROM clock_timestamp()) * 1000)::bigint FROM jobs WHERE id = '{job_id}'")
            raise AssertionError(
                f"no other worker took the job over within {LEASE_S + 10} s of the kill; jobs row "
                f"(state, attempts, lease_owner, lease_expires_at ms, now ms): {row}")
        time.sleep(0.05)
    takeover_s = time.monotonic() - t_kill
    assert len(again) == 1, [e["line"] for e in again]
    heir = again[0]
    assert heir["attempt"] == "2", f"takeover is not attempt 2: {heir['line']}"
    assert heir["instance"] == heir["source"] != victim.name, heir["line"]
    print(f"taken over by {heir['instance']} {takeover_s:.1f} s after the kill: {heir['line']}")

    view = users[0][1]  # the other API
    t0 = time.monotonic()
    while True:
        status = next(e for e in view.photos() if e["id"] == crash_id)["status"]
        if status == "completed":
            break
        assert status == "processing", f"big photo is {status!r} after the takeover"
        assert time.monotonic() - t0 < 90, "big photo not completed within 90 s of the takeover"
        time.sleep(0.2)
    evs = [e for e in all_events(cluster) if e.get("job") == job_id]
    done = [e for e in evs if e["kind"] == "completed"]
    assert len(done) == 1 and done[0]["source"] == heir["source"], [e["line"] for e in evs]
    assert (int(done[0]["w4"]), int(done[0]["h4"])) == (4 * CRASH_SIZE[0], 4 * CRASH_SIZE[1]), done[0]["line"]
    assert not [e for e in evs if e["kind"] in ("lease_lost", "failed", "returned")], [e["line"] for e in evs]
    got, fmt = h.image_size(cluster.upscaled_file(crash_id))
    assert fmt == "JPEG" and got == (4 * CRASH_SIZE[0], 4 * CRASH_SIZE[1]), got
    r = view.download(crash_id)
    assert r.status_code == 200 and h.image_size(r.content)[0] == got, (r.status_code, len(r.content))

    # The dead worker stopped beating more than a lease ago: two live workers.
    check_gauges(apis, {"queued": 0, "processing": 0, "completed": N_JOBS + 1, "failed": 0, "workers": 2})

    # -- SIGTERM: every live process exits 0, and the stopped workers leave the table
    live = [p.name for p in cluster.procs if p.running()]
    assert sorted(live) == sorted(["api-1", "api-2"] + [w.name for w in workers if w is not victim]), live
    codes = cluster.stop_all()
    print(f"exit codes after SIGTERM: {codes}")
    assert codes == {name: 0 for name in live}, codes
    rows = [row[0] for row in h.live_worker_ids(cluster.database_url)]
    stopped = [w.name for w in workers if w is not victim]
    assert not [i for i in rows if i.split("/")[0] in stopped], f"stopped workers still in the table: {rows}"
    print(f"workers table after the stop: {rows}")

    # Nothing ran twice in the end, either.
    final = collections.Counter(e["job"] for e in all_events(cluster) if e["kind"] == "completed")
    assert len(final) == N_JOBS + 1 and set(final.values()) == {1}, \
        {j: n for j, n in final.items() if n != 1} or len(final)
    print(f"scale-out test: {time.monotonic() - t_begin:.1f} s in all")


def test_all_roles_start_at_once_on_a_fresh_database(cluster):
    """Everything started together against an empty database (as an orchestrator would): every process
    comes up; the migrations are applied once, whoever gets there first."""
    procs = [cluster.api("api-a", role_via="flag"), cluster.api("api-b", role_via="env"),
             cluster.worker("wa", role_via="env", **WORKER_ENV), cluster.worker("wb", role_via="flag", **WORKER_ENV),
             cluster.api("all-c", role_via="flag")]
    procs[-1].role = "all"  # HTTP and jobs in one process, beside the others
    for p in procs:
        p.start()
    for p in procs:
        if p.role in ("api", "all"):
            p.wait_http()
    cluster.wait_workers_registered(["wa", "wb", "all-c"])
    for p in procs:
        if p.role == "worker":
            assert p.port not in h.listening_ports(p.pid), f"{p.name} (worker) listens on its PORT"
    versions = [r[0] for r in h.psql(cluster.database_url, "SELECT version FROM schema_migrations ORDER BY 1")]
    shipped = sorted(f.split("_")[0] for f in os.listdir(os.path.join(h.REPO_ROOT, "migrations", "postgres"))
                     if f.endswith(".up.sql"))
    assert [int(v) for v in versions] == [int(v) for v in shipped], (versions, shipped)

    users = register_users([procs[0], procs[1]], 2, "fresh")
    rng = h.make_rng(7)
    expected = {}
    for i in range(6):
        u = i % 2
        r = users[u][i % 2].upload(h.crop_jpeg(40, 30, rng))
        assert r.status_code == 200, (r.status_code, r.text)
        expected[r.json()["id"]] = u
    wait_all_completed(users, expected, 60)
    completed = [e for e in all_events(cluster) if e["kind"] == "completed"]
    assert sorted(e["photo"] for e in completed) == sorted(expected), [e["line"] for e in completed]
    assert not [e for e in completed if e["source"] in ("api-a", "api-b")], [e["line"] for e in completed]

    codes = cluster.stop_all()
    assert codes == {p.name: 0 for p in procs}, codes
