#!/usr/bin/env python3
"""Job throughput with 1, 2 and 3 worker processes (`petcam serve --role worker`) on one PostgreSQL.

One throwaway PostgreSQL (scripts/test-postgres.sh), one API process (`--role api`, runs no jobs) and, per
configuration, a fresh user whose N photos (crops of real photos, 160x120 by default) are all queued first,
with no worker running. Then the configuration's worker processes are started and the clock runs from their
start to the last completion (GET /photos polled every 0.1 s); that time includes each worker's start-up
(model load, database connection), which is reported apart too. "busy" is from the first `started` to the
last `completed` log line of the workers (their own timestamps), i.e. without the start-up.

Default configurations: 1, 2 and 3 workers with INFERENCE_THREADS=1 each (on a 2-core machine, 3 workers
show where scaling flattens), and 1 worker with INFERENCE_THREADS=0 (all cores) for reference.

  /usr/bin/python3 bench/bench_workers.py [--petcam build/release/petcam] [--jobs 60] [--size 160x120]
                                          [--configs 1x1,2x1,3x1,1x0] [--model x4fast] [--json FILE]
"""
import argparse
import datetime
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
PHOTOS = [
    "/usr/lib/python3/dist-packages/skimage/data/chelsea.png",
    "/usr/lib/python3/dist-packages/skimage/data/coffee.png",
    "/usr/lib/python3/dist-packages/skimage/data/astronaut.png",
    "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",
]
OWN_VARS = {"HOST", "PORT", "DATA_DIR", "STORAGE_DIR", "DATABASE_URL", "SECRET_KEY", "ROLE", "INSTANCE_ID",
            "JOB_WORKERS", "INFERENCE_THREADS", "MODEL", "PETCAM_MODELS_DIR", "MODELS_DIR", "LOG_LEVEL",
            "JOB_POLL_MS", "JOB_LEASE_SECONDS", "RATE_LIMIT_REGISTER", "RATE_LIMIT_TOKEN", "RATE_LIMIT_UPSCALE",
            "RATE_LIMIT_BESTCUT", "POOL_QUEUE", "TILE", "PRECISION"}
STARTED_RE = re.compile(r"^(\S+) .*job (\S+) photo ([^\s:]+): started by (\S+) \(attempt (\d+)/\d+\)")
COMPLETED_RE = re.compile(r"^(\S+) .*job (\S+) photo ([^\s:]+): completed \d+x\d+ -> \d+x\d+ in ([\d.]+) s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_time(stamp):
    """Seconds since the epoch of a log line's UTC timestamp (2025-01-02T03:04:05.678Z)."""
    return datetime.datetime.strptime(stamp.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def photos(n, w, h, seed=1):
    """n JPEGs of w x h: random regions (aspect w:h) of real photos, scaled down."""
    rng = random.Random(seed)
    sources = []
    for path in PHOTOS:
        if os.path.exists(path):
            with Image.open(path) as im:
                sources.append(im.convert("RGB"))
    if not sources:
        from skimage import data
        sources = [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
    out = []
    for _ in range(n):
        src = rng.choice(sources)
        max_cw = min(src.width, src.height * w // h)
        cw = rng.randint(min(w, max_cw), max_cw)
        ch = min(src.height, round(cw * h / w))
        x, y = rng.randint(0, src.width - cw), rng.randint(0, src.height - ch)
        buf = io.BytesIO()
        src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.LANCZOS).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


class Proc:
    def __init__(self, petcam, workdir, name, role, env):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "server.log")
        full = {k: v for k, v in os.environ.items() if k not in OWN_VARS}
        full.update({"HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": os.path.join(self.dir, "data"),
                     "INSTANCE_ID": name, "SECRET_KEY": SECRET, "LOG_LEVEL": "info"})
        full.update({k: str(v) for k, v in env.items()})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([petcam, "serve", "--role", role], cwd=self.dir, env=full,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.started = time.time()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def psql(url, query):
    out = subprocess.run(["psql", "-X", "-q", "-At", "-d", url, "-c", query], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.split() if out.returncode == 0 else []


def run_config(args, workdir, api, http, db_url, common, n_workers, threads, batch, label):
    # A fresh user: its list holds exactly this batch.
    user = f"bench_{label}_{os.getpid()}"
    r = http.post(api + "/register", json={"username": user, "password": "bench-password"}, timeout=60)
    r.raise_for_status()
    r = http.post(api + "/token", data={"username": user, "password": "bench-password"}, timeout=60)
    r.raise_for_status()
    auth = {"Authorization": "Bearer " + r.json()["access_token"]}
    ids = set()
    for i, data in enumerate(batch):
        r = http.post(api + "/upscale", headers=auth, files={"file": (f"p{i}.jpg", data, "image/jpeg")}, timeout=60)
        r.raise_for_status()
        ids.add(r.json()["id"])

    def statuses():
        r = http.get(api + "/photos", params={"limit": 1000}, headers=auth, timeout=60)
        r.raise_for_status()
        return {e["id"]: e["status"] for e in r.json() if e["id"] in ids}

    queued = statuses()
    if len(queued) != len(ids) or set(queued.values()) != {"queued"}:
        raise RuntimeError(f"before the workers started, not all {len(ids)} were queued: {queued}")

    env = dict(common, JOB_WORKERS=1, INFERENCE_THREADS=threads)
    t0 = time.time()
    workers = [Proc(args.petcam, workdir, f"{label}-w{k + 1}", "worker", env) for k in range(n_workers)]
    ready = {}
    while True:
        for w in workers:
            w.check_alive()
            if w.name not in ready and any(i.startswith(w.name + "/") for i in psql(db_url, "SELECT id FROM workers")):
                ready[w.name] = time.time() - t0
        st = statuses()
        done = sum(1 for s in st.values() if s == "completed")
        if "failed" in st.values():
            raise RuntimeError(f"{label}: a job failed; see {workdir}")
        if done == len(ids):
            break
        if time.time() - t0 > args.timeout:
            raise RuntimeError(f"{label}: only {done}/{len(ids)} completed within {args.timeout} s; see {workdir}")
        time.sleep(0.1)
    wall = time.time() - t0
    codes = [w.stop() for w in workers]
    if any(codes):
        print(f"warning: {label}: worker exit codes {codes}", file=sys.stderr)

    first_start, last_done, per_job, per_worker = None, None, [], {}
    for w in workers:
        for line in w.log().splitlines():
            m = STARTED_RE.search(line)
            if m and m.group(3) in ids:
                t = log_time(m.group(1))
                first_start = t if first_start is None else min(first_start, t)
            m = COMPLETED_RE.search(line)
            if m and m.group(3) in ids:
                t = log_time(m.group(1))
                last_done = t if last_done is None else max(last_done, t)
                per_job.append(float(m.group(4)))
                per_worker[w.name] = per_worker.get(w.name, 0) + 1
    if len(per_job) != len(ids):
        raise RuntimeError(f"{label}: {len(per_job)} completed lines for {len(ids)} jobs; see {workdir}")
    busy = last_done - first_start
    return {
        "workers": n_workers, "threads_each": threads, "jobs": len(ids), "seconds": round(wall, 2),
        "jobs_per_minute": round(60 * len(ids) / wall, 1), "busy_seconds": round(busy, 2),
        "busy_jobs_per_minute": round(60 * len(ids) / busy, 1) if busy > 0 else None,
        "mean_job_seconds": round(sum(per_job) / len(per_job), 3),
        "startup_seconds": round(max(ready.values()), 2) if len(ready) == n_workers else None,
        "per_worker": per_worker,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--petcam", default=os.path.join(REPO, "build", "release", "petcam"))
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--configs", default="1x1,2x1,3x1,1x0",
                    help="WORKERSxINFERENCE_THREADS, comma separated (threads 0 = all cores)")
    ap.add_argument("--model", default="x4fast")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    args.petcam = os.path.abspath(args.petcam)
    w, h = (int(v) for v in args.size.split("x"))
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]

    workdir = tempfile.mkdtemp(prefix="petcam-bench-workers-")
    pgdir = os.path.join(workdir, "postgres")
    script = os.path.join(REPO, "scripts", "test-postgres.sh")
    db_url = subprocess.run([script, "start", pgdir], check=True, capture_output=True, text=True,
                            timeout=180).stdout.strip().splitlines()[-1]
    common = {"DATABASE_URL": db_url, "STORAGE_DIR": os.path.join(workdir, "storage"), "MODEL": args.model,
              "PETCAM_MODELS_DIR": os.path.join(REPO, "models"), "JOB_POLL_MS": 1000, "JOB_LEASE_SECONDS": 60,
              "RATE_LIMIT_REGISTER": 0, "RATE_LIMIT_TOKEN": 0, "RATE_LIMIT_UPSCALE": 0, "RATE_LIMIT_BESTCUT": 0,
              "POOL_QUEUE": 100000}
    api_proc = None
    results = []
    try:
        api_proc = Proc(args.petcam, workdir, "api", "api", common)
        api = f"http://127.0.0.1:{api_proc.port}"
        http = requests.Session()
        http.trust_env = False
        deadline = time.time() + 60
        while True:
            api_proc.check_alive()
            try:
                if http.get(api + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise RuntimeError("the API did not come up; see " + api_proc.log_path)
            time.sleep(0.1)

        print(f"petcam {args.petcam}; {os.cpu_count()} CPUs; model {args.model}; {args.jobs} jobs of {w}x{h} "
              f"per configuration; load average before: {os.getloadavg()[0]:.2f}", flush=True)
        for n_workers, threads in configs:
            label = f"{n_workers}x{threads}"
            batch = photos(args.jobs, w, h, seed=len(results) + 1)
            res = run_config(args, workdir, api, http, db_url, common, n_workers, threads, batch, label)
            results.append(res)
            print(f"  {label}: {res['seconds']} s, per worker {res['per_worker']}", flush=True)
    finally:
        if api_proc is not None:
            api_proc.stop()
        subprocess.run([script, "stop", pgdir], timeout=120)
        if not args.keep:
            subprocess.run(["rm", "-rf", workdir])
        else:
            print(f"logs kept in {workdir}")

    head = ("workers", "threads each", "jobs", "seconds", "jobs/minute", "busy s", "jobs/min busy",
            "mean job s", "start-up s")
    rows = [(r["workers"], r["threads_each"] or "all", r["jobs"], f"{r['seconds']:.1f}", f"{r['jobs_per_minute']:.1f}",
             f"{r['busy_seconds']:.1f}", f"{r['busy_jobs_per_minute']:.1f}", f"{r['mean_job_seconds']:.3f}",
             "-" if r["startup_seconds"] is None else f"{r['startup_seconds']:.1f}") for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    print()
    for row in [head] + rows:
        print("  ".join(str(x).rjust(wd) for x, wd in zip(row, widths)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "size": [w, h], "cpus": os.cpu_count(), "results": results}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
