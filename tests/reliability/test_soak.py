"""Soak: a sustained upload load with the rate limits raised, 60 s (short) or 600 s (PETCAM_RELIABILITY=full).

Four users, each on its own thread, client address and keep-alive session. Three heavy users loop:
upload a real 320x240 JPEG, list their photos, download the newest original (byte-exact), delete all but
the newest, so most of their photos are gone before the job worker reaches them and some go while it
processes them (~20 uploads/s in all). The light user uploads one every 1.5 s, downloads and checks each
photo once it is completed (a 1280x960 JPEG), then deletes it. All now and then GET /health and /metrics.
One job worker (x4fast, one inference thread) upscales meanwhile; the queue stays bounded.

What must hold:
- no error response (every answer 2xx) and no connection error;
- memory flat: the server's RSS is sampled every 2 s. The first 30% of the run is warm-up (the model's
  arenas, SQLite's page cache, the allocator's pools fill). The rest is cut in two halves; the highest RSS
  of the second half may exceed the highest of the first by at most max(16 MiB, 5%). A leak of a few KiB
  per request (at ~100 requests/s) breaks that within a minute; the full run gives a leak ten times as
  long to show. The least-squares slope after warm-up is reported too;
- jobs are done meanwhile (the light user downloads at least 3 upscaled photos), none fails, and the log
  has no error line;
- afterwards, storage holds exactly the originals of the photos still listed (plus upscaled files of
  some of them): nothing deleted or abandoned is left behind, and the server stops cleanly on SIGTERM.

Reported (pytest -s): requests by kind, uploads/s, RSS at start / end of warm-up / end, peak, slope,
jobs completed and the queue depth at the end (from /metrics).
"""

import io
import os
import random
import re
import threading
import time

import requests
from PIL import Image

from conftest import FULL, Client, photo_image, register_and_login
from loadlib import MIB, MemorySampler, proc_memory

DURATION_S = 600 if FULL else 60
USERS = 4
PACE_S = 0.12        # pause between iterations of a heavy user: ~20 uploads/s in all, ~80 requests/s
LIGHT_PACE_S = 1.5   # the light user uploads slower than the worker upscales
LIGHT_KEEP = 20
WARMUP_FRACTION = 0.3
GROWTH_MIN = 16 * MIB
GROWTH_FRACTION = 0.05


def _jpegs():
    """A few different real 320x240 JPEGs (crops of real photos)."""
    out = []
    for name in ("chelsea", "coffee", "grace_hopper", "astronaut"):
        img = photo_image(640, 480, name)
        for x, y in ((0, 0), (160, 120), (320, 240)):
            buf = io.BytesIO()
            img.crop((x, y, x + 320, y + 240)).save(buf, format="JPEG", quality=88)
            out.append(buf.getvalue())
    return out


def _metric(text, name):
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


class _User(threading.Thread):
    def __init__(self, server, seed, jpegs, deadline, light):
        super().__init__(daemon=True)
        self.light = light
        self.upscaled_ok = 0
        self.client = Client(server)
        register_and_login(server, self.client)
        self.rng = random.Random(seed)
        self.jpegs = jpegs
        self.deadline = deadline
        self.counts = {}
        self.bad = []           # (kind, status, body)
        self.conn_errors = []   # (kind, exception)
        self.uploaded = {}      # id -> bytes, of photos not deleted

    def call(self, kind, method, path, ok=(200,), **kw):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        try:
            r = self.client.request(method, path, timeout=30, **kw)
        except (requests.RequestException, AssertionError) as e:
            self.conn_errors.append((kind, repr(e)[:300]))
            return None
        if r.status_code not in ok:
            self.bad.append((kind, r.status_code, r.text[:200]))
            return None
        return r

    def run(self):
        while time.monotonic() < self.deadline:
            if self.light:
                self.light_iteration()
            else:
                self.heavy_iteration()
            if self.rng.random() < 0.1:
                self.call("health", "GET", "/health", auth=False)
            if self.rng.random() < 0.02:
                self.call("metrics", "GET", "/metrics", auth=False)
            time.sleep(LIGHT_PACE_S if self.light else PACE_S)

    def upload(self):
        data = self.rng.choice(self.jpegs)
        r = self.call("upload", "POST", "/upscale", files={"file": ("p.jpg", data, "image/jpeg")},
                      data={"lat": "37.5", "lng": "127.0"})
        if r is not None:
            self.uploaded[r.json()["id"]] = data

    def listing(self):
        r = self.call("list", "GET", "/photos", params={"limit": 100})
        return r.json() if r is not None else []

    def download_original(self, photo_id):
        r = self.call("download_original", "GET", f"/photos/{photo_id}", params={"type": "original"})
        if r is not None and (r.content != self.uploaded.get(photo_id) or
                              r.headers.get("Content-Type") != "image/jpeg"):
            self.bad.append(("download_original", "content differs", photo_id))

    def delete(self, photo_id):
        if self.call("delete", "DELETE", f"/photos/{photo_id}") is not None:
            self.uploaded.pop(photo_id, None)

    def heavy_iteration(self):
        """Upload, list, download the newest original, delete all but the newest (most photos are gone
        before the job worker reaches them; some go while it processes them)."""
        self.upload()
        photos = self.listing()
        if photos:
            self.download_original(photos[0]["id"])
        for old in photos[1:]:
            self.delete(old["id"])

    def light_iteration(self):
        """Upload, list, download and check every completed photo, then delete it."""
        self.upload()
        photos = self.listing()
        for p in photos:
            if p["status"] != "completed":
                continue
            r = self.call("download_upscaled", "GET", f"/photos/{p['id']}")
            if r is not None:
                if r.headers.get("Content-Type") != "image/jpeg" or \
                        Image.open(io.BytesIO(r.content)).size != (1280, 960):
                    self.bad.append(("download_upscaled", "not a 1280x960 JPEG", dict(r.headers)))
                else:
                    self.upscaled_ok += 1
            self.download_original(p["id"])
            self.delete(p["id"])
        for old in [p for p in photos if p["status"] != "completed"][LIGHT_KEEP:]:
            self.delete(old["id"])  # the worker is far behind (a busy machine): keep the queue bounded


def _slope_mib_per_min(samples):
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    cov = sum((t - mt) * (v - mv) for t, v in samples)
    return (cov / var) * 60 / MIB if var else 0.0


def test_sustained_upload_load(start_server):
    server = start_server(RATE_LIMIT_UPSCALE="100000/minute", RATE_LIMIT_BESTCUT="100000/minute",
                          RATE_LIMIT_TOKEN="100000/minute", RATE_LIMIT_REGISTER="100000/minute",
                          JOB_WORKERS="1", INFERENCE_THREADS="1", LOG_LEVEL="info")
    jpegs = _jpegs()
    rss_start = proc_memory(server.proc.pid)["VmRSS"]
    sampler = MemorySampler(server.proc.pid, 2.0).start()
    t0 = time.monotonic()
    users = [_User(server, i, jpegs, t0 + DURATION_S, light=(i == 0)) for i in range(USERS)]
    for u in users:
        u.start()
    for u in users:
        u.join(DURATION_S + 120)
    elapsed = time.monotonic() - t0
    samples = sampler.stop()
    assert not any(u.is_alive() for u in users), "a load thread hung"

    metrics = Client(server).get("/metrics").text
    queue_depth = _metric(metrics, "petcam_queue_depth")
    failed = _metric(metrics, 'petcam_jobs{state="failed"}')
    mem = proc_memory(server.proc.pid)

    # Everything still listed, then a clean stop, then storage against the listings.
    listed = set()
    for u in users:
        listed |= {p["id"] for p in u.client.photos()}
    rc, _ = server.terminate()
    storage = server.storage_files()
    log = server.log_text()
    jobs_done = len(re.findall(r": completed \d+x\d+ -> ", log))
    jobs_dropped = log.count("photo was deleted while processing")
    error_lines = [l for l in log.splitlines() if re.match(r"\S+ (error|critical) ", l)]
    upscaled_ok = sum(u.upscaled_ok for u in users)

    counts = {}
    for u in users:
        for k, v in u.counts.items():
            counts[k] = counts.get(k, 0) + v
    bad = [b for u in users for b in u.bad]
    conn_errors = [e for u in users for e in u.conn_errors]

    warm_end = elapsed * WARMUP_FRACTION
    steady = [(t, v) for t, v in samples if t >= warm_end]
    half = len(steady) // 2
    first, second = [v for _, v in steady[:half]], [v for _, v in steady[half:]]
    rss_warm = steady[0][1] if steady else 0
    growth = (max(second) - max(first)) if first and second else 0
    allowed = max(GROWTH_MIN, GROWTH_FRACTION * max(first)) if first else GROWTH_MIN
    print(f"\n[soak] duration_s={elapsed:.0f}, users={USERS}, requests={sum(counts.values())}, "
          f"by_kind={dict(sorted(counts.items()))}, uploads_per_s={counts.get('upload', 0) / elapsed:.1f}, "
          f"non_2xx={len(bad)}, conn_errors={len(conn_errors)}, "
          f"rss_start_MiB={rss_start / MIB:.0f}, rss_warm_MiB={rss_warm / MIB:.0f}, "
          f"rss_end_MiB={samples[-1][1] / MIB:.0f}, rss_peak_MiB={mem['VmHWM'] / MIB:.0f}, "
          f"max_first_half_MiB={max(first, default=0) / MIB:.1f}, "
          f"max_second_half_MiB={max(second, default=0) / MIB:.1f}, growth_MiB={growth / MIB:.1f} "
          f"(allowed {allowed / MIB:.1f}), slope_MiB_per_min={_slope_mib_per_min(steady):.2f}, "
          f"samples={len(samples)}, jobs_completed={jobs_done}, jobs_deleted_while_processing={jobs_dropped}, "
          f"upscaled_downloads_checked={upscaled_ok}, jobs_failed={failed:.0f}, "
          f"queue_depth_end={queue_depth:.0f}", flush=True)

    assert not conn_errors, f"{len(conn_errors)} connection errors: {conn_errors[:5]}"
    assert not bad, f"{len(bad)} error responses: {bad[:5]}"
    assert counts.get("upload", 0) >= 10 * USERS, counts
    assert len(first) >= 3 and len(second) >= 3, f"too few RSS samples: {len(samples)}"
    assert growth <= allowed, \
        f"RSS still growing after warm-up: +{growth / MIB:.1f} MiB (allowed {allowed / MIB:.1f} MiB); " \
        f"samples (s, MiB): {[(round(t), round(v / MIB, 1)) for t, v in samples]}"
    assert failed == 0, metrics
    assert upscaled_ok >= 3, f"only {upscaled_ok} upscaled photos came back in {elapsed:.0f} s"
    assert not error_lines, error_lines[:10]
    assert rc == 0, f"exit code {rc} after SIGTERM"
    originals = {os.path.basename(p)[:-4] for p in storage if p.startswith("storage/originals/")}
    upscaled = {os.path.basename(p)[:-4] for p in storage if p.startswith("storage/upscaled/")}
    thumbnails = {os.path.basename(p)[:36] for p in storage if p.endswith(".thumbnail.jpg")}
    previews = {os.path.basename(p)[:36] for p in storage if p.endswith(".preview.jpg")}
    others = [p for p in storage if not re.fullmatch(
        r"storage/(originals|upscaled)/[0-9a-f-]{36}\.jpg|storage/previews/[0-9a-f-]{36}\.(thumbnail|preview)\.jpg", p)]
    assert originals == listed, (sorted(originals - listed)[:5], sorted(listed - originals)[:5])
    assert upscaled <= listed, sorted(upscaled - listed)[:5]
    assert thumbnails == listed, (sorted(thumbnails - listed)[:5], sorted(listed - thumbnails)[:5])
    # A job writes the preview, then the result.
    assert upscaled <= previews <= listed, (sorted(upscaled - previews)[:5], sorted(previews - listed)[:5])
    assert not others, others[:10]
