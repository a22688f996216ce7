#!/usr/bin/env python3
"""HTTP throughput and latency of `petcam serve` with wrk, on SQLite and on PostgreSQL.

Scenarios: GET /health, GET /photos (100 rows), downloads of a small and of a ~1 MB original, POST /token
(Argon2id verify each time), POST /upscale (a ~1 MB JPEG; rate limits raised, no job workers so the CPU goes
to HTTP). wrk runs on the same 2-core machine as the server and the database, so every figure includes their
competition for cores.

  /usr/bin/python3 bench/bench_http.py [--petcam build/release/petcam] [--duration 10] [--db sqlite,postgres]
"""
import argparse
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WRK_DIR = os.path.join(REPO, "bench", "wrk")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo_jpeg(target_bytes=1_000_000):
    """A real photo (skimage's chelsea), scaled until its JPEG is about target_bytes."""
    from skimage import data
    img = Image.fromarray(data.chelsea())
    for scale in np.arange(2.0, 12.0, 0.25):
        big = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=97)
        if buf.tell() >= target_bytes:
            return buf.getvalue(), big.size
    return buf.getvalue(), big.size


class Server:
    def __init__(self, petcam, workdir, database_url):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
        env.update({
            "HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": os.path.join(workdir, "data"),
            "SECRET_KEY": "bench-secret-0123456789abcdef0123456789abcdef", "JOB_WORKERS": "0",
            "LOG_LEVEL": "warn", "RATE_LIMIT_REGISTER": "0", "RATE_LIMIT_TOKEN": "0",
            "RATE_LIMIT_UPSCALE": "0", "RATE_LIMIT_BESTCUT": "0", "POOL_QUEUE": "100000",
        })
        if database_url:
            env["DATABASE_URL"] = database_url
        self.log = open(os.path.join(workdir, "server.log"), "w")
        self.proc = subprocess.Popen([petcam, "serve"], cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("server did not start; see " + self.log.name)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def wrk(url, duration, connections, script=None, headers=(), env=None):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
           script or os.path.join(WRK_DIR, "report.lua")]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    if script:  # chain the scenario script with the reporting one
        combined = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        combined.write(open(script).read() + "\n" + open(os.path.join(WRK_DIR, "report.lua")).read())
        combined.close()
        cmd[cmd.index(script)] = combined.name
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True).stdout
    m = re.search(r"BENCH requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) max_us=(\d+) errors=(\d+) "
                  r"status_errors=(\d+)", out)
    if not m:
        raise RuntimeError("no figures from wrk:\n" + out)
    n, dur, p50, p99, mx, errors, status_errors = map(int, m.groups())
    return {"rps": n / (dur / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "max_ms": mx / 1000,
            "requests": n, "errors": errors, "non_2xx": status_errors}


def run_database(petcam, db, duration, jpeg):
    with tempfile.TemporaryDirectory(prefix="petcam-bench-") as work:
        url = None
        pg_dir = os.path.join(work, "pg")
        if db == "postgres":
            url = subprocess.run([os.path.join(REPO, "scripts", "test-postgres.sh"), "start", pg_dir],
                                 capture_output=True, text=True, check=True).stdout.strip()
        try:
            server = Server(petcam, work, url)
            try:
                s = requests.Session()
                user, password = "bench_user", "bench-password-1"
                assert s.post(server.base + "/register", json={"username": user, "password": password}).ok
                token = s.post(server.base + "/token", data={"username": user, "password": password}).json()["access_token"]
                auth = {"Authorization": "Bearer " + token}
                small = io.BytesIO()
                Image.new("RGB", (64, 48), (120, 80, 40)).save(small, "JPEG")
                for i in range(100):
                    r = s.post(server.base + "/upscale", headers=auth,
                               files={"file": (f"p{i}.jpg", small.getvalue(), "image/jpeg")})
                    assert r.ok, r.text
                listed = s.get(server.base + "/photos", headers=auth).json()
                assert len(listed) == 100
                r = s.post(server.base + "/upscale", headers=auth, files={"file": ("big.jpg", jpeg, "image/jpeg")})
                assert r.ok, r.text
                big_id = r.json()["id"]
                with tempfile.NamedTemporaryFile(suffix=".jpg", delete=False) as f:
                    f.write(jpeg)
                rows = []
                rows.append(("GET /health", wrk(server.base + "/health", duration, 64)))
                rows.append(("GET /photos (100 rows)", wrk(server.base + "/photos", duration, 32,
                                                           headers=["Authorization: Bearer " + token])))
                rows.append(("GET /photos/{id} (download)",
                             wrk(f"{server.base}/photos/{listed[0]['id']}?type=original", duration, 32,
                                 headers=["Authorization: Bearer " + token])))
                rows.append(("GET /photos/{id} (%d KB)" % (len(jpeg) // 1000),
                             wrk(f"{server.base}/photos/{big_id}?type=original", duration, 32,
                                 headers=["Authorization: Bearer " + token])))
                rows.append(("POST /token", wrk(server.base + "/token", duration, 8,
                                                script=os.path.join(WRK_DIR, "post_token.lua"),
                                                env={"BENCH_USERNAME": user, "BENCH_PASSWORD": password})))
                rows.append(("POST /upscale (%d KB JPEG)" % (len(jpeg) // 1000),
                             wrk(server.base + "/upscale", duration, 8, script=os.path.join(WRK_DIR, "post_upscale.lua"),
                                 env={"BENCH_TOKEN": token, "BENCH_JPEG": f.name})))
                os.unlink(f.name)
                return rows
            finally:
                server.stop()
        finally:
            if url:
                subprocess.run([os.path.join(REPO, "scripts", "test-postgres.sh"), "stop", pg_dir], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--petcam", default=os.path.join(REPO, "build", "release", "petcam"))
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    jpeg, size = photo_jpeg()
    print(f"# wrk -t1, {args.duration} s per row, on {os.cpu_count()} cores shared by wrk, server and database; "
          f"upload photo {size[0]}x{size[1]}, {len(jpeg)} bytes")
    print(f"{'database':<10} {'scenario':<28} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'non-2xx':>8}")
    results = {}
    for db in args.db.split(","):
        rows = run_database(os.path.abspath(args.petcam), db, args.duration, jpeg)
        results[db] = dict(rows)
        for name, r in rows:
            print(f"{db:<10} {name:<28} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                  f"{r['errors']:>7} {r['non_2xx']:>8}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
